"""Where every part keeps its caches (builder, sandbox roots, VM, report tools):
`$CIMAGES_CACHE`, else ~/.cache/cimages."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    # An override lets tests prove that two builds with different caches agree.
    override = os.environ.get("CIMAGES_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "cimages"


def cache_dir(name: str) -> Path:
    path = cache_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on `path`'s .lock file: concurrent workers (pytest -n) that
    would make the same cached artefact wait for the first one instead."""
    with path.with_name(f"{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def using(root: Path) -> Iterator[Path]:
    """Every cache under `root` while the context lasts (a rebuild that must not reuse)."""
    before = os.environ.get("CIMAGES_CACHE")
    os.environ["CIMAGES_CACHE"] = str(root)
    try:
        yield root
    finally:
        if before is None:
            del os.environ["CIMAGES_CACHE"]
        else:
            os.environ["CIMAGES_CACHE"] = before


def fresh_root(directory: Path, debs: Path) -> Path:
    """An empty cache root that shares only the .debs (verified by hash when unpacked)."""
    directory.mkdir(parents=True)
    (directory / "debs").symlink_to(debs)
    return directory
