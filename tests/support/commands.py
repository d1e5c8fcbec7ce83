"""`forwarder` commands run in-process, as `cli.main` runs them, with their output captured."""

from __future__ import annotations

import asyncio

import pytest

from forwarder import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run one `forwarder` command in-process; return its exit code, stdout and stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def arun(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """run() from an async test: the command starts its own event loop, so in a thread."""
    return await asyncio.to_thread(run, capsys, *argv)
