"""Serves a stream written on demand to the VM over HTTP: QEMU's user networking lets the
guest reach the host's loopback as 10.0.2.2, several times faster than pushing bytes through
the agent's port (10 MB/s from host to guest)."""

from __future__ import annotations

import http.server
import io
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, cast

GUEST_HOST_ADDR = "10.0.2.2"
CHUNK = 1 << 20

# A writer of the body: it streams the bytes into the file it is given.
Body = Callable[[BinaryIO], None]


class _Chunked(io.RawIOBase):
    """HTTP/1.1 chunked encoding, in chunks of CHUNK bytes: the terminating chunk is written
    only once the body is whole, so a writer that fails halfway is a failed transfer for
    curl, not a short file."""

    def __init__(self, out: BinaryIO | io.BufferedIOBase) -> None:
        self.out, self.pending = out, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.pending += data
        if len(self.pending) >= CHUNK:
            self._send()
        return len(data)

    def _send(self) -> None:
        if self.pending:
            self.out.write(b"%x\r\n%s\r\n" % (len(self.pending), bytes(self.pending)))
            self.pending.clear()

    def finish(self) -> None:
        self._send()
        self.out.write(b"0\r\n\r\n")


@contextmanager
def served(body: Body) -> Iterator[str]:
    """The URL, as the guest sees it, of what `body` writes when it is fetched, while the
    context lasts."""
    token = secrets.token_urlsafe(16)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path != f"/{token}":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Connection", "close")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunked = _Chunked(self.wfile)
            body(cast(BinaryIO, chunked))
            chunked.finish()

        def log_message(self, *args: object) -> None:
            pass  # the VM's own command reports failures

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="vm-fileserver", daemon=True)
    thread.start()
    try:
        yield f"http://{GUEST_HOST_ADDR}:{server.server_address[1]}/{token}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
