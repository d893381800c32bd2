"""`make demo`: build images/nginx.yaml, run it in the sandbox tier and print the URL it
answered on.

The sandbox shares the host's network so the URL works from a browser; an unprivileged
sandbox cannot bind port 80 there, so the demo imports the image and moves nginx to a free
loopback port with `!force`, exactly as a user would override a module."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from framework.builder import build
from framework.errors import UserError, run_entry_point
from framework.net import free_port
from framework.sandbox.image import start_image

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "images" / "nginx.yaml"
ANSWER_TIMEOUT = 30.0


def fetch(url: str, deadline: float) -> str:
    last = "nothing yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError as err:
            last = str(err)
            time.sleep(0.1)
    raise UserError(f"nginx did not answer {url} within {ANSWER_TIMEOUT:.0f} s (last: {last})")


def main() -> int:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cimages-demo-") as tmp:
        definition = Path(tmp) / "nginx-demo.yaml"
        definition.write_text(
            f"imports: [{IMAGE}]\n"
            "services:\n  nginx:\n    virtualHosts:\n      localhost:\n"
            f"        listen: !force [{{addr: 127.0.0.1, port: {port}}}]\n"
        )
        # The same packages as images/nginx.yaml, so its lock pins this build too.
        shutil.copy(IMAGE.with_suffix(".lock"), definition.with_suffix(".lock"))
        result = build(definition, Path(tmp) / "out")
        print(f"built {result.name}:{result.tag} {result.digest}")
        box = start_image(result, network="host")
        try:
            url = f"http://127.0.0.1:{port}/plop"
            body = fetch(url, time.monotonic() + ANSWER_TIMEOUT)
            print(f"nginx answered {url} in the sandbox tier: {body.strip()!r}")
            print(f"stopped with exit code {box.stop()} (SIGTERM, as `docker stop`)")
        finally:
            box.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point("demo", main))
