"""Chooses the accelerator: KVM only when the VM's own kernel really boots under it, else TCG.

/dev/kvm can exist and still hang (nested KVM), or reject the host CPU model, so the probe
boots the VM's kernel with the VM's machine and CPU model and no root: a working KVM reaches
the "no root" panic and exits (panic=-1, -no-reboot) within the timeout. The answer is
cached per host kernel, QEMU binary and guest kernel, and said once.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from framework.atomic import write_atomic
from framework.errors import UserError
from framework.vm.cache import cache_dir

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT_S = 5.0
# The machine and CPU model the VM uses under KVM (machine.py); the probe must match them.
KVM_MACHINE = ["-M", "q35", "-cpu", "host"]

# Waits in the VM scale with how slow the guest CPU is.
TIMEOUT_FACTOR = {"kvm": 1.0, "tcg": 4.0}


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise UserError(f"{QEMU} is not installed; the VM tier needs it: run `make setup` "
                        "(or apt-get install qemu-system-x86 qemu-utils)")
    if shutil.which("zstd") is None:
        raise UserError("zstd is not installed; the VM tier stores its snapshots with it: "
                        "run `make setup` (or apt-get install zstd)")
    return path


def _probe_kvm(qemu: str, kernel: Path) -> bool:
    cmd = [qemu, "-accel", "kvm", *KVM_MACHINE, "-m", "256", "-nodefaults", "-display", "none",
           "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
           "-append", "console=ttyS0 panic=-1"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False
    return b"Kernel panic" in done.stdout


def _cache_key(qemu: str, kernel: Path) -> str:
    stat = os.stat(qemu)
    return f"{platform.release()}|{qemu}|{stat.st_size}|{stat.st_mtime_ns}|{kernel.name}"


def select_accel(kernel: Path, requested: str | None = None) -> str:
    """`kvm` or `tcg` for booting `kernel`; `requested` (--accel) overrides the probe."""
    qemu = qemu_binary()
    if requested:
        if requested not in TIMEOUT_FACTOR:
            raise UserError(f"unknown accelerator {requested!r}: use --accel kvm or --accel tcg")
        if requested == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise UserError("--accel kvm but /dev/kvm is missing or not writable: load the "
                            "kvm module and add yourself to the kvm group, or use --accel tcg")
        return requested
    cache = cache_dir("accel") / "probe.json"
    key = _cache_key(qemu, kernel)
    try:
        known = json.loads(cache.read_text())
        if known.get("key") == key:
            return str(known["accel"])
    except (OSError, ValueError, KeyError):
        pass
    works = os.access("/dev/kvm", os.R_OK | os.W_OK) and _probe_kvm(qemu, kernel)
    accel = "kvm" if works else "tcg"
    why = "KVM boots the VM kernel" if works else "KVM missing, failing or hung within " \
        f"{PROBE_TIMEOUT_S:.0f} s: TCG, slower"
    print(f"cimages: vm accelerator: {accel} ({why}; cached in {cache})", file=sys.stderr)
    write_atomic(cache, json.dumps({"key": key, "accel": accel}))
    return accel
