"""Deterministic layer tarballs: sorted names, one mtime, numeric owners, gzip without a
timestamp. The same entries give the same bytes on any machine: the tar is tarfile's own
headers, and the gzip is the pinned libdeflate's (`compressor`), not the host's zlib."""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from framework.builder import blobs
from framework.builder.compressor import gzip_compress

Kind = Literal["file", "dir", "symlink", "hardlink"]


@dataclass
class Entry:
    path: str  # relative, no leading "./" or "/": "usr/bin/hello"
    kind: Kind
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    link: str = ""  # symlink target, or the path a hard link points to
    data: bytes | memoryview | None = None  # a file's content (a package's: a slice of its archive)


@dataclass(frozen=True)
class LayerBlob:
    digest: str  # sha256 of the gzip blob: "sha256:..."
    diff_id: str  # sha256 of the uncompressed tar
    size: int  # bytes of the blob
    path: Path


# A directory's (mode, uid, gid) as a lower layer has it.
DirMeta = dict[str, tuple[int, int, int]]


def with_parents(entries: Iterable[Entry], below: DirMeta | None = None) -> list[Entry]:
    """Adds an entry for every parent directory no entry declares, so unpacking a layer
    alone never creates directories with an extractor's defaults. A layer's directory
    entry replaces the lower one's metadata, so a parent takes it from `below` (the base's
    1777 /tmp, a package's www-data-owned directory) and is root 0755 only when unknown."""
    below = below or {}
    by_path: dict[str, Entry] = {}
    for entry in entries:
        by_path.setdefault(entry.path, entry)  # the first declaration wins
    for path in list(by_path):
        parent = os.path.dirname(path)
        while parent and parent not in by_path:
            mode, uid, gid = below.get(parent, (0o755, 0, 0))
            by_path[parent] = Entry(parent, "dir", mode, uid, gid)
            parent = os.path.dirname(parent)
    return list(by_path.values())


def _order_hardlinks(entries: list[Entry]) -> None:
    """In sorted order a hard link may come before the file it names; tar needs the data
    first, so the first name of each link group carries the content and the rest link to it."""
    position = {e.path: i for i, e in enumerate(entries)}
    for entry in entries:
        if entry.kind != "hardlink" or entry.link not in position:
            continue
        target = entries[position[entry.link]]
        if target.kind == "file" and position[entry.path] < position[target.path]:
            # One inode: the name that now carries the data takes its mode and owners too.
            entry.kind, entry.size, entry.data = "file", target.size, target.data
            entry.mode, entry.uid, entry.gid = target.mode, target.uid, target.gid
            target.kind, target.link, target.data = "hardlink", entry.path, None
            for other in entries:
                if other.kind == "hardlink" and other.link == target.path:
                    other.link = entry.path
            entry.link = ""


def _tarinfo(entry: Entry, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mode, info.uid, info.gid, info.mtime = entry.mode & 0o7777, entry.uid, entry.gid, mtime
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.link
    elif entry.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, entry.link
    else:
        info.size = entry.size
    return info


def write_layer(entries: Iterable[Entry], mtime: int, directory: Path,
                below: DirMeta | None = None) -> LayerBlob:
    """Writes the entries as a gzip tar blob into `directory` (named by its digest)."""
    ordered = sorted(with_parents(entries, below), key=lambda e: e.path.encode())
    _order_hardlinks(ordered)
    tar = _tar(ordered, mtime)
    blob = blobs.put(directory, gzip_compress(tar))
    return LayerBlob(blob.digest, f"sha256:{hashlib.sha256(tar).hexdigest()}", blob.size,
                     blob.path)


def _tar(ordered: list[Entry], mtime: int) -> bytes:
    """The entries as one PAX tar buffer (libdeflate compresses whole buffers): the bytes
    tarfile's writer gives, headers by tarfile itself, without its copy of each file."""
    parts: list[bytes | memoryview] = []
    for entry in ordered:
        info = _tarinfo(entry, mtime)
        parts.append(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if entry.kind == "file":
            assert entry.data is not None and len(entry.data) == entry.size, entry.path
            parts += [entry.data, tarfile.NUL * (-entry.size % tarfile.BLOCKSIZE)]
    # The end: two zero blocks, then zeros up to a whole record, as tarfile closes a tar.
    end = sum(map(len, parts)) + 2 * tarfile.BLOCKSIZE
    parts.append(tarfile.NUL * (2 * tarfile.BLOCKSIZE + -end % tarfile.RECORDSIZE))
    return b"".join(parts)
