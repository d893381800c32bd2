"""Reading .deb files: the ar container, the control archive, the data archive as a stream."""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import zstandard

from framework.errors import UserError

AR_MAGIC = b"!<arch>\n"


class _Slice(io.RawIOBase):
    """A read-only window onto one ar member, so decompressors stream from the .deb."""

    def __init__(self, handle: BinaryIO, start: int, size: int) -> None:
        self._handle, self._pos, self._end = handle, start, start + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._end - self._pos)
        if want <= 0:
            return 0
        self._handle.seek(self._pos)
        data = self._handle.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


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


def _decompressed(name: str, raw: BinaryIO) -> BinaryIO | io.BufferedIOBase | io.RawIOBase:
    if name.endswith(".xz"):
        return lzma.LZMAFile(raw)
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(raw)
    if name.endswith(".tar"):
        return raw
    raise UserError(f"unsupported compression in .deb member {name}")


@contextmanager
def _tar(path: Path, prefix: str) -> Iterator[tarfile.TarFile]:
    with open(path, "rb") as handle:
        members = _members(handle, path)
        name = next((m for m in members if m.startswith(prefix)), None)
        if name is None:
            raise UserError(f"{path} has no {prefix}* member; the file is damaged: delete it "
                            "from the cache and build again")
        raw = io.BufferedReader(_Slice(handle, *members[name]), buffer_size=1 << 20)
        with tarfile.open(fileobj=_decompressed(name, raw), mode="r|") as tar:
            yield tar


@contextmanager
def data_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """The data archive as a stream: iterate it once, reading each member as it comes."""
    with _tar(path, "data.tar") as tar:
        yield tar


def control_files(path: Path) -> dict[str, bytes]:
    """The control archive's files (control, postinst, conffiles, ...) by bare name."""
    files = {}
    with _tar(path, "control.tar") as tar:
        for member in tar:
            if member.isfile():
                extracted = tar.extractfile(member)
                if extracted is not None:
                    files[member.name.removeprefix("./")] = extracted.read()
    return files
