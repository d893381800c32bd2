"""Digests read from outside (locks, base images, cache records) before they name a file.

A digest becomes a path (`blobs/sha256/<hex>`, `debs/<hex>.deb`): one that is not exactly
`sha256:` and 64 lowercase hex digits could name any file (`sha256:../../x`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from framework.errors import UserError

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{64}")


def is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def is_hex(value: object) -> bool:
    return isinstance(value, str) and _HEX.fullmatch(value) is not None


def hex_of(digest: object, where: str) -> str:
    """The 64 hex digits of a `sha256:` digest, or a UserError naming where it was read."""
    if not is_digest(digest):
        raise UserError(f"{where}: {str(digest)[:100]!r} is not a sha256 digest (`sha256:` and "
                        "64 hex digits): the file is corrupt or was tampered with; rebuild or "
                        "fetch it again")
    return str(digest)[7:]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verified_blob(blobs: Path, digest: object, where: str) -> Path:
    """`blobs/<hex>` once its content is checked to hash to `digest`."""
    path = blobs / hex_of(digest, where)
    if not path.is_file():
        raise UserError(f"{where}: blob {digest} is missing from {blobs}; the layout is "
                        "incomplete: copy or build it again")
    if file_sha256(path) != path.name:
        raise UserError(f"{where}: blob {digest} in {blobs} does not hash to its name: the "
                        "layout is corrupt; copy or build it again")
    return path
