"""The VM kernel as an uncompressed ELF with a PVH entry point, extracted from Debian's bzImage.

A bzImage decompresses itself before it starts, and under TCG that alone takes seconds (about
3.5 s for Debian's xz-compressed 6.1 kernel; trixie's and forky's are zstd-compressed, and
booting their vmlinux brought Docker ready 2-4 s sooner). QEMU boots an ELF kernel that
carries a PVH entry note directly, with no decompressor and no real-mode set-up: the kernel
prints its first line 0.4 s after QEMU starts instead of 4 s. Kernels whose payload Python
cannot decompress, or that lack the note, are booted as the bzImage they are.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard

from framework.atomic import write_atomic
from framework.vm.cache import cache_dir

# Linux boot protocol (Documentation/arch/x86/boot.rst): where the compressed payload lies.
SETUP_SECTS = 0x1F1
HEADER_MAGIC = (0x202, b"HdrS")
PAYLOAD = 0x248  # payload_offset, payload_length: u32 each, relative to the protected-mode code
# Decompressor objects, as they stop at the end of their stream: the payload ends with the
# decompressed size, which one-shot decompress() would reject as trailing garbage.
DECOMPRESSORS: dict[bytes, Callable[[], Any]] = {
    b"\xfd7zXZ\x00": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ),
    b"\x1f\x8b": lambda: zlib.decompressobj(wbits=31),
    b"BZh": bz2.BZ2Decompressor,
    b"\x5d\x00\x00": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE),
    b"\x28\xb5\x2f\xfd": lambda: zstandard.ZstdDecompressor().decompressobj(),
}
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18


def _payload(bzimage: bytes) -> bytes | None:
    offset, magic = HEADER_MAGIC
    if bzimage[offset:offset + len(magic)] != magic:
        return None
    setup_sects = bzimage[SETUP_SECTS] or 4
    start = (setup_sects + 1) * 512
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, PAYLOAD)
    return bzimage[start + payload_offset:start + payload_offset + payload_length]


def _decompress(payload: bytes) -> bytes | None:
    for magic, decompressor in DECOMPRESSORS.items():
        if payload.startswith(magic):
            try:
                return bytes(decompressor().decompress(payload))
            except (lzma.LZMAError, zlib.error, zstandard.ZstdError, OSError, EOFError,
                    ValueError):
                return None
    return None  # lz4, lzo: booted as the bzImage


def has_pvh_entry(elf: bytes) -> bool:
    """True if the 64-bit ELF `elf` has Xen's PHYS32_ENTRY note, which QEMU boots via PVH."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + index * phentsize)
        if p_type != PT_NOTE:
            continue
        at, end = p_offset, p_offset + p_filesz
        while at + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, at)
            name = elf[at + 12:at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def bootable(bzimage: Path) -> Path:
    """The fastest-booting form of `bzimage`, in the cache: its PVH vmlinux, or a copy of
    it (the image it came from need not stay)."""
    data = bzimage.read_bytes()
    # The formats this code decompresses are in the key: a kernel copied as a bzImage for
    # want of one is looked at again once it is supported.
    key = hashlib.sha256(data + b"".join(DECOMPRESSORS)).hexdigest()[:24]
    folder = cache_dir("kernels")
    vmlinux, copy = folder / f"{key}.vmlinux", folder / f"{key}.bzimage"
    for made in (vmlinux, copy):
        if made.exists():
            return made
    payload = _payload(data)
    elf = _decompress(payload) if payload else None
    if elf is None or not has_pvh_entry(elf):
        write_atomic(copy, data)
        return copy
    write_atomic(vmlinux, elf)
    return vmlinux
