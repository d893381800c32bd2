"""`cimages init FILE STATE_DIR`: build the image and run its s6 init in the foreground,
in the sandbox (host network, so its services are reachable). Ctrl-C stops it cleanly:
SIGINT goes to the init, which stops the services and exits 130."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("init", help="run an image's s6 init in the sandbox (foreground)")
    cmd.add_argument("file", help="image definition (YAML)")
    cmd.add_argument("state_dir", help="directory for the sandbox's state and files "
                     "(reused: a second run is a restarted container)")
    cmd.add_argument("--private-network", action="store_true",
                     help="only loopback, not the host's network")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from framework.builder import build
    from framework.sandbox.image import start_image
    from framework.sandbox.runner import check_workdir
    from framework.target import WaitTimeout

    state = Path(args.state_dir).resolve()
    check_workdir(state)  # before the build: a refused folder costs nothing
    result = build(args.file)
    box = start_image(result, network="private" if args.private_network else "host",
                      capture=False, workdir=state)
    try:
        return box.process.wait()
    except KeyboardInterrupt:
        # The terminal's SIGINT reached only us (the sandbox has its own session).
        box.signal(signal.SIGINT)
        try:
            return box.wait(timeout=12)
        except WaitTimeout as err:
            print(f"cimages: {err}", file=sys.stderr)
            return box.stop(timeout=1)
