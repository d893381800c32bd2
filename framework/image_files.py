"""Files a module generates into the image's last layer (users, /etc, s6 services).

A generator is `image_files(cfg) -> list[ImageFile]`; the builder collects them from every
generator named in `framework.builder.generated.GENERATORS` and resolves owner names
through the image's own passwd/group, as dpkg does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ImageFile:
    path: str  # absolute, inside the image: "/etc/passwd"
    kind: Literal["file", "dir", "symlink"] = "file"
    content: bytes = b""
    target: str = ""  # for symlinks
    mode: int = 0o644
    user: str | int = 0  # a name from the image's passwd, or a number
    group: str | int = 0
