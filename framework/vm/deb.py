"""Reads members of a Debian package's data archive without dpkg.

Interim: the builder owns package download and unpacking for images; the VM tier only needs
a file or two from busybox-static for its initramfs, so this stays tiny.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from framework.errors import UserError
from framework.vm.cache import cache_dir


def _ar_members(data: bytes) -> dict[str, bytes]:
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def _data_tar(deb: Path) -> tarfile.TarFile:
    members = _ar_members(deb.read_bytes())
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise UserError(f"{deb} has no data archive: delete it so it is downloaded again")
    payload = members[name]
    if name.endswith(".zst"):
        import zstandard

        payload = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    return tarfile.open(fileobj=io.BytesIO(payload))


def read_member(deb: Path, path: str) -> bytes:
    """The bytes of `path` (e.g. "bin/busybox") inside the package's data archive."""
    with _data_tar(deb) as tar:
        member = tar.extractfile(f"./{path}")
        if member is None:
            raise UserError(f"{deb} has no {path}")
        return member.read()


def download(package: str) -> Path:
    """The .deb of the host's candidate version of `package`, downloaded once into the cache."""
    folder = cache_dir("debs")
    found = sorted(folder.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    done = subprocess.run(["apt-get", "download", "-q", package], cwd=folder,
                          capture_output=True, text=True, timeout=300, check=False)
    found = sorted(folder.glob(f"{package}_*.deb"))
    if done.returncode != 0 or not found:
        raise UserError(f"could not download {package} with apt-get: {done.stderr.strip()}; "
                        "check the network and the host's apt sources (apt-get update)")
    return found[-1]
