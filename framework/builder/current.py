"""Builds of the framework's own images (the VM's Docker host, the initramfs tools) that
outlive their locks.

Their locks ship with the package, and Debian's mirrors keep only the current version of
each package of a release: a security or point update removes the pinned one, and where the
snapshot service cannot be reached either, a strict build would fail on every fresh machine
until a new cimages is released. These builds then resolve the definition again within its
release, into a lock in the cache beside a definition importing the shipped one, say so, and
build that. A user's images keep their strict locks (`cimages build` fails and says how to
re-lock).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from framework.atomic import write_atomic
from framework.builder.download import PackageGone
from framework.builder.lockfile import lock_path, read_lock
from framework.builder.pipeline import BuildResult, build
from framework.builder.resolve import lock_definition, requested
from framework.options import evaluate


def build_current(definition: Path, out_dir: Path, relocked_dir: Path, *,
                  archive: bool = True) -> BuildResult:
    """build(definition, out_dir), or, when a pinned .deb is gone, the build of the same
    definition resolved again (its lock kept in `relocked_dir` for later sessions)."""
    current = relocked_dir / definition.name
    if not (current.is_file() and read_lock(lock_path(current)) is not None):
        try:
            return build(definition, out_dir, archive=archive)
        except PackageGone as gone:
            _relock(definition, current, gone)
    try:
        return build(current, out_dir, archive=archive)
    except PackageGone as gone:  # moved on again since the last re-resolution
        _relock(definition, current, gone)
        return build(current, out_dir, archive=archive)


def _relock(definition: Path, current: Path, gone: PackageGone) -> None:
    """Resolves `definition` again into `current`'s lock, with fresh apt lists: the cached
    ones still name the version that is gone."""
    current.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(current, yaml.safe_dump({"imports": [str(definition.resolve())]}))
    request = requested(evaluate(current).config)
    print(f"cimages: {gone.package.name} {gone.package.version}, pinned by {definition.name}, "
          f"is gone from the Debian archive: resolving its packages again within "
          f"{request.sources.release} (a newer cimages pins them; the image changes)",
          file=sys.stderr)
    lock_definition(current, request, update=True)
