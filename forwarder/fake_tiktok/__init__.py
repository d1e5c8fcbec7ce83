"""A fake TikTok Events API 2.0 over loopback HTTP, for tests, benchmarks, ``make try`` and
``make demo``; ``python -m forwarder.fake_tiktok`` runs it in its own process."""

from forwarder.fake_tiktok.script import Scripted
from forwarder.fake_tiktok.server import FakeTikTok, loopback_host

__all__ = ["FakeTikTok", "Scripted", "loopback_host"]
