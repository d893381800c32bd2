"""`image.run`: shell lines run at build time on the image's root, in the sandbox tier's
sandbox (a user namespace mapped to unprivileged host ids, no network, the image's own
/bin/sh); what they change becomes one more layer.

The root below is the cached unpacked root of the layers so far, read-only under an
overlay: the overlay's upper directory is exactly what the lines changed (new and changed
files, whiteouts for deletions, opaque directories), so nothing is extracted or compared.
The layer goes on top of the generated one, because the lines see the finished image (its
accounts, /etc, services) and their changes must not be hidden by it. It is cached by the
digests of the layers below and the lines, so an unchanged image does not run them again.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from framework.builder import layercache
from framework.builder.layer import Entry, LayerBlob, write_layer
from framework.builder.oci import ImageLayer
from framework.errors import UserError, shorten

TIMEOUT = 600  # seconds for each line
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OPAQUE_XATTR = "user.overlay.opaque"  # the sandbox mounts its overlay with `userxattr`


def _meta(path: Path, shift: int) -> tuple[int, int, int]:
    info = path.lstat()
    if os.geteuid() != 0:  # the namespace maps only the caller: every file is image root's
        return stat.S_IMODE(info.st_mode), 0, 0
    return stat.S_IMODE(info.st_mode), info.st_uid - shift, info.st_gid - shift


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as err:
        if err.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise


def _changes(upper: Path, lower: Path, shift: int, skip: set[str]) -> list[Entry]:
    """The overlay's upper directory as layer entries, ids back in the image's range."""
    entries = []
    for directory, dirs, files in os.walk(upper):
        for name in sorted(dirs + files):
            path = Path(directory, name)
            rel = str(path.relative_to(upper))
            if rel in skip:
                dirs[:] = [d for d in dirs if d != name]
                continue
            info = path.lstat()
            mode, uid, gid = _meta(path, shift)
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:  # overlay's whiteout
                head, tail = os.path.split(rel)
                entries.append(Entry(os.path.join(head, f".wh.{tail}"), "file", 0o644,
                                     size=0, data=b""))
            elif stat.S_ISDIR(info.st_mode):
                opaque = _is_opaque(path)
                # A parent copied up only to hold a change keeps the lower's metadata.
                unchanged = (lower / rel).is_dir() and _meta(lower / rel, shift) == (
                    mode, uid, gid)
                if opaque or not unchanged:
                    entries.append(Entry(rel, "dir", mode, uid, gid))
                if opaque:
                    entries.append(Entry(f"{rel}/.wh..wh..opq", "file", 0o644, size=0,
                                         data=b""))
            elif stat.S_ISLNK(info.st_mode):
                entries.append(Entry(rel, "symlink", 0o777, uid, gid, link=os.readlink(path)))
            elif stat.S_ISREG(info.st_mode):
                data = path.read_bytes()
                entries.append(Entry(rel, "file", mode, uid, gid, size=len(data), data=data))
    return entries


def run_layer(lines: list[str], below: list[ImageLayer], mtime: int) -> tuple[LayerBlob, bool]:
    """The layer of what `lines` change, and whether it came from the cache."""
    from framework.sandbox.image import id_shift
    from framework.sandbox.rootfs import unpacked_root
    from framework.sandbox.runner import STATE_INSIDE, Sandbox

    key = layercache.key_of(["run", mtime, [layer.digest for layer in below], lines])
    if hit := layercache.lookup(key):
        return hit, True
    shift = id_shift()
    lower = unpacked_root([layer.path for layer in below], "sha256:" + layercache.key_of(
        ["run-below", [layer.digest for layer in below]]), uid_shift=shift)
    if not os.path.lexists(lower / "usr/bin/sh"):
        raise UserError("image.run needs a shell in the image, and it has no /bin/sh; "
                        "add `dash` to environment.systemPackages or set "
                        "image.interactive: true")
    # Not under the cache: the namespace's root must reach it, and ~ may be 0700.
    work = Path(tempfile.mkdtemp(prefix="cimages-run-"))
    try:
        for line in lines:
            box = Sandbox.start([lower], ["/bin/sh", "-c", line], workdir=work,
                                env={"PATH": PATH, "HOME": "/root"})
            try:
                code = box.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired as err:
                raise UserError(f"image.run line `{line}` ran over {TIMEOUT}s; make it "
                                "finish (there is no network at build time)") from err
            finally:
                if box.exit_code is None:
                    box.stop(timeout=1)
            if code != 0:
                output = shorten(box.logs().strip())
                raise UserError(f"image.run line `{line}` failed with exit code {code}: "
                                f"{output or 'no output'}; fix the line")
        upper = work / "upper"
        # The state directory's mount point is the sandbox's, not the lines'.
        skip = {STATE_INSIDE.strip("/")}
        dirs = {str(p.relative_to(upper)): _meta(p, shift) for p in upper.rglob("*")
                if p.is_dir() and not p.is_symlink()}
        blob = write_layer(_changes(upper, lower, shift, skip), mtime, layercache.blob_dir(),
                           below=dirs)
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(work)], capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    layercache.store(key, blob)
    return blob, False
