"""Where the VM tier keeps what it builds once: the project cache's vm/<kind>/."""

from __future__ import annotations

from pathlib import Path

from framework import cache


def cache_dir(kind: str) -> Path:
    return cache.cache_dir(f"vm/{kind}")
