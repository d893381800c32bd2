"""`cimages`: the command line. Each subcommand lives in its own module here."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from framework.errors import run_entry_point

# Imported inside main(): their imports (yaml, the builder) take long enough that a Ctrl-C
# during them must end as an interrupt, not a traceback.
COMMANDS = ["evaluate", "options", "matrix", "ci_cell", "report", "build", "lock", "init", "vm",
            "push", "copy", "cache"]


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
    # Parsing imports the subcommands: inside, so a Ctrl-C then is an interrupt too.
    return run_entry_point("cimages", lambda: _run(parser().parse_args(argv)))


def _run(args: argparse.Namespace) -> int:
    return int(args.run(args) or 0)
