"""Whole-or-nothing writes: readers (and concurrent writers, such as pytest -n workers
sharing a cache or an output folder) see the old file or the new one, never a part.

Every write goes to a temporary file beside its destination (same file system) and is
renamed over it once complete; one that fails or is interrupted leaves the destination as it
was and removes its temporary file.
"""

from __future__ import annotations

import contextlib
import ctypes
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


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    kernel or file system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def replace_directory(new: Path, target: Path) -> None:
    """Puts the complete folder `new` in the place of `target` (a sibling). The two are
    exchanged in one step, so at no moment is there no `target`: a reader opening a file in
    it (a test serving the archive to a VM while another worker rebuilds it) sees the old
    folder or the new one, never neither. Without renameat2 the old one is moved aside
    first, so `target` is at least never a half-deleted folder."""
    if not target.exists():
        new.rename(target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now names the old folder
        return
    old = temporary_sibling(target)
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
