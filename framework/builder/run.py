"""`image.run`: shell lines run at build time on the image's root, in a bubblewrap sandbox
(no network, the image's own /bin/sh); what they change becomes one more layer.

The layer goes on top of the generated one, because the lines see the finished image (its
accounts, /etc, services) and their changes must not be hidden by it. It is cached by the
digests of the layers below and the lines, so an unchanged image does not run them again.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from framework.builder import layercache
from framework.builder.layer import Entry, LayerBlob, write_layer
from framework.builder.oci import ImageLayer
from framework.cache import cache_dir
from framework.errors import UserError

TIMEOUT = 600  # seconds for each line
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Snapshot = dict[str, tuple[int, int, int, int, int, str]]


def _extract(layers: list[ImageLayer], root: Path) -> None:
    for layer in layers:
        subprocess.run(["tar", "-x", "--numeric-owner", "-f", str(layer.path), "-C", str(root)],
                       check=True, capture_output=True, timeout=TIMEOUT)
        # OCI whiteouts from a base image: `.wh.NAME` deletes NAME of the layers below.
        for whiteout in list(root.rglob(".wh.*")):
            target = whiteout.with_name(whiteout.name[4:])
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            whiteout.unlink()


def _snapshot(root: Path) -> Snapshot:
    found: Snapshot = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            info = path.lstat()
            link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else ""
            found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid,
                                                  info.st_size, info.st_mtime_ns, link)
    return found


def _sandbox_command(root: Path, line: str) -> list[str]:
    command = ["bwrap", "--bind", str(root), "/", "--dev", "/dev", "--proc", "/proc",
               "--unshare-all", "--die-with-parent", "--clearenv", "--setenv", "PATH", PATH,
               "--setenv", "HOME", "/root", "--chdir", "/"]
    if os.geteuid() != 0:
        command += ["--unshare-user", "--uid", "0", "--gid", "0"]
    return [*command, "/bin/sh", "-c", line]


def _changes(root: Path, before: Snapshot, after: Snapshot) -> list[Entry]:
    as_root = os.geteuid() == 0  # otherwise every file is the caller's: root in the image
    entries = []
    for path, meta in after.items():
        if before.get(path) == meta:
            continue
        mode, uid, gid, _, _, link = meta
        uid, gid = (uid, gid) if as_root else (0, 0)
        if stat.S_ISDIR(mode):
            entries.append(Entry(path, "dir", mode, uid, gid))
        elif stat.S_ISLNK(mode):
            entries.append(Entry(path, "symlink", 0o777, uid, gid, link=link))
        elif stat.S_ISREG(mode):
            data = (root / path).read_bytes()
            entries.append(Entry(path, "file", mode, uid, gid, size=len(data), data=data))
    removed = sorted(set(before) - set(after))
    for path in removed:
        if os.path.dirname(path) in removed:
            continue  # a removed directory's whiteout covers its content
        head, tail = os.path.split(path)
        whiteout = os.path.join(head, f".wh.{tail}")
        entries.append(Entry(whiteout, "file", 0o644, size=0, data=b""))
    return entries


def run_layer(lines: list[str], below: list[ImageLayer], mtime: int) -> tuple[LayerBlob, bool]:
    """The layer of what `lines` change, and whether it came from the cache."""
    key = layercache.key_of(["run", mtime, [layer.digest for layer in below], lines])
    if hit := layercache.lookup(key):
        return hit, True
    root = Path(tempfile.mkdtemp(prefix="run-", dir=cache_dir("tmp")))
    try:
        _extract(below, root)
        if not os.path.lexists(root / "usr/bin/sh"):
            raise UserError("image.run needs a shell in the image, and it has no /bin/sh; "
                            "add `dash` to environment.systemPackages or set "
                            "image.interactive: true")
        # bwrap's mount points, made now so they are not part of the changes.
        for mount_point in ("dev", "proc"):
            (root / mount_point).mkdir(exist_ok=True)
        before = _snapshot(root)
        for line in lines:
            try:
                done = subprocess.run(_sandbox_command(root, line), capture_output=True,
                                      text=True, timeout=TIMEOUT)
            except subprocess.TimeoutExpired as err:
                raise UserError(f"image.run line `{line}` ran over {TIMEOUT}s; make it "
                                "finish (there is no network at build time)") from err
            if done.returncode != 0:
                output = (done.stdout + done.stderr).strip()[-2000:]
                raise UserError(f"image.run line `{line}` failed with exit code "
                                f"{done.returncode}: {output or 'no output'}; fix the line")
        after = _snapshot(root)
        # Parents of changed paths keep their modes and owners (/tmp stays 1777).
        dirs = {path: (mode & 0o7777, uid, gid) for path, (mode, uid, gid, *_) in after.items()
                if stat.S_ISDIR(mode)}
        blob = write_layer(_changes(root, before, after), mtime, layercache.blob_dir(),
                           below=dirs)
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(root)], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    layercache.store(key, blob)
    return blob, False
