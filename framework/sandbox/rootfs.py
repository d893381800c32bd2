"""An image's root directory, unpacked from its layers (base first) honouring OCI
whiteouts, cached in the project cache (framework/cache.py) under roots/, by image digest.

Also used for the VM's root disk, so it takes any list of layer blobs (tar, optionally
gzip-compressed). Ownership comes from the layers, plus `uid_shift` (the sandbox maps
image uid 0 to an unprivileged host uid, so files must be owned by shifted ids to look
right inside). Unpacking as non-root keeps the caller as owner of everything.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from framework import cache
from framework.cache import cache_dir
from framework.errors import UserError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
# Directories a runtime mounts over; present (empty) so read-only roots can hold mounts.
MOUNT_POINTS = ("proc", "dev", "sys", "tmp", "run")


def unpacked_root(layers: Sequence[Path], digest: str, uid_shift: int = 0) -> Path:
    """The root directory of the image with these layers, unpacked once per digest."""
    key = digest.replace("sha256:", "")[:32] + (f"-shift{uid_shift}" if uid_shift else "")
    roots = cache_dir("roots")
    final = roots / key
    cache.hold(final)  # in use until this process ends: `cimages cache --gc` leaves it
    if final.is_dir():
        return final
    tmp = Path(tempfile.mkdtemp(dir=roots, prefix=f".{key}-"))
    try:
        for layer in layers:
            apply_layer(tmp, Path(layer), uid_shift)
        for name in MOUNT_POINTS:
            (tmp / name).mkdir(exist_ok=True)
        _own(tmp, 0o755, 0, 0, uid_shift)
        try:
            tmp.rename(final)
        except OSError:  # another process won the race with the same content
            if not final.is_dir():
                raise
            _remove(tmp)
    except BaseException:
        _remove(tmp)
        raise
    cache.bounded()
    return final


def inside(root: Path, name: str) -> Path:
    """Where `name` (a path in the image) is under `root`, following the image's own
    symlinks in its parent directories as if `root` were `/`, never leaving `root`."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("/", ".")]
    resolved: list[str] = []
    hops = 0
    while len(parts) > 1:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        here = root.joinpath(*resolved, part)
        if here.is_symlink():
            hops += 1
            if hops > 40:
                raise UserError(f"layer entry {name}: too many symlink levels; the image "
                                "is malformed, rebuild it")
            target = PurePosixPath(os.readlink(here))
            if target.is_absolute():
                resolved = []
            parts = [p for p in target.parts if p not in ("/", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved, *parts)


def apply_layer(root: Path, layer: Path, uid_shift: int) -> None:
    try:
        with tarfile.open(layer, "r:*") as tar:
            members = tar.getmembers()
            # Whiteouts hide what lower layers put there; this layer's own entries stay.
            for member in members:
                base = PurePosixPath(member.name).name
                parent = str(PurePosixPath(member.name).parent)
                if base == OPAQUE:
                    target = inside(root, f"{parent}/x").parent
                    if target.is_dir() and not target.is_symlink():
                        for child in target.iterdir():
                            _remove(child)
                elif base.startswith(WHITEOUT):
                    _remove(inside(root, f"{parent}/{base[len(WHITEOUT):]}"))
            for member in members:
                if not PurePosixPath(member.name).name.startswith(WHITEOUT):
                    _extract(tar, member, root, uid_shift)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"cannot unpack layer {layer}: {err}; the image is incomplete or "
                        "corrupt, rebuild it") from err


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path,
             uid_shift: int) -> None:
    path = inside(root, member.name)
    if path == root:
        return
    if member.isdir():
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            _remove(path)
        path.mkdir(exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(path)
        if member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            os.link(inside(root, member.linkname), path)
            return  # the link shares its target's inode and attributes
        elif member.isfile():
            source = tar.extractfile(member)
            assert source is not None
            with source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)
        else:  # device nodes and fifos: a runtime provides /dev, nothing to unpack
            return
    _own(path, member.mode, member.uid, member.gid, uid_shift)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def _own(path: Path, mode: int, uid: int, gid: int, uid_shift: int) -> None:
    if os.geteuid() == 0:
        os.lchown(path, uid + uid_shift, gid + uid_shift)
    if not path.is_symlink():
        os.chmod(path, stat.S_IMODE(mode))


def _remove(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
