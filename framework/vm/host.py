"""The VM root: `framework/vm/docker-host.yaml` built by the builder, unpacked by the sandbox's
unpacker, turned into a kernel, an initramfs and a cached ext4 disk."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from framework import cache
from framework.atomic import write_atomic
from framework.builder.current import build_current
from framework.cache import exclusive
from framework.errors import UserError
from framework.sandbox.rootfs import prune_pool, unpacked_root
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


def _disk_path(digest: str) -> Path:
    return cache_dir("disks") / f"{digest.removeprefix('sha256:')[:32]}-r{DISK_RECIPE}.ext4"


def _disk(root: Path, digest: str) -> Path:
    existing = _disk_path(digest)
    key = existing.stem
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
    # the Docker host's image (hundreds of MB) in its own tree. No docker-archive: nothing
    # loads this image into a Docker.
    cache.hold(cache_dir("images") / "docker-host")
    result = build_current(definition(), cache_dir("images") / "docker-host",
                           cache_dir("images") / "docker-host-current", archive=False)
    init = list(result.config["image"]["entryPoint"] or [])
    if not init:
        raise UserError("docker-host.yaml has no entry point: it needs its s6 services "
                        "(the s6 init becomes the entry point)")
    kernel, initrd, disk = _boot_files(result.layers, result.digest)
    user_key, host_key = _keys(result.digest)
    return VMRoot(digest=result.digest, kernel=kernel, initramfs=initrd, disk=disk, init=init,
                  user_key=user_key, host_key=host_key)


def _write_record(record: Path, files: tuple[Path, Path, Path]) -> None:
    write_atomic(record, json.dumps({"kernel": files[0].name, "initramfs": files[1].name}))


def _boot_files(layers: list[Path], digest: str) -> tuple[Path, Path, Path]:
    """The kernel, initramfs and root disk of the root with this digest. Made from the
    unpacked root, which then goes (550 MB of cache the disk holds again): a record beside
    the disk names the other two, so a later session needs no root."""
    record = _disk_path(digest).with_suffix(".json")
    with contextlib.suppress(OSError, ValueError, KeyError):
        known = json.loads(record.read_text())
        files = (cache_dir("kernels") / known["kernel"],
                 cache_dir("initramfs") / known["initramfs"], _disk_path(digest))
        if files[0].suffix == ".bzimage" and files[0].is_file():
            # Kept as a bzImage for want of its payload's format: supported since, maybe.
            kernel = vmlinux.bootable(files[0])
            if kernel != files[0]:
                files = (kernel, *files[1:])
                _write_record(record, files)
        for file in files:
            cache.hold(file)
        if all(file.is_file() for file in files):
            return files
    root = unpacked_root(layers, digest)
    files = (vmlinux.bootable(initramfs.kernel(root)), initramfs.build(root),
             _disk(root, digest))
    for file in files:
        cache.hold(file)
    _write_record(record, files)
    cache.drop(root)
    prune_pool(older_than_s=0)  # its files, unless another root shares them
    return files
