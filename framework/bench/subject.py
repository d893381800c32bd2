"""What the builder and publish benchmarks measure: images/nginx.yaml (its lock kept current)
and its one-file edits, the rebuild a user makes most."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from framework.builder.lockfile import Lock, lock_path, read_lock
from framework.builder.resolve import lock_definition, requested
from framework.options import evaluate

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = ROOT / "images" / "nginx.yaml"


def current_lock() -> Lock:
    """nginx's lock, pinned again first when the definition moved on."""
    request = requested(evaluate(DEFINITION).config)
    lock = read_lock(lock_path(DEFINITION))
    if lock is None or (lock.request, lock.sources) != (request.packages, request.sources):
        lock = lock_definition(DEFINITION, request)
    return lock


def variant(directory: Path, stamp: str, name: str = "nginx-bench.yaml") -> Path:
    """nginx.yaml plus one /etc file, with nginx's lock (the package set is the same), as
    `name` in `directory`."""
    definition = directory / name
    definition.write_text(yaml.safe_dump({
        "imports": [str(DEFINITION)],
        "environment": {"etc": {"bench-stamp": {"text": stamp}}},
    }))
    shutil.copy(lock_path(DEFINITION), lock_path(definition))
    return definition
