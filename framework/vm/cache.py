"""Where the VM tier keeps what it builds once: ~/.cache/cimages/vm/<kind>/."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "cimages" / "vm" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
