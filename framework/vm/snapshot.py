"""The booted VM, saved once Docker is ready and cached by everything it depends on.

Restoring it (a new QEMU process with -incoming) gives each test a fresh VM in well under a
second instead of a boot. Concurrent workers (pytest -n) wait on a lock for the first one.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from framework.cache import exclusive
from framework.vm.accel import qemu_binary
from framework.vm.cache import cache_dir
from framework.vm.docker import Machine
from framework.vm.machine import SMP, TCG_CPU, VMRoot


def _key(root: VMRoot, accel: str, memory_mib: int) -> str:
    version = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    parts = [root.digest, root.kernel.name, root.disk.name, root.initramfs.name, accel,
             str(memory_mib), TCG_CPU, str(SMP[accel]), version]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def booted_snapshot(root: VMRoot, accel: str, memory_mib: int) -> Path:
    """The path of a snapshot of this root booted to Docker ready (made if missing)."""
    folder = cache_dir("snapshots")
    path = folder / f"{_key(root, accel, memory_mib)}.state"
    if path.exists():
        return path
    with exclusive(path):
        if path.exists():
            return path
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="cimages-vm-boot-") as tmp:
            machine = Machine(root, accel, Path(tmp), name="snapshot", memory_mib=memory_mib)
            try:
                machine.start()
                machine.wait_for_docker()
                machine.take_snapshot(path)
            finally:
                machine.crash()
        print(f"cimages: booted the VM to Docker ready and saved it in "
              f"{time.monotonic() - started:.1f} s ({path})", file=sys.stderr)
    return path
