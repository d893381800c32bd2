"""Headless Chromium (Debian's) looking at a local report: the rendered DOM or a screenshot."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from framework.errors import UserError

# Without these, Chromium keeps dialling Google's services, which this network refuses.
QUIET_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Enough virtual time for the report's scripts to fetch their data and render the tree.
RENDER_BUDGET_MS = 10_000


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serves a directory on a free loopback port (the report fetches its data over HTTP)."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        raise UserError("chromium is missing: run `make setup` (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, *QUIET_FLAGS, f"--user-data-dir={profile}",
             f"--virtual-time-budget={RENDER_BUDGET_MS}", *args],
            capture_output=True, text=True, timeout=120,
        )


def rendered_dom(url: str) -> str:
    return _chromium("--dump-dom", url).stdout


def screenshot(url: str, out: Path, size: str = "1280,800") -> Path:
    _chromium(f"--window-size={size}", f"--screenshot={out}", url)
    if not out.exists():
        raise UserError(f"chromium wrote no screenshot of {url}")
    return out
