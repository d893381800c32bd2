"""The VM's root disk: an ext4 image of the root tree made with `mke2fs -d`, cached by key.

The guest mounts it read-only under a tmpfs overlay, so one file serves every VM; each VM
still gets its own throw-away qcow2 overlay so nothing can ever write the cached image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from framework.atomic import temporary_sibling
from framework.errors import UserError
from framework.vm.cache import cache_dir

MKE2FS_TIMEOUT_S = 600


def _tree_bytes(root: Path) -> int:
    total = 0
    for base, dirs, files in os.walk(root):
        total += 4096 * (len(dirs) + 1)
        for name in files:
            try:
                total += max(os.lstat(os.path.join(base, name)).st_size, 1) + 4096
            except OSError:
                continue
    return total


def root_disk(root: Path, key: str) -> Path:
    """The raw ext4 image of `root` (cached as <key>.ext4)."""
    out = cache_dir("disks") / f"{key}.ext4"
    if out.exists():
        return out
    if shutil.which("mke2fs") is None:
        raise UserError("mke2fs is missing: run `make setup` (or apt-get install e2fsprogs)")
    size_mib = _tree_bytes(root) * 5 // 4 // 2**20 + 64
    tmp = temporary_sibling(out)
    # No journal: the disk is only ever mounted read-only.
    cmd = ["mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-E", "root_owner=0:0",
           "-L", "cimages-vm", "-d", str(root), str(tmp), f"{size_mib}M"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=MKE2FS_TIMEOUT_S,
                          check=False)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise UserError(f"mke2fs could not build the VM root disk from {root}: "
                        f"{done.stderr.strip()}; check free space in {out.parent}")
    tmp.replace(out)
    return out


def overlay(base: Path, folder: Path) -> Path:
    """A throw-away qcow2 on top of the cached raw disk, for one VM."""
    path = folder / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base),
                    str(path)], check=True, capture_output=True, timeout=30)
    return path
