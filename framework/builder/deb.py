"""Reading .deb files: the ar container, and its control and data archives decompressed whole
(a package's files are held in memory until its layer is written)."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

from framework.errors import UserError

AR_MAGIC = b"!<arch>\n"


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


@dataclass(frozen=True)
class Deb:
    """A .deb read whole (once, for its hash and both archives): where each ar member is."""

    path: Path
    data: bytes
    members: dict[str, tuple[int, int]]  # name -> (offset, size)

    @classmethod
    def read(cls, path: Path) -> Deb:
        data = path.read_bytes()
        if not data.startswith(AR_MAGIC):
            raise UserError(f"{path} is not a Debian package (no ar header); delete it from "
                            "the cache and build again")
        members, offset = {}, len(AR_MAGIC)
        while offset + 60 <= len(data):
            header = data[offset:offset + 60]
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            members[name] = (offset + 60, size)
            offset += 60 + size + (size & 1)
        return cls(path, data, members)

    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def data_archive(self) -> Archive:
        """The data archive (the files the package installs)."""
        return self._archive("data.tar")

    def control_files(self) -> dict[str, bytes]:
        """The control archive's files (control, postinst, conffiles, ...) by bare name."""
        control = self._archive("control.tar")
        return {m.name.removeprefix("./"): bytes(control.content(m))
                for m in control.members if m.isfile()}

    def _archive(self, prefix: str) -> Archive:
        name = next((m for m in self.members if m.startswith(prefix)), None)
        if name is None:
            raise UserError(f"{self.path} has no {prefix}* member; the file is damaged: "
                            "delete it from the cache and build again")
        start, size = self.members[name]
        data = _decompressed(name, self.data[start:start + size])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return Archive(tar.getmembers(), memoryview(data))
