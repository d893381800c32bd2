"""Whole-or-nothing writes: readers (and concurrent writers, such as pytest -n workers
sharing a cache or an output folder) see the old file or the new one, never a part.

Every write goes to a temporary file beside its destination (same file system) and is
renamed over it once complete; one that fails or is interrupted leaves the destination as it
was and removes its temporary file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MODE = 0o644  # what a finished file gets (mkstemp's files are 0600)


class Pending:
    """A temporary file in the destination's folder, open for writing, renamed by `commit`."""

    def __init__(self, directory: Path, prefix: str) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
        self.path = Path(name)
        self.handle: BinaryIO = os.fdopen(fd, "wb")
        self.committed = False

    def commit(self, target: Path, *, keep_existing: bool = False) -> None:
        """Puts the content at `target`; with `keep_existing`, a file already there stays
        (content-addressed files: the same name holds the same bytes)."""
        self.handle.close()
        if not (keep_existing and target.is_file()):
            os.chmod(self.path, MODE)
            os.replace(self.path, target)
        self.committed = True

    def discard(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def pending(directory: Path, prefix: str = ".tmp-") -> Iterator[Pending]:
    """A temporary file in `directory` the block writes and commits; removed otherwise."""
    file = Pending(directory, prefix)
    try:
        yield file
    finally:
        if not file.committed:
            file.discard()


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A file to stream into that replaces `path` when the block ends without an error."""
    with pending(path.parent, f".{path.name}.") as file:
        yield file.handle
        file.commit(path)


def write_atomic(path: Path, data: bytes | str) -> None:
    with replacing(path) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def temporary_sibling(path: Path) -> Path:
    """A name beside `path` that no other process uses, for tools that write the file."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def replace_directory(new: Path, target: Path) -> None:
    """Puts the complete folder `new` in the place of `target` (a sibling); the old one is
    moved aside first, so `target` is never a half-deleted folder."""
    if not target.exists():
        new.rename(target)
        return
    old = temporary_sibling(target)
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
