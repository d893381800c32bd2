"""The output folder (`-o DIR`): written whole into a sibling, then swapped in.

A build never writes into a folder it did not create, never deletes what it did not write,
and never leaves half an output where a good one was: everything goes into
`.DIR.new-PID` beside DIR, which replaces DIR only once complete. A marker file lists what
the build wrote, so a later build knows the folder is its own; a lock beside the folder
keeps two builds into it apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from framework.atomic import replace_directory
from framework.errors import UserError

MARKER = ".cimages-output"


@dataclass(frozen=True)
class Stage:
    path: Path  # where this build writes
    final: Path  # what it becomes
    previous: Path | None  # the last build's output in `final`, to reuse unchanged files

    def final_path(self, staged: Path) -> Path:
        return self.final / staged.relative_to(self.path)


def _written_by_us(folder: Path) -> list[str] | None:
    """The entries a cimages build wrote in `folder`, or None when it is not an output."""
    try:
        entries = json.loads((folder / MARKER).read_text())["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        return _legacy_output(folder)
    return entries if isinstance(entries, list) else None


def _legacy_output(folder: Path) -> list[str] | None:
    """An output of a cimages from before the marker: exactly the files it wrote then."""
    names = [p.name for p in folder.iterdir()]
    known = {"oci", "from", "sbom.spdx.json", "maintainer-scripts.json"}
    if (folder / "oci" / "index.json").is_file() and all(
            n in known or n.endswith(".tar") or (n.startswith(".") and n.endswith(".tar.digest"))
            for n in names):
        return names
    return None


def _check_target(out_dir: Path) -> Path | None:
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UserError(f"-o {out_dir}: exists and is not a folder; name a folder (new, empty "
                        "or an earlier cimages output)")
    if not out_dir.is_dir():
        return None
    present = sorted(p.name for p in out_dir.iterdir())
    if not present:
        return None
    ours = _written_by_us(out_dir)
    if ours is None:
        raise UserError(f"-o {out_dir}: the folder is not empty and is not a cimages output "
                        f"(no {MARKER}); choose a new or empty folder, so nothing of yours is "
                        "overwritten or deleted")
    foreign = sorted(set(present) - set(ours) - {MARKER})
    if foreign:
        raise UserError(f"-o {out_dir}: holds files cimages did not write ({', '.join(foreign)}); "
                        "move them out or choose another folder")
    return out_dir


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    lock = out_dir.parent / f".{out_dir.name}.lock"
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"cimages: waiting for another build into {out_dir}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def staged_output(out_dir: Path) -> Iterator[Stage]:
    out_dir = out_dir.absolute()
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"-o {out_dir}: cannot create its parent folder ({err.strerror}); "
                        "name a folder you can write") from err
    with _locked(out_dir):
        previous = _check_target(out_dir)
        # Left by a build that was killed: no other build can be writing them (the lock).
        for stale in out_dir.parent.glob(f".{out_dir.name}.new-*"):
            shutil.rmtree(stale, ignore_errors=True)
        stage = Stage(out_dir.parent / f".{out_dir.name}.new-{os.getpid()}", out_dir, previous)
        stage.path.mkdir()
        try:
            yield stage
            entries = sorted(p.name for p in stage.path.iterdir())
            (stage.path / MARKER).write_text(json.dumps({"entries": entries}) + "\n")
            replace_directory(stage.path, out_dir)
        finally:
            shutil.rmtree(stage.path, ignore_errors=True)
