"""Writing and checking a definition's lock: `cimages lock` and the build's first step."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from framework.builder.apt import PrivateApt
from framework.builder.lockfile import Lock, LockedPackage, lock_path, read_lock, write_lock
from framework.builder.sources import DebianSources
from framework.errors import UserError


@dataclass(frozen=True)
class Request:
    """What a definition asks the lock for: package names, and the archive to take them from."""

    packages: list[str]
    sources: DebianSources


def requested(cfg: dict[str, Any]) -> Request:
    return Request(sorted(set(cfg["environment"]["systemPackages"])),
                   DebianSources.from_config(cfg))


def lock_definition(definition: Path, request: Request, *, update: bool = False) -> Lock:
    """Resolves `request` and writes the lock; keeps recorded layer digests of packages
    whose pin did not move. `update` refreshes apt's lists first."""
    path = lock_path(definition)
    old = read_lock(path)
    packages: list[LockedPackage] = []
    if request.packages:
        apt = PrivateApt(request.sources)
        apt.ensure_lists(refresh=update)
        packages = apt.resolve(request.packages)
    if old is not None:
        layers = {p.name: p.layer for p in old.packages if p.layer}
        pins = {p.name: p.pin for p in old.packages}
        packages = [replace(p, layer=layers.get(p.name)) if pins.get(p.name) == p.pin else p
                    for p in packages]
    lock = Lock(request.packages, packages, request.sources, old.base if old else None,
                old.compressor if old else None)
    write_lock(path, lock, definition)
    return lock


def lock_for_build(definition: Path, request: Request, *, frozen: bool) -> Lock:
    path = lock_path(definition)
    lock = read_lock(path)
    if lock is None and not request.packages:
        # Nothing to pin: an image without packages needs no lock file.
        return Lock([], [], request.sources)
    if lock is None:
        if frozen:
            raise UserError(f"{path} does not exist and --frozen never resolves packages; "
                            f"run `cimages lock {definition}` and commit the lock file")
        return lock_definition(definition, request)
    if lock.sources != request.sources:
        if frozen:
            raise UserError(
                f"{path} pins packages of {lock.sources.describe()} but {definition} names "
                f"{request.sources.describe()}; run `cimages lock {definition}` to re-lock, "
                "then build again (--frozen never resolves)")
        print(f"cimages: {path} was resolved against {lock.sources.describe()}; {definition} "
              f"names {request.sources.describe()}: re-locking", file=sys.stderr)
        return lock_definition(definition, request)
    if lock.request != request.packages:
        added = sorted(set(request.packages) - set(lock.request))
        removed = sorted(set(lock.request) - set(request.packages))
        change = "; ".join(part for part in (
            f"added {', '.join(added)}" if added else "",
            f"removed {', '.join(removed)}" if removed else "") if part)
        raise UserError(
            f"{path} no longer matches {definition}'s packages ({change}); run "
            f"`cimages lock {definition}` to update the lock, then build again"
        )
    return lock
