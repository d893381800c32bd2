"""A .deb's data archive as layer entries, the way dpkg would lay it on a merged-/usr root.

Paths under the top-level bin, sbin and lib* directories are rewritten to usr/..., so no
package layer ever replaces the base layer's /bin -> usr/bin symlinks (a layer with a real
./bin directory would shadow the symlink and hide every other package's programs). Owners
are taken by name through the image's passwd/group, falling back to the numeric id, as dpkg
does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from framework.builder.deb import Deb
from framework.builder.layer import DirMeta, Entry

# Debian's merged-/usr: each of these is a symlink to usr/<name> in the base layer.
MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def usr_path(path: str) -> str:
    """`./bin/ls` -> `usr/bin/ls`; every path relative, without "./"."""
    path = path.removeprefix("./").lstrip("/").rstrip("/")
    top, _, rest = path.partition("/")
    if top in MERGED_USR:
        return f"usr/{top}/{rest}" if rest else f"usr/{top}"
    return path


@dataclass
class IdMap:
    """The image's own users and groups, by name."""

    users: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)


@dataclass
class Unpacked:
    entries: list[Entry]
    # Non-directory paths with a fingerprint of their content, to find file conflicts.
    files: dict[str, str]
    owner_names: set[str]  # "user:NAME"/"group:NAME" a member was owned by (not root)
    # Directories that are not root 0755: what a later layer must keep for them.
    dirs: DirMeta = field(default_factory=dict)
    skipped_devices: int = 0


@dataclass(frozen=True)
class DebInfo:
    """What unpacking a .deb found, apart from its entries: cached by the .deb's sha256
    (`layercache.deb_info`), so a warm build decides its layer hits, checks file conflicts
    and writes the generated layer without opening a .deb."""

    owner_names: tuple[str, ...]  # sorted, as in Unpacked
    files: dict[str, str]  # as in Unpacked
    control: dict[str, str]  # the control archive's files, decoded (bad bytes replaced)
    dirs: DirMeta  # as in Unpacked
    skipped_devices: int

    @classmethod
    def of(cls, unpacked: Unpacked, control: dict[str, bytes]) -> DebInfo:
        return cls(tuple(sorted(unpacked.owner_names)), unpacked.files,
                   {k: v.decode("utf-8", "replace") for k, v in control.items()},
                   unpacked.dirs, unpacked.skipped_devices)

    def to_json(self) -> dict[str, Any]:
        return {"owner_names": list(self.owner_names), "files": self.files,
                "control": self.control, "dirs": self.dirs,
                "skipped_devices": self.skipped_devices}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DebInfo:
        """The record `to_json` made; KeyError, TypeError or ValueError when it is not."""
        dirs = {path: (int(mode), int(uid), int(gid))
                for path, (mode, uid, gid) in data["dirs"].items()}
        return cls(tuple(data["owner_names"]), dict(data["files"]), dict(data["control"]),
                   dirs, int(data["skipped_devices"]))


def unpack_deb(deb: Deb, ids: IdMap) -> Unpacked:
    """The .deb's data archive as entries; a file's data is a slice of the decompressed
    archive, which stays in memory as long as the entries do."""
    result = Unpacked([], {}, set())
    archive = deb.data_archive()
    for member in archive.members:
        path = usr_path(member.name)
        if not path or path == ".":
            continue
        if member.ischr() or member.isblk() or member.isfifo():
            result.skipped_devices += 1  # container runtimes provide /dev
            continue
        uid = _owner(member.uname, member.uid, ids.users, "user", result.owner_names)
        gid = _owner(member.gname, member.gid, ids.groups, "group", result.owner_names)
        entry = Entry(path, "dir", member.mode, uid, gid)
        if member.isdir():
            if (member.mode & 0o7777, uid, gid) != (0o755, 0, 0):
                result.dirs[path] = (member.mode & 0o7777, uid, gid)
        elif member.issym():
            entry.kind, entry.link = "symlink", member.linkname
            result.files[path] = "symlink:" + member.linkname
        elif member.islnk():
            entry.kind, entry.link = "hardlink", usr_path(member.linkname)
            result.files[path] = result.files.get(entry.link, "hardlink:" + entry.link)
        elif member.isfile():
            entry.kind, entry.size, entry.data = "file", member.size, archive.content(member)
            result.files[path] = hashlib.sha256(entry.data).hexdigest()
        else:
            continue
        result.entries.append(entry)
    return result


def _owner(name: str, number: int, table: dict[str, int], kind: str, used: set[str]) -> int:
    if name and name != "root":
        used.add(f"{kind}:{name}")
    return table.get(name, number) if name else number
