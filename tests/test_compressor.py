"""The layers' gzip: pinned bytes (a new compressor version fails here first), standard
gzip, the same output on other CPUs, and the compressor named where digests are recorded."""

import gzip
import hashlib
import io
import platform
import shutil
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from framework.builder import layercache
from framework.builder.check import first_difference
from framework.builder.compressor import COMPRESSOR, gzip_compress
from framework.builder.layer import Entry, write_layer
from framework.builder.lockfile import Lock, LockedPackage, read_lock, write_lock
from framework.builder.sources import DebianSources

ROOT = Path(__file__).resolve().parent.parent
# Text and incompressible bytes, the two kinds a layer holds (both take other code paths).
SAMPLE = (b"#!/bin/sh\nexec /usr/bin/hello \"$@\"\n" * 2000
          + b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(4000)))
# Pinned: a new `deflate` (libdeflate) version gives other bytes, so every layer digest in
# the committed locks moves. Update these together with the locks (`cimages build`).
SAMPLE_GZIP_SHA256 = "9a592f6ac9f15d23dd25747e4a87d17d0e20778668b621281ce61df1820fe7bc"
LAYER_DIGEST = "sha256:a58a57b5413ad985c539a3ad3eacfb9a5dbcb55c7d6ae732564029d2f77a6567"


def entries() -> list[Entry]:
    script = b"#!/bin/sh\necho hello\n"
    return [Entry("usr/bin/hello", "file", 0o755, size=len(script), data=script),
            Entry("usr/bin/hi", "hardlink", 0o755, link="usr/bin/hello"),
            Entry("etc/motd", "file", 0o644, size=3, data=memoryview(b"hi\n")),
            Entry("usr/lib/sh", "symlink", 0o777, link="../bin/hello"),
            Entry("var/www", "dir", 0o750, 33, 33)]


def test_the_gzip_is_the_pinned_bytes_twice_and_standard_gzip():
    one, two = gzip_compress(SAMPLE), gzip_compress(bytearray(SAMPLE))
    assert one == two
    assert hashlib.sha256(one).hexdigest() == SAMPLE_GZIP_SHA256, COMPRESSOR
    assert gzip.decompress(one) == SAMPLE
    # One member, no name, MTIME 0, OS "unknown": nothing from the host or the time.
    assert one[:4] == b"\x1f\x8b\x08\x00" and one[4:8] == b"\0\0\0\0" and one[9] == 255
    whole = zlib.decompressobj(wbits=31)
    assert whole.decompress(bytes(one)) == SAMPLE and whole.eof and not whole.unused_data


def test_a_layer_of_known_entries_has_the_pinned_digest(tmp_path):
    blob = write_layer(entries(), 1, tmp_path)
    assert blob.digest == LAYER_DIGEST, COMPRESSOR


def test_the_tar_is_byte_for_byte_what_tarfiles_writer_gives(tmp_path):
    """So the diff_ids did not move with the compressor: only the gzip around them did."""
    blob = write_layer(entries(), 1, tmp_path)
    tar = gzip.decompress(blob.path.read_bytes())
    written = io.BytesIO()
    with tarfile.open(fileobj=written, mode="w|", format=tarfile.PAX_FORMAT) as out, \
            tarfile.open(fileobj=io.BytesIO(tar)) as ours:
        for member in ours:
            data = ours.extractfile(member) if member.isfile() else None
            out.addfile(member, data)
    assert written.getvalue() == tar
    assert blob.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()


EMULATED = ("qemu64", "Nehalem", "Haswell")  # no SSE4.2 nor PCLMUL; SSE4.2; AVX2


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None or platform.machine() != "x86_64",
                    reason="needs x86-64 and qemu-x86_64 (qemu-user: make setup installs it)")
@pytest.mark.parametrize("cpu", EMULATED)
def test_other_cpus_give_the_same_bytes(cpu):
    """libdeflate dispatches on CPU features only for checksums: the compressed bytes under an
    emulated CPU without SSE4.2, PCLMUL or AVX2 are this machine's."""
    code = ("import sys; from framework.builder.compressor import gzip_compress; "
            "sys.stdout.buffer.write(gzip_compress(sys.stdin.buffer.read()))")
    done = subprocess.run(["qemu-x86_64", "-cpu", cpu, sys.executable, "-c", code],
                          cwd=ROOT, input=SAMPLE, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == gzip_compress(SAMPLE)


def test_the_layer_cache_key_changes_with_the_compressor(monkeypatch):
    key = layercache.key_of(["packages", 1, []])
    monkeypatch.setattr(layercache, "COMPRESSOR", "libdeflate (deflate 9.9.9) gzip level 1")
    assert layercache.key_of(["packages", 1, []]) != key


def package(name: str, layer: str | None) -> LockedPackage:
    return LockedPackage(name, "1", "amd64", "0" * 64, 1, 1, f"http://x/{name}.deb",
                         layer=layer)


def test_the_lock_names_the_compressor_of_its_layers(tmp_path):
    sources = DebianSources.from_lock(None)
    old = Lock(["a"], [package("a", "sha256:" + "1" * 64), package("b", "sha256:" + "2" * 64)],
               sources, compressor=None)
    new = old.with_layers({"a": "sha256:" + "3" * 64}, COMPRESSOR)
    assert new.compressor == COMPRESSOR
    # b's digest was made by another compressor and not rebuilt: it is not relabelled.
    assert [p.layer for p in new.packages] == ["sha256:" + "3" * 64, None]
    again = new.with_layers({}, COMPRESSOR)
    assert again.packages == new.packages
    path = tmp_path / "x.lock"
    write_lock(path, new, tmp_path / "x.yaml")
    assert f"\ncompressor: {COMPRESSOR}\npackages:\n" in path.read_text()
    assert read_lock(path) == new


def test_check_names_both_compressors_when_only_the_gzip_differs(tmp_path):
    new = write_layer(entries(), 1, tmp_path).path
    old = tmp_path / "old"
    old.write_bytes(gzip.compress(gzip.decompress(new.read_bytes()), compresslevel=9, mtime=0))
    said = first_difference(old, new, None)
    assert said.startswith("the tar entries are the same; the compression differs")
    assert "host's zlib" in said and COMPRESSOR in said
    other = "libdeflate (deflate 0.1.0) gzip level 1"
    said = first_difference(old, new, other)
    assert other in said and COMPRESSOR in said
