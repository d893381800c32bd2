"""The booted VM, saved once Docker is ready and cached by everything it depends on, and
`VMFactory`, the one place a VM is wired from its parts (root, accelerator, memory,
snapshot) for the CLI, the pytest plugin and the bench.

Restoring the snapshot (a new QEMU process with -incoming) gives each test a fresh VM in
well under a second instead of a boot. Concurrent workers (pytest -n) wait on a lock for
the first one.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from framework import cache
from framework.cache import exclusive
from framework.vm.accel import qemu_binary, select_accel
from framework.vm.cache import cache_dir
from framework.vm.docker import Machine
from framework.vm.machine import (
    DEFAULT_MEMORY_MIB,
    KERNEL_ARGS,
    SMP,
    SNAPSHOT_FORMAT,
    TCG_CPU,
    VMRoot,
)

# Run before the booted snapshot is saved: one container start (a published port, curl),
# so the pages of what every test's first container start and check read (the docker CLI,
# containerd's shim, crun, the network hook, iptables, curl) are in the guest's page cache
# of the snapshot instead of on its disk, read again by every restored VM (measured under
# TCG: the first curl after a restore 0.52-0.60 s, against 0.29-0.39 s once run before).
# The image is made of the host's /usr/bin/true and its libraries, and removed after.
WARM_UP = """
set -euo pipefail
files=(usr/bin/true lib64/ld-linux-x86-64.so.2)
/lib64/ld-linux-x86-64.so.2 --list /usr/bin/true | {
    while read -r _ arrow library _; do
        if [ "$arrow" = "=>" ]; then files+=("${library#/}"); fi
    done
    tar -chf - -C / "${files[@]}"
} | docker import - cimages-warm-up:latest >/dev/null
docker run --rm -p 127.0.0.1:9:9 cimages-warm-up:latest /usr/bin/true
docker rmi cimages-warm-up:latest >/dev/null
curl -s localhost:9 || true
"""


@dataclass
class VMFactory:
    """What every VM of a session shares, and `machine()` to make one more from it."""

    root: VMRoot
    accel: str
    memory_mib: int = DEFAULT_MEMORY_MIB
    _snapshot: Path | None = field(default=None, init=False, repr=False)

    @classmethod
    def prepare(cls, accel: str | None = None,
                memory_mib: int = DEFAULT_MEMORY_MIB) -> VMFactory:
        """The Docker host's root (built, or from the cache) and the accelerator: `accel`
        (--accel) or what the KVM probe found."""
        from framework.vm.host import docker_host  # the builder: only when a VM is wanted

        root = docker_host()
        return cls(root, select_accel(root.kernel, accel), memory_mib)

    def snapshot(self) -> Path:
        """The booted snapshot of this root, accelerator and memory (made if missing)."""
        if self._snapshot is None:
            self._snapshot = booted_snapshot(self.root, self.accel, self.memory_mib)
        return self._snapshot

    def machine(self, state_dir: Path, name: str = "machine", *,
                booted: bool = True) -> Machine:
        """A new VM with its files in `state_dir`: restored from the booted snapshot when it
        is first used, or booted from cold (`booted=False`)."""
        return Machine(self.root, self.accel, state_dir, name=name, memory_mib=self.memory_mib,
                       snapshot=self.snapshot() if booted else None)


def _key(root: VMRoot, accel: str, memory_mib: int) -> str:
    version = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    parts = [root.digest, root.kernel.name, root.disk.name, root.initramfs.name, accel,
             str(memory_mib), TCG_CPU, str(SMP[accel]), KERNEL_ARGS, SNAPSHOT_FORMAT,
             WARM_UP, version]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def booted_snapshot(root: VMRoot, accel: str, memory_mib: int) -> Path:
    """The path of a snapshot of this root booted to Docker ready (made if missing)."""
    folder = cache_dir("snapshots")
    path = folder / f"{_key(root, accel, memory_mib)}.state"
    cache.hold(path)  # in use until this process ends: `cimages cache --gc` leaves it
    if path.exists():
        return path
    cache.release(path)  # the same lock file: held shared, it would block exclusive()
    with exclusive(path):
        made = not path.exists()
        if made:
            _boot_and_save(root, accel, memory_mib, path)
    cache.hold(path)
    if made:
        cache.bounded()
    return path


def _boot_and_save(root: VMRoot, accel: str, memory_mib: int, path: Path) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cimages-vm-boot-") as tmp:
        machine = VMFactory(root, accel, memory_mib).machine(Path(tmp), "snapshot",
                                                             booted=False)
        try:
            machine.start()
            machine.wait_for_docker()
            machine.succeed(WARM_UP, timeout=120)
            machine.take_snapshot(path)
        finally:
            machine.crash()
    print(f"cimages: booted the VM to Docker ready and saved it in "
          f"{time.monotonic() - started:.1f} s ({path})", file=sys.stderr)
