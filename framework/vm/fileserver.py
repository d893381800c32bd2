"""Serves one host file to the VM over HTTP: QEMU's user networking lets the guest reach the
host's loopback as 10.0.2.2, several times faster than pushing bytes through SSH."""

from __future__ import annotations

import http.server
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GUEST_HOST_ADDR = "10.0.2.2"


@contextmanager
def served(path: Path) -> Iterator[str]:
    """The URL, as the guest sees it, of `path` while the context lasts."""
    token = secrets.token_urlsafe(16)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != f"/{token}":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as data:
                shutil.copyfileobj(data, self.wfile, 1 << 20)

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
