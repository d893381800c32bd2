"""`cimages build --check FILE`: does the definition reproduce? Rebuilt from its lock with
no cached layer, every package layer must match the digest the lock records, and the
manifest, config and layers must match the last build's. A difference is named down to the
first tar entry that differs, with the field and both values."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from framework.builder.lockfile import lock_path, read_lock
from framework.builder.pipeline import BuildResult, build, compression_note
from framework.cache import cache_dir, fresh_root, using
from framework.digests import hex_of

FIELDS = ("name", "type", "mode", "uid", "gid", "size", "mtime", "linkname", "uname", "gname")


@dataclass(frozen=True)
class Report:
    rebuilt: BuildResult  # its files were in a temporary folder, gone now: digests only
    differences: list[str]
    compared: list[str]  # what was compared, for the summary


def _entries(blob: Path) -> Iterator[dict[str, Any]]:
    with blob.open("rb") as head:
        gzipped = head.read(2) == b"\x1f\x8b"
    with gzip.open(blob) if gzipped else blob.open("rb") as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            entry = {f: getattr(member, f) for f in FIELDS}
            if member.isfile():
                data = tar.extractfile(member)
                entry["content sha256"] = hashlib.sha256(data.read() if data else b"").hexdigest()
            yield entry


def first_difference(old: Path, new: Path, compressed_by: str | None) -> str:
    """The first tar entry where two layer blobs differ: its path, the field, both values;
    `compressed_by`: the compressor the lock names for the recorded layers."""
    for index, (a, b) in enumerate(zip_longest(_entries(old), _entries(new))):
        if a is None or b is None:
            extra = a or b
            assert extra is not None
            which = "the last build" if b is None else "the rebuild"
            return f"entry {index} ({extra['name']}) exists only in {which}"
        for field in (*FIELDS, "content sha256"):
            if a.get(field) != b.get(field):
                return (f"entry {index} ({a['name']}): {field} was {a.get(field)!r}, "
                        f"rebuilt {b.get(field)!r}")
    return ("the tar entries are the same; the compression differs: " + compression_note(
        compressed_by, "the recorded blob was changed after it was written"))


def _last_build(out_dir: Path) -> dict[str, Any] | None:
    """The manifest and config of the output in `out_dir`, if there is one."""
    oci = out_dir / "oci"
    try:
        index = json.loads((oci / "index.json").read_text())
        blobs = oci / "blobs" / "sha256"
        manifest_digest = index["manifests"][0]["digest"]
        manifest = json.loads((blobs / hex_of(manifest_digest, str(oci))).read_text())
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return {"digest": manifest_digest, "manifest": manifest, "blobs": blobs}


def check(definition: Path, out_dir: Path) -> Report:
    lock = read_lock(lock_path(definition))
    last = _last_build(out_dir)
    known_blobs = cache_dir("blobs")
    with tempfile.TemporaryDirectory(prefix="cimages-check-") as tmp, \
            using(fresh_root(Path(tmp) / "cache", cache_dir("debs"))):
        rebuilt = build(definition, Path(tmp) / "out", frozen=True)
        differences: list[str] = []
        compared: list[str] = []
        recorded = {p.name: p.layer for p in lock.packages if p.layer} if lock else {}
        compressed_by = lock.compressor if lock else None
        if recorded:
            compared.append(f"{len(recorded)} package layers against {lock_path(definition)}")
        for name, digest in sorted(recorded.items()):
            new = rebuilt.package_layers.get(name)
            if new is not None and new != digest:
                old_blob = known_blobs / hex_of(digest, str(lock_path(definition)))
                new_blob = Path(tmp) / "cache" / "blobs" / hex_of(new, "the rebuild")
                detail = (first_difference(old_blob, new_blob, compressed_by)
                          if old_blob.is_file()
                          else "the recorded layer is not in the cache to compare")
                differences.append(f"package {name}: the lock records {digest}, the rebuild "
                                   f"gives {new}: {detail}")
        if last is not None:
            compared.append(f"manifest, config and layers against {out_dir}")
            differences += _against_last(last, rebuilt, compressed_by)
        return Report(rebuilt, differences, compared)


def _against_last(last: dict[str, Any], rebuilt: BuildResult, compressed_by: str | None
                  ) -> list[str]:
    if last["digest"] == rebuilt.digest:
        return []
    manifest = json.loads((rebuilt.oci_dir / "blobs" / "sha256" /
                           hex_of(rebuilt.digest, "the rebuild")).read_text())
    found = [f"manifest: the last build is {last['digest']}, the rebuild {rebuilt.digest}"]
    old_config, new_config = last["manifest"]["config"]["digest"], manifest["config"]["digest"]
    if old_config != new_config:
        found.append(f"config: the last build's is {old_config}, the rebuild's {new_config}")
    old_layers, new_layers = last["manifest"]["layers"], manifest["layers"]
    if len(old_layers) != len(new_layers):
        found.append(f"layers: the last build has {len(old_layers)}, the rebuild "
                     f"{len(new_layers)}")
    for index, (old, new) in enumerate(zip(old_layers, new_layers, strict=False)):
        if old["digest"] != new["digest"]:
            old_blob = last["blobs"] / hex_of(old["digest"], "the last build")
            new_blob = rebuilt.oci_dir / "blobs" / "sha256" / hex_of(new["digest"], "rebuild")
            found.append(f"layer {index}: {old['digest']} -> {new['digest']}: "
                         f"{first_difference(old_blob, new_blob, compressed_by)}")
    return found
