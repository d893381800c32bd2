"""Host networking helpers shared by the demo and the VM tier."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now; whoever binds it a moment later may lose a
    race with another process, so callers retry on a bind failure."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
