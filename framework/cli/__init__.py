"""`cimages`: the command line. Each subcommand lives in its own module here."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from framework.errors import UserError

# Imported inside main(): their imports (yaml, the builder) take long enough that a Ctrl-C
# during them must end as an interrupt, not a traceback.
COMMANDS = ["evaluate", "options", "matrix", "ci_cell", "report", "build", "lock", "init", "vm"]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="cimages",
        description="Declarative container images: build, run in a sandbox, test in a VM.",
    )
    top.add_argument("--version", action="version", version=f"cimages {_version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        importlib.import_module(f"framework.cli.{command}").register(sub)
    return top


def _version() -> str:
    try:
        return version("cimages")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        code = int(args.run(args) or 0)
        sys.stdout.flush()
        return code
    except UserError as err:
        print(f"cimages: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("cimages: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `cimages ... | head`: the reader is gone, which is not an error of ours. Python
        # would complain once more while flushing stdout at exit; point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
