"""Derived snapshots: a snapshot with one more image loaded, so the next test that loads the
same image on the same snapshot restores it instead (well under two seconds, where dockerd
needs many under TCG to unpack an image).

Each is saved with its load record: the snapshot it was derived from, the image's tags and
its layer groups' chain IDs (grouped.py). After an edit of a definition the image is new,
but the record of its last load tells which groups dockerd there already has: `nearest`
finds the derived snapshot of the same parent and tags sharing the most bytes, and only the
groups after the shared ones are loaded on top of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from framework.atomic import write_atomic
from framework.cache import hold
from framework.digests import is_digest
from framework.vm.cache import cache_dir
from framework.vm.grouped import RECIPE, GroupedImage

RECORD_SUFFIX = ".json"


@dataclass(frozen=True)
class LoadRecord:
    parent: str  # the stem of the snapshot the load was made on
    ref: str  # what the load reported: name:tag, or the image ID of an untagged image
    repo_tags: list[str]
    image_id: str
    chain_ids: list[str]
    sizes: list[int]  # bytes of each group


@dataclass(frozen=True)
class Nearest:
    snapshot: Path
    record: LoadRecord
    shared: int  # leading groups dockerd in that snapshot has


def derived_path(parent: Path, image_key: str) -> Path:
    """Where the snapshot of `parent` with the image `image_key` (its digest) loaded is."""
    key = hashlib.sha256(f"{parent.stem}|{image_key}|{RECIPE}".encode()).hexdigest()[:24]
    return cache_dir("snapshots") / f"{key}.state"


def record_of(snapshot: Path) -> LoadRecord | None:
    """The load record saved with `snapshot`; None for a snapshot without one (or a record
    that does not parse, or names something other than digests: the snapshot is then
    remade)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        record = LoadRecord(**json.loads(snapshot.with_suffix(RECORD_SUFFIX).read_text()))
        # The image ID goes into an Engine API path (the replaced image's removal).
        if snapshot.exists() and len(record.chain_ids) == len(record.sizes) \
                and all(map(is_digest, [record.image_id, *record.chain_ids])):
            return record
    return None


def save_record(snapshot: Path, parent: Path, ref: str, image: GroupedImage) -> None:
    record = LoadRecord(parent.stem, ref, image.repo_tags, image.image_id, image.chain_ids,
                        [g.size for g in image.groups])
    write_atomic(snapshot.with_suffix(RECORD_SUFFIX), json.dumps(asdict(record)))


def nearest(parent: Path, image: GroupedImage) -> Nearest | None:
    """The derived snapshot of `parent` holding an earlier load of the image's tags that
    shares the most bytes of leading groups with `image`, held for this process."""
    if not image.repo_tags:
        return None
    chain, sizes = image.chain_ids, [g.size for g in image.groups]
    best: tuple[int, float, Path, LoadRecord, int] | None = None
    for file in cache_dir("snapshots").glob(f"*{RECORD_SUFFIX}"):
        snapshot = file.with_suffix(".state")
        record = record_of(snapshot)
        if record is None or record.parent != parent.stem \
                or record.repo_tags != image.repo_tags:
            continue
        shared = _shared_prefix(record.chain_ids, chain)
        if shared == 0:
            continue
        with contextlib.suppress(OSError):
            score = (sum(sizes[:shared]), file.stat().st_mtime)
            if best is None or score > best[:2]:
                best = (*score, snapshot, record, shared)
    if best is None:
        return None
    snapshot, record, shared = best[2:]
    hold(snapshot)  # in use until this process ends: `cimages cache --gc` leaves it
    return Nearest(snapshot, record, shared) if snapshot.exists() else None


def _shared_prefix(a: list[str], b: list[str]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count
