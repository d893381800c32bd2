"""Content-addressed files: each named by the sha256 of its bytes (`<hex><suffix>`), written
whole beside that name and renamed; a blob already there is never rewritten (the same name
holds the same bytes). The layer cache, the .deb cache and every OCI layout use them."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from framework.atomic import Pending, pending


class HashingWriter(io.RawIOBase):
    """Passes writes on to `target`, counting and hashing them."""

    def __init__(self, target: BinaryIO | io.BufferedIOBase) -> None:
        self.target, self.hash, self.size = target, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


@dataclass(frozen=True)
class Blob:
    digest: str  # "sha256:<hex>"
    size: int
    path: Path

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


class BlobWriter(HashingWriter):
    def __init__(self, file: Pending, directory: Path, suffix: str) -> None:
        super().__init__(file.handle)
        self.directory, self.suffix = directory, suffix

    @property
    def blob(self) -> Blob:
        """The blob of what was written so far (where it is once the block has ended)."""
        hex_digest = self.hexdigest()
        return Blob(f"sha256:{hex_digest}", self.size,
                    self.directory / f"{hex_digest}{self.suffix}")


@contextlib.contextmanager
def writing(directory: Path, suffix: str = "") -> Iterator[BlobWriter]:
    """A blob streamed into `directory`: named by what was written when the block ends, and
    gone when it raises (a caller that checks the hash raises to drop it)."""
    with pending(directory, ".blob-") as file:
        writer = BlobWriter(file, directory, suffix)
        yield writer
        file.commit(writer.blob.path, keep_existing=True)


def put(directory: Path, data: bytes | bytearray) -> Blob:
    """`data` as a blob in `directory` (hashed once, not again while it is written)."""
    digest = hashlib.sha256(data).hexdigest()
    blob = Blob(f"sha256:{digest}", len(data), directory / digest)
    if not blob.path.is_file():
        with pending(directory, ".blob-") as file:
            file.handle.write(data)
            file.commit(blob.path, keep_existing=True)
    return blob


def link(source: Path, target: Path) -> None:
    """Puts the blob `source` at `target` (its name in another folder): a hard link when
    both are on one file system, else a copy; one already at `target` is kept."""
    if target.is_file():
        return
    try:
        os.link(source, target)
        return
    except FileExistsError:
        return  # another writer put it there meanwhile: the same bytes
    except OSError:
        pass
    with pending(target.parent, f".{target.name}.") as file, open(source, "rb") as data:
        shutil.copyfileobj(data, file.handle)
        file.commit(target, keep_existing=True)
