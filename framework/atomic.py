"""Whole-or-nothing file writes: readers (and concurrent writers, such as pytest -n workers
sharing a cache or an output folder) see the old file or the new one, never a part."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_sibling(path: Path) -> Path:
    """A name beside `path` that no other process uses, for tools that write the file."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")
