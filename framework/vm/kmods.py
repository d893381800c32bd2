"""Kernel module dependencies read from each module's .modinfo section (no depmod needed).

Debian's kernels differ by release: bookworm ships plain `.ko` files, trixie and later
compress them (`.ko.xz`, or `.ko.zst`), and build more drivers in (listed in
`modules.builtin`, which then need no loading). Modules are found in any of these forms and
handed out decompressed, since the initramfs's busybox insmod reads plain ELF only.
"""

from __future__ import annotations

import gzip
import lzma
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _plain(data: bytes) -> bytes:
    return data


# Module file endings and how each is read, longest first.
SUFFIXES = {".ko.xz": lzma.decompress, ".ko.zst": _zstd, ".ko.gz": gzip.decompress,
            ".ko": _plain}


def _split(filename: str) -> tuple[str, Callable[[bytes], bytes]] | None:
    """A module file's stem (`virtio-rng`) and how to read it; None for other files."""
    for suffix, decompress in SUFFIXES.items():
        if filename.endswith(suffix):
            return filename.removesuffix(suffix), decompress
    return None


@dataclass(frozen=True)
class Module:
    stem: str  # the file name without its endings, as on disk: `virtio-rng`
    path: Path
    decompress: Callable[[bytes], bytes]

    @property
    def name(self) -> str:
        """As modprobe spells it: dashes as underscores."""
        return self.stem.replace("-", "_")

    @property
    def filename(self) -> str:
        """Its file name once decompressed (`virtio-rng.ko`)."""
        return f"{self.stem}.ko"

    def elf(self) -> bytes:
        """The module's ELF bytes, decompressed."""
        return self.decompress(self.path.read_bytes())


def modinfo(ko: bytes) -> dict[str, str]:
    """Key=value pairs of an ELF64 kernel module's .modinfo section."""
    shoff, = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name, = struct.unpack_from("<I", ko, base)
        offset, size = struct.unpack_from("<QQ", ko, base + 0x18)
        return name, offset, size

    _, strtab, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        if ko[strtab + name:].split(b"\0", 1)[0] == b".modinfo":
            pairs = (e.split(b"=", 1) for e in ko[offset:offset + size].split(b"\0") if b"=" in e)
            return {k.decode(): v.decode(errors="replace") for k, v in pairs}
    return {}


def builtin(modules_dir: Path) -> set[str]:
    """Names of the modules built into the kernel (`modules.builtin`)."""
    listed = modules_dir / "modules.builtin"
    if not listed.is_file():
        return set()
    return {split[0].replace("-", "_") for line in listed.read_text().split()
            if (split := _split(Path(line).name))}


def load_order(modules_dir: Path, wanted: list[str], optional: frozenset[str] = frozenset()
               ) -> list[Module]:
    """`wanted` modules and their dependencies, dependencies first; built-in ones need no
    loading, and an `optional` one this kernel does not have is left out."""
    modules = [Module(split[0], p, split[1]) for p in sorted(modules_dir.rglob("*.ko*"))
               if (split := _split(p.name))]
    found = {m.name: m for m in modules}
    inside = builtin(modules_dir)
    order: list[Module] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen or name in inside:
            return
        seen.add(name)
        module = found.get(name)
        if module is None:
            if name in optional:
                return
            raise FileNotFoundError(f"kernel module {name} not found in {modules_dir} (neither "
                                    "a module file nor in modules.builtin)")
        for dep in filter(None, modinfo(module.elf()).get("depends", "").split(",")):
            visit(dep)
        order.append(module)

    for name in wanted:
        visit(name)
    return order
