"""`environment.etc.<path>` as image files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.image_files import ImageFile


def _owner(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def image_files(cfg: dict[str, Any]) -> list[ImageFile]:
    files = []
    for name, spec in sorted(cfg["environment"]["etc"].items()):
        if not spec["enable"]:
            continue
        if spec["text"] is not None:
            content = spec["text"].encode()
        else:
            source = Path(spec["source"])
            try:
                content = source.read_bytes()
            except OSError as err:
                raise UserError(f"environment.etc.\"{name}\".source: cannot read {source} "
                                f"({err.strerror}); fix the path (relative to the module)") from err
        files.append(ImageFile(f"/etc/{name.strip('/')}", content=content,
                               mode=int(spec["mode"], 8), user=_owner(spec["user"]),
                               group=_owner(spec["group"])))
    return files
