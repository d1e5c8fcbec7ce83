"""The service manager's end of systemd's notify socket, for the tests of the notify protocol."""

from __future__ import annotations

import socket
import struct

from .waiting import wait_until


class NotifyListener:
    """The service manager's end of NOTIFY_SOCKET: collects datagrams with their sender's pid."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[int, list[str]]] = []

    def drain(self) -> None:
        """Read every datagram waiting in the socket."""
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            self.messages.append((pid, data.decode().split("\n")))

    def index(self, line: str, after: int = -1) -> int:
        """The index of the first datagram after *after* that carries *line*, or -1."""
        self.drain()
        for i, (_, lines) in enumerate(self.messages):
            if i > after and line in lines:
                return i
        return -1

    async def expect(self, line: str, after: int = -1, timeout: float = 30.0) -> int:
        """Wait (bounded) for a datagram carrying *line* after index *after*; return its index."""
        await wait_until(lambda: self.index(line, after) >= 0, timeout, line)
        return self.index(line, after)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
