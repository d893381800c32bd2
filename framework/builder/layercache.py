"""Layers keyed by their content's inputs, so a rebuild reuses blobs without rewriting them.

A package layer's key is the .deb's sha256, the mtime, the ids of the owner names the .deb
uses, BUILDER_VERSION and the compressor with its version; the names a .deb uses are learnt
the first time it is unpacked (`info/<sha256>.json`, with its file list and control files),
so a warm build decides every hit without opening a .deb.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from framework.atomic import write_atomic
from framework.builder.compressor import COMPRESSOR
from framework.builder.layer import LayerBlob
from framework.builder.unpack import DebInfo
from framework.cache import cache_dir
from framework.digests import is_digest

# Bump when the bytes of a layer for the same inputs change (tar or path rules); another
# compressor changes every key by itself.
BUILDER_VERSION = 3


def key_of(value: Any) -> str:
    data = json.dumps([BUILDER_VERSION, COMPRESSOR, value], sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def blob_dir() -> Path:
    return cache_dir("blobs")


def _atomic_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, sort_keys=True))


def lookup(key: str) -> LayerBlob | None:
    record = cache_dir("layers") / f"{key}.json"
    if not record.is_file():
        return None
    data = json.loads(record.read_text())
    # A record whose digest is not one (a damaged cache) is a miss, never a path.
    if not is_digest(data.get("digest")):
        return None
    path = blob_dir() / data["digest"].split(":", 1)[1]
    if not path.is_file() or path.stat().st_size != data["size"]:
        return None
    return LayerBlob(data["digest"], data["diff_id"], data["size"], path)


def store(key: str, blob: LayerBlob) -> None:
    value = {k: v for k, v in asdict(blob).items() if k != "path"}
    _atomic_json(cache_dir("layers") / f"{key}.json", value)


def _info_path(sha256: str) -> Path:
    return cache_dir("info") / f"{sha256}.v{BUILDER_VERSION}.json"


def deb_info(sha256: str) -> DebInfo | None:
    """What unpacking the .deb found, if it was unpacked before."""
    path = _info_path(sha256)
    if not path.is_file():
        return None
    try:
        return DebInfo.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a damaged record: the .deb is unpacked again, which rewrites it


def store_deb_info(sha256: str, info: DebInfo) -> None:
    _atomic_json(_info_path(sha256), info.to_json())
