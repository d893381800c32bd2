"""The VM's initramfs: busybox (from Debian's busybox-static), a few drivers and init.sh.

Built in Python as a newc cpio, cached by kernel release and the content that goes in.
"""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path

from framework.atomic import write_atomic
from framework.builder.current import build_current
from framework.sandbox.rootfs import unpacked_root
from framework.vm import cpio, kmods
from framework.vm.cache import cache_dir

# Enough to find and mount the root disk, reach the network and the agent's port; the
# rest of the modules are loaded from the root itself (kmod is in the VM image).
TOOLS = Path(__file__).with_name("initramfs-tools.yaml")
# Loaded here so that the booted snapshot has them: else every test's first container
# (veth), published port or user-defined network (xt_nat, xt_tcpudp: the DNAT rules) has
# the kernel run modprobe, an exec of kmod and an xz decompression in the guest, 0.2-0.3 s
# each under TCG. A kernel without one of them loads it when asked, as before.
PRELOADED = ["veth", "xt_nat", "xt_tcpudp"]
MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "virtio_console",
           "crc32c_generic", "ext4", "overlay", *PRELOADED]
# Newer kernels dropped crc32c_generic (crc32c is a library there); ext4 finds its checksum
# either way.
OPTIONAL_MODULES = frozenset({"crc32c_generic", *PRELOADED})


def kernel_release(root: Path) -> str:
    releases = sorted(p.name for p in (root / "lib" / "modules").iterdir() if p.is_dir())
    if not releases:
        raise FileNotFoundError(f"no kernel modules in {root}/lib/modules")
    return releases[-1]


def kernel(root: Path) -> Path:
    """Debian's kernel image: /boot/vmlinuz-R, or /usr/lib/modules/R/vmlinuz on releases
    (forky) that keep it beside its modules."""
    release = kernel_release(root)
    for path in (root / "boot" / f"vmlinuz-{release}",
                 root / "usr" / "lib" / "modules" / release / "vmlinuz"):
        if path.is_file():
            return path
    raise FileNotFoundError(f"no kernel image for {release} in {root}/boot or beside its modules")


def build(root: Path) -> Path:
    """The path of the gzip'd initramfs for the kernel found in the VM root `root`."""
    release = kernel_release(root)
    modules_dir = root / "lib" / "modules" / release
    init = resources.files("framework.vm").joinpath("init.sh").read_bytes()
    # Into the cache, not the caller's tree.
    tools = build_current(TOOLS, cache_dir("images") / "initramfs-tools",
                          cache_dir("images") / "initramfs-tools-current")
    key = hashlib.sha256(b"\0".join([release.encode(), init, tools.digest.encode(),
                                     " ".join(MODULES).encode()])).hexdigest()[:20]
    out = cache_dir("initramfs") / f"{release}-{key}.cpio.gz"
    if out.exists():
        return out
    order = kmods.load_order(modules_dir, MODULES, OPTIONAL_MODULES)
    entries = [cpio.directory(d) for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules")]
    busybox = (unpacked_root(tools.layers, tools.digest) / "usr/bin/busybox").read_bytes()
    entries += [cpio.file("bin/busybox", busybox, 0o755),
                cpio.symlink("bin/sh", "busybox"),
                cpio.file("init", init, 0o755),
                cpio.file("modules.order",
                          "".join(f"{m.filename}\n" for m in order).encode())]
    entries += [cpio.file(f"lib/modules/{m.filename}", m.elf()) for m in order]
    write_atomic(out, gzip.compress(cpio.archive(entries), compresslevel=1, mtime=0))
    return out
