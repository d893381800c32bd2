"""`<definition>.lock`: every package of an image pinned by version and archive hash.

YAML, sorted by package name, one mapping per package, so a diff of two locks reads as
"which package moved to which version". `layer` is the digest the builder produced for
the package's own layer, so a later build can check that it reproduced it; `compressor`
names what gzipped those layers (another version gives other digests). `from` (only
when `image.from` is a registry reference) pins the base image: the reference as written,
the digest of the manifest for linux/amd64, and the index's digest when the reference
named an index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from framework.atomic import write_atomic
from framework.builder.sources import DebianSources
from framework.digests import hex_of, is_hex
from framework.errors import UserError

# libyaml when present: a lock of 50 packages loads in 5 ms instead of 140 ms.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

HEADER = (
    "# Pinned Debian packages of {definition}, written by `cimages lock`.\n"
    "# `cimages lock --update {definition}` re-resolves against the archive.\n"
)


# A package's fields under the keys the lock spells them with, in the lock's order.
LOCK_KEYS = {"name": "name", "version": "version", "architecture": "architecture",
             "sha256": "sha256", "size": "size", "installed_size": "installedSize",
             "url": "url", "depends": "depends", "layer": "layer"}


@dataclass(frozen=True)
class LockedPackage:
    """A Debian package pinned by version and archive hash: what apt resolves, the lock
    records, the download fetches and the unpacking turns into a layer."""

    name: str
    version: str
    architecture: str
    sha256: str
    size: int
    installed_size: int  # KiB, as in the archive's Packages file
    url: str
    depends: tuple[str, ...] = ()  # names of direct dependencies inside the closure
    layer: str | None = None  # digest of the package's own layer, once built

    @property
    def pin(self) -> tuple[str, str, str, str]:
        return (self.name, self.version, self.architecture, self.sha256)

    def to_lock(self) -> dict[str, Any]:
        entry = {key: getattr(self, field) for field, key in LOCK_KEYS.items()}
        entry["depends"] = list(self.depends)
        if self.layer is None:
            del entry["layer"]
        return entry

    @classmethod
    def from_lock(cls, entry: dict[str, Any]) -> LockedPackage:
        """One entry of a lock's `packages`; TypeError names a missing or unknown key."""
        unknown = sorted(set(entry) - set(LOCK_KEYS.values()))
        if unknown:
            raise TypeError(f"unknown key {unknown[0]!r} in package {entry.get('name')!r}")
        values = {field: entry[key] for field, key in LOCK_KEYS.items() if key in entry}
        if "depends" in values:
            values["depends"] = tuple(values["depends"])
        return cls(**values)


BASE_KEYS = ("reference", "digest", "index", "platform")


@dataclass(frozen=True)
class BaseLock:
    """`image.from` from a registry, pinned: what the reference named when it was locked."""

    reference: str  # as the definition writes it, without docker://
    digest: str  # the image manifest's, for the platform
    index: str | None = None  # the index's (manifest list's), when the reference named one
    platform: str | None = None  # "linux/amd64", when chosen from an index

    def to_lock(self) -> dict[str, Any]:
        return {key: value for key in BASE_KEYS if (value := getattr(self, key)) is not None}

    @classmethod
    def from_lock(cls, entry: Any, path: Path) -> BaseLock:
        where = f"{path}: from"
        if not isinstance(entry, dict) or not isinstance(entry.get("reference"), str):
            raise UserError(f"{where} is not a mapping with `reference` and `digest`; run "
                            "`cimages lock --update` to pin the base image again")
        unknown = sorted(set(entry) - set(BASE_KEYS))
        if unknown:
            raise TypeError(f"unknown key {unknown[0]!r} in from")
        base = cls(**entry)
        hex_of(base.digest, f"{where}: digest")
        if base.index is not None:
            hex_of(base.index, f"{where}: index")
        return base


@dataclass(frozen=True)
class Lock:
    request: list[str]  # the package names the definition asked for, sorted
    packages: list[LockedPackage]
    sources: DebianSources  # where they were resolved: the definition's debian.*
    base: BaseLock | None = None  # image.from, when it is a registry reference
    # What gzipped the recorded layers (compressor.COMPRESSOR): their digests hold for it.
    compressor: str | None = None

    def with_layers(self, layers: dict[str, str], compressor: str) -> Lock:
        """`layers` recorded, made by `compressor`; a digest of another compressor that
        this build did not replace is dropped, as it would be put under the wrong name."""
        kept = compressor == self.compressor
        return replace(self, compressor=compressor, packages=[
            replace(p, layer=layers.get(p.name, p.layer if kept else None))
            for p in self.packages])


def lock_path(definition: Path) -> Path:
    if definition.suffix == ".lock":
        raise UserError(f"{definition} is a lock file, not a definition; give the definition "
                        f"it pins ({definition.with_suffix('.yaml')})")
    return definition.with_suffix(".lock")


def read_lock(path: Path) -> Lock | None:
    if not path.is_file():
        return None
    try:
        data = yaml.load(path.read_text(), Loader=_LOADER)
        packages = [_checked(LockedPackage.from_lock(p), path)
                    for p in data.get("packages") or []]
        base = BaseLock.from_lock(data["from"], path) if "from" in data else None
        compressor = data.get("compressor")
        if compressor is not None and not isinstance(compressor, str):
            raise TypeError(f"compressor is {compressor!r}, not a string")
        return Lock(sorted(data.get("request") or []), sorted(packages, key=lambda p: p.name),
                    DebianSources.from_lock(data.get("debian")), base, compressor)
    except (yaml.YAMLError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a valid lock file ({err}); delete it and run "
                        f"`cimages lock {path.with_suffix('.yaml')}`") from err


def _checked(package: LockedPackage, path: Path) -> LockedPackage:
    """A lock is input: its hash names a cache file and its URL is fetched."""
    where = f"{path}: package {package.name!r}"
    if not is_hex(package.sha256):
        raise UserError(f"{where}: sha256 {str(package.sha256)[:80]!r} is not 64 hex digits; "
                        f"restore the lock from version control or run `cimages lock --update`")
    if package.layer is not None:
        hex_of(package.layer, f"{where}: layer")
    if not re.fullmatch(r"https?://[^\s]+", str(package.url)):
        raise UserError(f"{where}: url {str(package.url)[:80]!r} is not an http(s) URL; "
                        "restore the lock from version control or run `cimages lock --update`")
    return package


def write_lock(path: Path, lock: Lock, definition: Path) -> None:
    packages = [p.to_lock() for p in sorted(lock.packages, key=lambda p: p.name)]
    content: dict[str, Any] = {"debian": lock.sources.as_lock()}
    if lock.base is not None:
        content["from"] = lock.base.to_lock()
    content["request"] = sorted(lock.request)
    if lock.compressor is not None and any(p.layer for p in lock.packages):
        content["compressor"] = lock.compressor
    content["packages"] = packages
    text = HEADER.format(definition=definition.name) + yaml.dump(
        content,
        Dumper=_DUMPER, sort_keys=False, default_flow_style=None, width=100,
    )
    if path.is_file() and path.read_text() == text:
        return
    write_atomic(path, text)
