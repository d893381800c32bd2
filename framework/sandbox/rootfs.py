"""An image's root directory, unpacked from its layers (base first) honouring OCI
whiteouts, cached in the project cache (framework/cache.py) under roots/, by image digest.

Also used for the VM's root disk, so it takes any list of layer blobs (tar, optionally
gzip-compressed). Regular files are hard links into a pool of files by content and
attributes (roots/pool): the images of a project share most of their files (libc, bash,
s6), so forty roots cost about the space of one, not forty. Ownership comes from the
layers, plus `uid_shift` (the sandbox maps image uid 0 to an unprivileged host uid, so files
must be owned by shifted ids to look right inside). Unpacking as non-root keeps the caller
as owner of everything.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from framework import cache
from framework.cache import cache_dir
from framework.errors import UserError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
POOL = "pool"
# A pool file no root links is kept this long after its last link went.
PRUNE_AFTER_S = 600
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
    prune_pool()
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
            pool = cache_dir("roots") / POOL
            pool.mkdir(exist_ok=True)
            cache.hold(pool)  # a gc leaves the pool alone while this process may add to it
            for member in members:
                if not PurePosixPath(member.name).name.startswith(WHITEOUT):
                    _extract(tar, member, root, uid_shift, pool)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"cannot unpack layer {layer}: {err}; the image is incomplete or "
                        "corrupt, rebuild it") from err


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path,
             uid_shift: int, pool: Path) -> None:
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
            with source:
                _pooled(source, path, member, uid_shift, pool)
            return  # the pool's file carries the attributes
        else:  # device nodes and fifos: a runtime provides /dev, nothing to unpack
            return
    _own(path, member.mode, member.uid, member.gid, uid_shift)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def _pooled(source: IO[bytes], path: Path, member: tarfile.TarInfo, uid_shift: int,
            pool: Path) -> None:
    """Puts the file at `path` as a link to the pool's file of the same content, mode,
    owners and mtime (made from `source` when the pool lacks it). Roots are only ever read
    (runtimes write to an overlay above them), so their files may share inodes."""
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=pool, prefix=".new-", delete=False) as out:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    staged = Path(out.name)
    try:
        _own(staged, member.mode, member.uid, member.gid, uid_shift)
        os.utime(staged, (member.mtime, member.mtime))
        pooled = pool / (f"{digest.hexdigest()}-{stat.S_IMODE(member.mode):o}-"
                         f"{member.uid + uid_shift}-{member.gid + uid_shift}-{member.mtime}")
        for _ in range(2):  # again if a prune took the pool's file between the two links
            with contextlib.suppress(FileExistsError):  # pooled already, or meanwhile
                os.link(staged, pooled)
            try:
                os.link(pooled, path)
                return
            except FileNotFoundError:
                continue
            except OSError as err:
                if err.errno != errno.EMLINK:
                    raise
                # The file system's links per inode are used up: this one gets the copy.
                staged.rename(path)
                return
        raise UserError(f"cannot link {path} into the root: its pool file keeps vanishing")
    finally:
        staged.unlink(missing_ok=True)


def prune_pool(older_than_s: float = PRUNE_AFTER_S) -> None:
    """Removes the pool's files no root links any more (a root was evicted or dropped), once
    nothing has linked or unlinked them for `older_than_s` (an unpack may be about to)."""
    pool = cache_dir("roots") / POOL
    limit = time.time() - older_than_s
    with contextlib.suppress(FileNotFoundError), os.scandir(pool) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if info.st_nlink == 1 and info.st_ctime < limit and not entry.name.startswith("."):
                    os.unlink(entry.path)


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
