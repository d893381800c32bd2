"""`cimages vm FILE [--run CMD]`: a VM with Docker and the image loaded; a shell, or one command."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from framework.errors import UserError
from framework.vm.machine import DEFAULT_MEMORY_MIB


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("vm", help="start a VM running Docker with the image loaded")
    cmd.add_argument("file", help="image definition (YAML)")
    cmd.add_argument("--run", metavar="CMD", dest="command_line",
                     help="run this shell command in the VM instead of an interactive shell "
                          "(exit code is the command's)")
    cmd.add_argument("--accel", choices=["kvm", "tcg"],
                     help="QEMU accelerator (default: KVM if a probe shows it works, else TCG)")
    cmd.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MIB, metavar="MIB",
                     help=f"guest memory in MiB (default {DEFAULT_MEMORY_MIB})")
    cmd.set_defaults(run=run)


def _say(message: str) -> None:
    print(f"cimages: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from framework.builder import build
    from framework.target import TargetError
    from framework.vm.snapshot import VMFactory

    started = time.monotonic()
    image = build(Path(args.file))
    factory = VMFactory.prepare(args.accel, args.memory)
    with tempfile.TemporaryDirectory(prefix="cimages-vm-") as tmp:
        machine = factory.machine(Path(tmp), name="cimages-vm")
        try:
            try:
                machine.start()
                ref = machine.load_image(image)
            except UserError:
                raise
            except TargetError as err:  # a failed load, or a VM that broke or died
                raise UserError(f"the VM could not start or load {image.name}:{image.tag}: "
                                f"{err}; if it ran out of memory, give it more with --memory"
                                ) from err
            _say(f"VM ready with {ref} loaded in {time.monotonic() - started:.1f} s "
                 f"({factory.accel})")
            try:
                if args.command_line is not None:
                    status, output = machine.execute(args.command_line, timeout=3600)
                    sys.stdout.write(output)
                    return status
                return machine.interact(f"cimages: {ref} is loaded: docker run -it {ref}")
            except TargetError as err:  # the command ran over, or the VM broke or died
                raise UserError(f"the VM failed: {err}") from err
        finally:
            machine.crash()
