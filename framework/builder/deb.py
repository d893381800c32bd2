"""Reading .deb files: the ar container, and its control and data archives decompressed whole
(a package's files are held in memory until its layer is written)."""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from framework.errors import UserError

AR_MAGIC = b"!<arch>\n"


def _members(handle: BinaryIO, path: Path) -> dict[str, tuple[int, int]]:
    if handle.read(8) != AR_MAGIC:
        raise UserError(f"{path} is not a Debian package (no ar header); delete it from the "
                        "cache and build again")
    members = {}
    while header := handle.read(60):
        if len(header) < 60:
            break
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = (handle.tell(), size)
        handle.seek(size + (size & 1), io.SEEK_CUR)
    return members


@dataclass(frozen=True)
class Archive:
    """A .deb member's tar, decompressed whole: its members and the bytes they point into,
    so a file's content is a slice of `data`, never a copy."""

    members: list[tarfile.TarInfo]
    data: memoryview

    def content(self, member: tarfile.TarInfo) -> memoryview:
        return self.data[member.offset_data:member.offset_data + member.size]


def _decompressed(name: str, raw: bytes) -> bytes:
    """The whole member in one call: no stream reader's Python calls per chunk."""
    if name.endswith(".xz"):
        return lzma.decompress(raw)
    if name.endswith(".gz"):
        return gzip.decompress(raw)
    if name.endswith(".zst"):
        # decompressobj, unlike decompress, needs no content size in the frame header.
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    if name.endswith(".tar"):
        return raw
    raise UserError(f"unsupported compression in .deb member {name}")


def _archive(path: Path, prefix: str) -> Archive:
    with open(path, "rb") as handle:
        members = _members(handle, path)
        name = next((m for m in members if m.startswith(prefix)), None)
        if name is None:
            raise UserError(f"{path} has no {prefix}* member; the file is damaged: delete it "
                            "from the cache and build again")
        start, size = members[name]
        handle.seek(start)
        raw = handle.read(size)
    data = _decompressed(name, raw)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return Archive(tar.getmembers(), memoryview(data))


def data_archive(path: Path) -> Archive:
    """The data archive (the files the package installs)."""
    return _archive(path, "data.tar")


def control_files(path: Path) -> dict[str, bytes]:
    """The control archive's files (control, postinst, conffiles, ...) by bare name."""
    control = _archive(path, "control.tar")
    return {m.name.removeprefix("./"): bytes(control.content(m))
            for m in control.members if m.isfile()}
