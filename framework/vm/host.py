"""The VM root: `framework/vm/docker-host.yaml` built by the builder, unpacked by the sandbox's
unpacker, turned into a kernel, an initramfs and a cached ext4 disk."""

from __future__ import annotations

import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from framework import cache
from framework.builder import build
from framework.cache import exclusive
from framework.errors import UserError
from framework.sandbox.rootfs import unpacked_root
from framework.vm import initramfs, rootdisk, vmlinux
from framework.vm.cache import cache_dir
from framework.vm.machine import VMRoot
from framework.vm.ssh import KeyPair

# Bumped when the disk recipe below changes, so cached disks are rebuilt.
DISK_RECIPE = "2"


def definition() -> Path:
    return Path(str(resources.files("framework.vm").joinpath("docker-host.yaml")))


def _module_index(root: Path, release: str, out: Path) -> list[Path]:
    """modules.dep & co. for the root's kernel, written by the image's own depmod (run through
    the image's dynamic loader, so the host needs no kmod); the builder runs no postinst."""
    # The cached root is shared and read-only to us: depmod gets a base directory whose
    # module folder links to the root's content and receives the indexes.
    modules = root / "usr/lib/modules" / release
    staging = out / "lib/modules" / release
    staging.mkdir(parents=True)
    for entry in modules.iterdir():
        (staging / entry.name).symlink_to(entry)
    loader = root / "usr/lib64/ld-linux-x86-64.so.2"
    kmod = root / "usr/bin/kmod"
    cmd = [str(loader), "--library-path", str(root / "usr/lib/x86_64-linux-gnu"),
           "--argv0", "depmod", str(kmod), "-b", str(out), release]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise UserError(f"depmod for the VM kernel {release} failed: {done.stderr.strip()}; "
                        "check that docker-host.yaml still lists kmod and linux-image-amd64")
    return sorted(p for p in staging.glob("modules.*") if not p.is_symlink())


def _add_files(disk: Path, folder: str, files: list[Path]) -> None:
    """Writes host files into a folder of an unmounted ext4 image (debugfs, no mount)."""
    script = [f"cd {folder}"] + [f"write {f} {f.name}" for f in files]
    done = subprocess.run(["debugfs", "-w", "-f", "-", str(disk)], input="\n".join(script),
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or "rror" in done.stderr:
        raise UserError(f"could not add module indexes to {disk}: {done.stderr.strip()}; "
                        f"delete {disk} and retry")


def _disk(root: Path, digest: str) -> Path:
    key = f"{digest.removeprefix('sha256:')[:32]}-r{DISK_RECIPE}"
    existing = cache_dir("disks") / f"{key}.ext4"
    cache.hold(existing)  # in use until this process ends: `cimages cache --gc` leaves it
    if existing.exists():
        return existing
    cache.release(existing)  # the same lock file: held shared, it would block exclusive()
    with exclusive(existing):
        if not existing.exists():
            release = initramfs.kernel_release(root)
            with tempfile.TemporaryDirectory(prefix="cimages-depmod-") as tmp:
                index = _module_index(root, release, Path(tmp))
                staged = rootdisk.root_disk(root, f"{key}.staged")
                _add_files(staged, f"/usr/lib/modules/{release}", index)
            staged.replace(existing)
    cache.hold(existing)
    return existing


def _keys(digest: str) -> tuple[KeyPair, KeyPair]:
    """The SSH user and host keys of VMs of this root (they live in its snapshot)."""
    folder = cache_dir("keys") / digest.removeprefix("sha256:")[:32]
    cache.hold(folder)
    folder.mkdir(exist_ok=True)
    user, host = folder / "user_ed25519", folder / "host_ed25519"
    for path, comment in ((user, "cimages-vm-user"), (host, "cimages-vm-host")):
        if not path.exists():
            KeyPair.generate(comment).save(path)
    return KeyPair.load(user), KeyPair.load(host)


def docker_host() -> VMRoot:
    """The VM root, built (or reused from the caches) from docker-host.yaml."""
    # Into the cache, not the caller's build/: a project using the plugin must not find
    # the Docker host's image (hundreds of MB) in its own tree.
    cache.hold(cache_dir("images") / "docker-host")
    result = build(definition(), cache_dir("images") / "docker-host")
    root = unpacked_root(result.layers, result.digest)
    init = list(result.config["image"]["entryPoint"] or [])
    if not init:
        raise UserError("docker-host.yaml has no entry point: it needs its s6 services "
                        "(the s6 init becomes the entry point)")
    user_key, host_key = _keys(result.digest)
    vm_root = VMRoot(digest=result.digest, kernel=vmlinux.bootable(initramfs.kernel(root)),
                     initramfs=initramfs.build(root), disk=_disk(root, result.digest),
                     init=init, user_key=user_key, host_key=host_key)
    cache.hold(vm_root.kernel)
    cache.hold(vm_root.initramfs)
    return vm_root
