"""`python -m framework.s6.shellcheck [DEFINITION_OR_FOLDER...]`: the shell files the s6
scripts are made from (framework/s6/sh/*.sh, each a complete script or fragment), every script
the s6 module generates from them for these definitions, and the VM's init.sh, checked by
shellcheck (Debian's `shellcheck`), as `make lint` does. The scripts run under busybox sh,
which shellcheck knows as dash's dialect. Exit 0 when clean, 1 with shellcheck's findings, 2
on bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from framework.errors import UserError, run_entry_point

VM_INIT = Path(__file__).resolve().parents[1] / "vm" / "init.sh"
SOURCES = Path(__file__).resolve().parent / "sh"
TIMEOUT = 300


def definitions(paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        found += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return found


def generated_scripts(definition: Path, into: Path) -> list[Path]:
    from framework.options import evaluate
    from framework.s6.files import image_files

    written = []
    for file in image_files(evaluate(definition).config):
        if file.kind == "file" and file.content.startswith(b"#!"):
            target = into / definition.stem / file.path.strip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.content)
            written.append(target)
    return written


def check(paths: Sequence[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("shellcheck") is None:
        raise UserError("shellcheck is not installed; run `make setup` (apt-get install "
                        "shellcheck)")
    with tempfile.TemporaryDirectory(prefix="cimages-shellcheck-") as tmp:
        scripts = [s for d in definitions(paths) for s in generated_scripts(d, Path(tmp))]
        return subprocess.run(
            ["shellcheck", "--shell=dash", "--severity=warning", str(VM_INIT),
             *map(str, sorted(SOURCES.glob("*.sh"))), *map(str, scripts)],
            capture_output=True, text=True, timeout=TIMEOUT)


def main(argv: Sequence[str]) -> int:
    done = check(argv or ["images"])
    sys.stdout.write(done.stdout.replace(tempfile.gettempdir(), "<generated>"))
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(run_entry_point("shellcheck", lambda: main(sys.argv[1:])))
