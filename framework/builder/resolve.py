"""Writing and checking a definition's lock: `cimages lock` and the build's first step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from framework.builder.apt import PrivateApt
from framework.builder.lockfile import Lock, LockedPackage, lock_path, read_lock, write_lock
from framework.errors import UserError


def requested_packages(cfg: dict) -> list[str]:
    return sorted(set(cfg["environment"]["systemPackages"]))


def lock_definition(definition: Path, request: list[str], *, update: bool = False) -> Lock:
    """Resolves `request` and writes the lock; keeps recorded layer digests of packages
    whose pin did not move. `update` refreshes apt's lists first."""
    path = lock_path(definition)
    old = read_lock(path)
    if request:
        apt = PrivateApt()
        apt.ensure_lists(refresh=update)
        packages = [LockedPackage.from_resolved(r) for r in apt.resolve(request)]
    else:
        packages = []
    if old is not None:
        layers = {p.name: p.layer for p in old.packages if p.layer}
        pins = {p.name: p.pin for p in old.packages}
        packages = [replace(p, layer=layers.get(p.name)) if pins.get(p.name) == p.pin else p
                    for p in packages]
    lock = Lock(request, packages)
    write_lock(path, lock, definition)
    return lock


def lock_for_build(definition: Path, request: list[str], *, frozen: bool) -> Lock:
    path = lock_path(definition)
    lock = read_lock(path)
    if lock is None and not request:
        return Lock([], [])  # nothing to pin: an image without packages needs no lock file
    if lock is None:
        if frozen:
            raise UserError(f"{path} does not exist and --frozen never resolves packages; "
                            f"run `cimages lock {definition}` and commit the lock file")
        return lock_definition(definition, request)
    if lock.request != request:
        added = sorted(set(request) - set(lock.request))
        removed = sorted(set(lock.request) - set(request))
        change = "; ".join(part for part in (
            f"added {', '.join(added)}" if added else "",
            f"removed {', '.join(removed)}" if removed else "") if part)
        raise UserError(
            f"{path} no longer matches {definition}'s packages ({change}); run "
            f"`cimages lock {definition}` to update the lock, then build again"
        )
    return lock
