"""Pure parts of the VM tier: the initramfs cpio writer, PPM->PNG, the
accelerator override, the kernel's PVH extraction, Docker name checks and the docker_host
tunnel's socket side. (Booting is covered by vmtests/.)"""

from __future__ import annotations

import lzma
import socket
import stat
import struct
import threading
import zlib
from pathlib import Path

import pytest
import zstandard

from framework.errors import UserError
from framework.vm import cpio, vmlinux
from framework.vm.accel import select_accel
from framework.vm.docker import DockerTunnel, demux_logs, docker_name
from framework.vm.png import ppm_to_png


def parse_newc(data: bytes) -> list[tuple[str, int, bytes]]:
    entries, pos = [], 0
    while True:
        header = data[pos:pos + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_end = pos + 110 + namesize
        name = data[pos + 110:name_end - 1].decode()
        body = name_end + (-name_end % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append((name, mode, data[body:body + size]))
        pos = body + size + (-(body + size) % 4)


def test_cpio_newc_round_trip():
    archive = cpio.archive([cpio.directory("bin"), cpio.file("bin/tool", b"abc", 0o755),
                            cpio.symlink("bin/sh", "tool"), cpio.file("init", b"#!/bin/sh\n")])
    assert parse_newc(archive) == [
        ("bin", 0o40755, b""), ("bin/tool", 0o100755, b"abc"), ("bin/sh", 0o120777, b"tool"),
        ("init", 0o100644, b"#!/bin/sh\n")]
    assert len(archive) % 4 == 0


def test_ppm_to_png_keeps_pixels():
    pixels = bytes(range(2 * 2 * 3))
    png = ppm_to_png(b"P6\n2 2\n255\n" + pixels)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (2, 2)
    idat_len = struct.unpack(">I", png[33:37])[0]
    raw = zlib.decompress(png[41:41 + idat_len])
    assert raw == b"\0" + pixels[:6] + b"\0" + pixels[6:]


def test_accel_override_is_checked(tmp_path: Path):
    assert select_accel(tmp_path / "vmlinuz", "tcg") == "tcg"
    with pytest.raises(UserError, match="--accel kvm or --accel tcg"):
        select_accel(tmp_path / "vmlinuz", "hvf")


def test_log_stream_demultiplexed():
    def frame(stream: int, data: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    assert demux_logs(frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"")) == "out\nerr\n"
    assert demux_logs(b"") == ""
    assert demux_logs(b"a TTY's raw log\n") == "a TTY's raw log\n"


def elf_with_note(note_type: int) -> bytes:
    note = struct.pack("<III", 4, 4, note_type) + b"Xen\0" + struct.pack("<I", 0x1000000)
    header = b"\x7fELF\x02\x01\x01".ljust(0x20, b"\0") + struct.pack("<Q", 64)
    header = header.ljust(0x36, b"\0") + struct.pack("<HH", 56, 1)
    program = struct.pack("<IIQQQQQQ", 4, 4, 120, 0, 0, len(note), len(note), 4)
    return header.ljust(64, b"\0") + program + note


def bzimage(kernel: bytes, compress: str = "xz") -> bytes:
    """A bzImage-shaped file: boot header, then the compressed payload and its size, as
    Linux has."""
    if compress == "xz":
        payload = lzma.compress(kernel, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    else:
        payload = zstandard.ZstdCompressor().compress(kernel)
    payload += struct.pack("<I", len(kernel))
    setup = bytearray(5 * 512)
    setup[0x1F1] = 4
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", setup, 0x248, 16, len(payload))
    return bytes(setup) + b"decompressor" + b"\0" * 4 + payload + b"trailer"


@pytest.mark.parametrize("compress", ["xz", "zstd"])  # bookworm's kernel; trixie's on
def test_kernel_with_pvh_note_is_booted_uncompressed(tmp_path: Path, compress: str,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CIMAGES_CACHE", str(tmp_path / "cache"))
    kernel = elf_with_note(vmlinux.XEN_ELFNOTE_PHYS32_ENTRY)
    image = tmp_path / "vmlinuz"
    image.write_bytes(bzimage(kernel, compress))
    booted = vmlinux.bootable(image)
    assert booted != image and booted.read_bytes() == kernel
    assert vmlinux.bootable(image) == booted


def test_kernel_without_pvh_note_stays_a_bzimage_copied_into_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CIMAGES_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "vmlinuz"
    image.write_bytes(bzimage(elf_with_note(note_type=1)))
    booted = vmlinux.bootable(image)
    assert booted.read_bytes() == image.read_bytes()
    image.unlink()  # the root it came from may go
    assert vmlinux.bootable(booted) == booted  # remembered, not decompressed again


@pytest.mark.parametrize("name", ["app", "backend-1", "a.b_c", "0web", "x"])
def test_docker_names_accepted(name: str):
    assert docker_name("network", name) == name


@pytest.mark.parametrize("name", ["", "-app", "_x", ".x", "a b", "a;rm -rf /", "a/b", "$(id)",
                                  "nom\u00e9", "a\nb"])
def test_docker_names_refused(name: str):
    with pytest.raises(UserError, match="invalid container name"):
        docker_name("container", name)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_docker_tunnel_carries_each_connection_with_half_close():
    """A client's request, ended by a half-close, reaches the remote side whole and the reply
    comes back; the socket is private to the user and goes with close()."""
    served: list[bytes] = []

    def fake_dockerd(end: socket.socket) -> None:
        request = _read_all(end)  # until the client's half-close arrives as EOF
        served.append(request)
        end.sendall(b"reply to " + request)
        end.close()

    def connect() -> socket.socket:
        ours, theirs = socket.socketpair()
        threading.Thread(target=fake_dockerd, args=(theirs,), daemon=True).start()
        return ours

    tunnel = DockerTunnel(connect)
    try:
        assert tunnel.url == f"unix://{tunnel.path}"
        assert stat.S_IMODE(tunnel.folder.stat().st_mode) == 0o700
        big = b"x" * 300_000  # more than one buffer each way
        for body in (b"GET /_ping", big):
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(10)
                client.connect(str(tunnel.path))
                client.sendall(body)
                client.shutdown(socket.SHUT_WR)
                assert _read_all(client) == b"reply to " + body
        assert served == [b"GET /_ping", big]
    finally:
        tunnel.close()
    assert not tunnel.folder.exists()
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(OSError):
        client.connect(str(tunnel.path))


def test_docker_tunnel_closes_the_client_when_the_vm_is_gone():
    def connect() -> socket.socket:
        raise AssertionError("the VM is not running")

    tunnel = DockerTunnel(connect)
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(10)
            client.connect(str(tunnel.path))
            assert client.recv(10) == b""
    finally:
        tunnel.close()


def _fake_module(depends: str) -> bytes:
    """A minimal ELF64 with a .shstrtab and a .modinfo section, as kmods.modinfo reads."""
    import struct

    shstrtab = b"\0.shstrtab\0.modinfo\0"
    modinfo_data = f"license=GPL\0depends={depends}\0".encode()
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    body = shstrtab + modinfo_data
    shoff = 64 + len(body)
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 1)
    sections = bytes(64)  # the null section
    for name, offset, size in ((1, 64, len(shstrtab)), (11, 64 + len(shstrtab), len(modinfo_data))):
        entry = bytearray(64)
        struct.pack_into("<I", entry, 0, name)
        struct.pack_into("<QQ", entry, 0x18, offset, size)
        sections += bytes(entry)
    return bytes(header) + body + sections


def test_modules_are_found_compressed_or_built_in_and_come_out_plain(tmp_path):
    import lzma

    import zstandard

    from framework.vm import kmods

    tree = tmp_path / "kernel" / "drivers"
    tree.mkdir(parents=True)
    (tree / "virtio-rng.ko.xz").write_bytes(lzma.compress(_fake_module("rng_core")))
    (tree / "rng_core.ko.zst").write_bytes(zstandard.ZstdCompressor().compress(_fake_module("")))
    (tree / "ext4.ko").write_bytes(_fake_module("virtio_pci,mbcache"))
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n"
                                             "kernel/fs/mbcache.ko\n")
    order = kmods.load_order(tmp_path, ["virtio_rng", "ext4", "crc32c_generic"],
                             optional=frozenset({"crc32c_generic"}))
    assert [m.filename for m in order] == ["rng_core.ko", "virtio-rng.ko", "ext4.ko"]
    assert all(m.elf().startswith(b"\x7fELF") for m in order)
    with pytest.raises(FileNotFoundError, match=r"neither a module file nor in modules\.builtin"):
        kmods.load_order(tmp_path, ["missing"])


def test_the_kernel_image_is_found_in_boot_or_beside_its_modules(tmp_path):
    from framework.vm import initramfs

    (tmp_path / "lib" / "modules" / "7.0-amd64").mkdir(parents=True)
    beside = tmp_path / "usr" / "lib" / "modules" / "7.0-amd64"
    beside.mkdir(parents=True)
    (beside / "vmlinuz").write_bytes(b"kernel")
    assert initramfs.kernel(tmp_path) == beside / "vmlinuz"
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-7.0-amd64").write_bytes(b"kernel")
    assert initramfs.kernel(tmp_path) == tmp_path / "boot" / "vmlinuz-7.0-amd64"
