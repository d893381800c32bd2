"""Which repositories of a registry hold which blobs, as far as this machine's pushes saw
(containers/image keeps the same record, its blob info cache): a blob missing from the target
repository but known in another one of the same registry is mounted, not uploaded. A stale
entry costs nothing: the registry then opens an ordinary upload, which the push uses."""

from __future__ import annotations

import json
from pathlib import Path

from framework.atomic import write_atomic
from framework.cache import cache_dir, exclusive

PER_BLOB = 4  # repositories remembered per blob (the latest)
PER_REGISTRY = 20000  # blobs remembered per registry (the latest)
REGISTRIES = 50  # registries remembered (the latest pushed to: tests start many)


def _path() -> Path:
    return cache_dir("publish") / "blob-locations.json"


def _load(path: Path) -> dict[str, dict[str, list[str]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a cache: gone or damaged is empty
    return data if isinstance(data, dict) else {}


def known(registry: str) -> dict[str, list[str]]:
    """digest -> repositories of `registry` that held it at the last push seen."""
    entries = _load(_path()).get(registry, {})
    return {d: [r for r in repos if isinstance(r, str)] for d, repos in entries.items()
            if isinstance(repos, list)} if isinstance(entries, dict) else {}


def record(registry: str, repository: str, digests: list[str]) -> None:
    path = _path()
    with exclusive(path):
        data = _load(path)
        entries = data.pop(registry, {})
        if not isinstance(entries, dict):
            entries = {}
        data[registry] = entries  # now the latest
        for old in list(data)[:-REGISTRIES]:
            del data[old]
        for digest in digests:
            repos = [r for r in entries.pop(digest, []) if r != repository]
            entries[digest] = [*repos, repository][-PER_BLOB:]
        for digest in list(entries)[:-PER_REGISTRY]:
            del entries[digest]
        write_atomic(path, json.dumps(data, separators=(",", ":")))
