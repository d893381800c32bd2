"""Builder timings for images/nginx.yaml, next to mmdebstrap on the same cached .debs.

- cold: every .deb cached, no layer cached (a fresh CIMAGES_CACHE whose debs/ is the real one);
- warm: the same build again, nothing changed;
- etcChange: one environment.etc file changed, so only the generated layer is rewritten;
- mmdebstrap from a local `copy:` repository (apt-ftparchive) of the same .debs, to a tar:
  `extract` unpacks exactly our package set (no maintainer scripts, like us); `custom`
  installs it with dpkg and its maintainer scripts, which cannot run without Debian's
  Essential set, so that run includes `?essential` too (a working Debian root, for scale).

The cold builds and the `extract` runs alternate, so a busy spell of a shared machine falls
on both; each also reports its CPU seconds (user + system, with child processes), which
another load on the machine changes much less than the wall time.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framework.bench.subject import current_lock, variant
from framework.builder import build
from framework.builder.apt import PrivateApt
from framework.builder.compressor import COMPRESSOR
from framework.builder.download import cached_deb, download
from framework.builder.lockfile import LockedPackage
from framework.cache import fresh_root, using

MMDEBSTRAP_TIMEOUT = 900


def _median(times: list[float]) -> float:
    return round(statistics.median(times), 3)


def _with(root: Path, action: Callable[[], Any]) -> Any:
    with using(root):
        return action()


def _cpu() -> float:
    """CPU seconds of this process and of its children that ended (workers, mmdebstrap)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(action: Callable[[], Any]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _measured(action: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds of `action`."""
    cpu = _cpu()
    wall = _timed(action)
    return wall, _cpu() - cpu


def _local_repo(directory: Path, packages: list[LockedPackage]) -> str:
    directory.mkdir()
    for p in packages:
        name = f"{p.name}_{p.version.replace(':', '%3a')}_{p.architecture}.deb"
        try:
            os.link(cached_deb(p), directory / name)
        except OSError:  # the cache on another file system
            shutil.copyfile(cached_deb(p), directory / name)
    packages_file = subprocess.run(["apt-ftparchive", "packages", "."], cwd=directory,
                                   capture_output=True, check=True, timeout=300).stdout
    (directory / "Packages").write_bytes(packages_file)
    return f"deb [trusted=yes] copy://{directory} ./"


def _mmdebstrap(variant: str, packages: list[LockedPackage], repo: str, out: Path
                ) -> dict[str, Any]:
    command = ["mmdebstrap", f"--variant={variant}", "--mode=root", "--format=tar", "-q",
               "--include=" + ",".join(p.name for p in packages), "bookworm", str(out), repo]
    cpu = _cpu()
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=MMDEBSTRAP_TIMEOUT)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:], "packages": len(packages)}
    return {"seconds": round(seconds, 3), "cpuSeconds": round(_cpu() - cpu, 3),
            "packages": len(packages), "tarBytes": out.stat().st_size}


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One mmdebstrap result of several runs: the median times, or the first error."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    return {**runs[0], "seconds": _median([r["seconds"] for r in runs]),
            "cpuSeconds": _median([r["cpuSeconds"] for r in runs]),
            "runs": [r["seconds"] for r in runs]}


def _ratio(theirs: dict[str, Any], key: str, ours: float) -> float | None:
    return round(theirs[key] / ours, 2) if key in theirs else None


def run() -> dict[str, Any]:
    lock = current_lock()
    debs_dir = download(lock.packages)[lock.packages[0].name].parent
    with tempfile.TemporaryDirectory(prefix="cimages-bench-") as tmp_name:
        tmp = Path(tmp_name)
        essential = PrivateApt(lock.sources).resolve([*lock.request, "?essential"])
        download(essential)
        repo = _local_repo(tmp / "repo", list({p.sha256: p for p in
                                               [*lock.packages, *essential]}.values()))
        definition = variant(tmp, "one\n")
        cold, extracts = [], []
        for attempt in range(3):
            cache = fresh_root(tmp / f"cache-{attempt}", debs_dir)
            out = tmp / f"out-{attempt}"
            cold.append(_measured(functools.partial(
                _with, cache, functools.partial(build, definition, out, frozen=True))))
            extracts.append(_mmdebstrap("extract", lock.packages, repo,
                                        tmp / f"extract-{attempt}.tar"))
        warm, etc_change = [], []
        for attempt in range(5):
            warm.append(_timed(lambda: _with(
                cache, lambda: build(definition, out, frozen=True))))
            variant(tmp, f"change {attempt}\n")
            etc_change.append(_timed(lambda: _with(
                cache, lambda: build(definition, out, frozen=True))))
        result = _with(cache, lambda: build(definition, out, frozen=True))
        installed = sum(p.installed_size for p in lock.packages) * 1024
        uncompressed = sum(_tar_size(p) for p in result.layers)
        custom = _mmdebstrap("custom", essential, repo, tmp / "custom.tar")
    ours, ours_cpu = _median([wall for wall, _ in cold]), _median([cpu for _, cpu in cold])
    extract = _medians(extracts)
    return {
        "image": "images/nginx.yaml",
        "packages": len(lock.packages),
        "layers": len(result.layers),
        "coldBuildSeconds": ours,
        "coldBuildCpuSeconds": ours_cpu,
        "coldBuildRuns": [round(wall, 3) for wall, _ in cold],
        "warmRebuildSeconds": _median(warm),
        "etcChangeRebuildSeconds": _median(etc_change),
        "imageBytesCompressed": result.size,
        "imageBytesUncompressed": uncompressed,
        "packagesInstalledBytes": installed,
        "layerCompressor": COMPRESSOR,
        "mmdebstrapExtractSameSet": extract,
        "mmdebstrapCustomWithEssential": custom,
        "speedupVsMmdebstrapExtract": _ratio(extract, "seconds", ours),
        "speedupVsMmdebstrapExtractCpu": _ratio(extract, "cpuSeconds", ours_cpu),
        "speedupVsMmdebstrapCustom": _ratio(custom, "seconds", ours),
    }


def _tar_size(blob: Path) -> int:
    done = subprocess.run(["gzip", "-l", "-q", str(blob)], capture_output=True, text=True,
                          check=True, timeout=60)
    return int(done.stdout.split()[1])
