"""Kernel module dependencies read from each .ko's .modinfo section (no depmod needed)."""

from __future__ import annotations

import struct
from pathlib import Path


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


def load_order(modules_dir: Path, wanted: list[str]) -> list[Path]:
    """Paths of `wanted` modules and their dependencies, dependencies first."""
    by_name = {p.name.removesuffix(".ko").replace("-", "_"): p
               for p in modules_dir.rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        path = by_name.get(name)
        if path is None:
            raise FileNotFoundError(f"kernel module {name} not found in {modules_dir}")
        for dep in filter(None, modinfo(path.read_bytes()).get("depends", "").split(",")):
            visit(dep)
        order.append(path)

    for name in wanted:
        visit(name)
    return order
