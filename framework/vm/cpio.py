"""A newc cpio archive writer, the format the kernel unpacks as an initramfs."""

from __future__ import annotations

import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    path: str  # relative, no leading slash: "bin/busybox"
    mode: int  # including the file type bits
    data: bytes = b""  # file content, or the target of a symlink


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _record(ino: int, entry: Entry) -> bytes:
    name = entry.path.encode() + b"\0"
    fields = [ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, 0, 0, len(name), 0]
    header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    return header + name + _pad(len(header) + len(name)) + entry.data + _pad(len(entry.data))


def archive(entries: list[Entry]) -> bytes:
    """Entries are written in order (parents first); fixed metadata keeps the bytes stable."""
    out = [_record(ino, e) for ino, e in enumerate(entries, start=1)]
    out.append(_record(0, Entry("TRAILER!!!", 0)))
    return b"".join(out)


def directory(path: str) -> Entry:
    return Entry(path, stat.S_IFDIR | 0o755)


def file(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())
