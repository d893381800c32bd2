"""Fetching .debs into a content-addressed cache (`debs/<sha256>.deb`), in parallel,
each verified against the lock before it is used.

A Debian point release removes superseded .debs from the archive, which would break every
lock pinning them on a machine without them cached. A .deb the mirror no longer has is
fetched from snapshot.debian.org by name, version and architecture, through its
machine-readable API (`/mr/binary/NAME/VERSION/binfiles`, then `/file/HASH`), and checked
against the lock's sha256 like any other download.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from framework.builder import blobs
from framework.builder.lockfile import LockedPackage
from framework.builder.progress import Progress
from framework.cache import cache_dir
from framework.errors import UserError

PARALLEL = 6
TIMEOUT = 60  # seconds without a byte from the mirror
# A failed name lookup or a dropped connection is retried, as apt does (Acquire::Retries):
# seen once on this network while two pytest workers fetched ~200 .debs at once.
RETRY_DELAYS_S = (1.0, 3.0)
SNAPSHOT_URL = "https://snapshot.debian.org"


def snapshot_url() -> str:
    """CIMAGES_SNAPSHOT_URL names another snapshot service (a mirror of it, a test's)."""
    return os.environ.get("CIMAGES_SNAPSHOT_URL", SNAPSHOT_URL).rstrip("/")


def cached_deb(package: LockedPackage) -> Path:
    return cache_dir("debs") / f"{package.sha256}.deb"


class PackageGone(UserError):
    """A locked version is in neither the mirror nor the snapshot service (as reachable)."""

    def __init__(self, package: LockedPackage, message: str) -> None:
        self.package = package
        super().__init__(message)


class _Transient(Exception):
    """A network failure worth another attempt; the original error is its __cause__."""


class _Gone(Exception):
    """The server answers 404: it does not have this file."""


def _fetch(package: LockedPackage, progress: Progress) -> bool:
    """Puts the verified .deb in the cache; True when it came from the snapshot service."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return _fetch_once(package, progress)
        except _Transient as err:
            if delay is None:
                raise UserError(
                    f"cannot download {package.name} from {package.url} ({err.__cause__}), "
                    f"tried {len(RETRY_DELAYS_S) + 1} times: no network? check the connection "
                    "to the Debian mirror; builds with every .deb already cached need none"
                ) from err.__cause__
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _fetch_once(package: LockedPackage, progress: Progress) -> bool:
    try:
        _download_verified(package.url, package, progress)
        return False
    except _Gone:
        pass
    # The snapshot service is the last resort: when it cannot be reached, the error is
    # still that the archive lost the version, which `lock --update` fixes.
    try:
        for url in _snapshot_urls(package):
            try:
                _download_verified(url, package, progress)
                return True
            except _Gone:
                continue
        why = "does not have it either"
    except _Transient as err:
        why = f"could not be reached ({err.__cause__})"
    raise PackageGone(package, (
        f"{package.name} {package.version} is gone from the Debian archive ({package.url} "
        f"answers 404) and {snapshot_url()} {why}: the lock pins a superseded version; run "
        "`cimages lock --update FILE` to pin the current one"))


def _snapshot_urls(package: LockedPackage) -> list[str]:
    """Where the snapshot service keeps this name, version and architecture (none when it
    does not know them)."""
    base = snapshot_url()
    listing = (f"{base}/mr/binary/{quote(package.name, safe='')}/"
               f"{quote(package.version, safe='')}/binfiles")
    try:
        with urllib.request.urlopen(listing, timeout=TIMEOUT) as response:
            found = json.loads(response.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return []
        raise UserError(f"{listing} failed: HTTP {err.code}; retry later") from err
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise _Transient() from err
    except ValueError as err:
        raise UserError(f"{listing} did not answer JSON ({err}): is CIMAGES_SNAPSHOT_URL "
                        "a snapshot.debian.org service?") from err
    # The hash becomes part of a URL: only the hex digest the service documents is used.
    hashes = [entry.get("hash", "") for entry in found.get("result", [])
              if entry.get("architecture") == package.architecture]
    return [f"{base}/file/{h}" for h in hashes if re.fullmatch(r"[0-9a-f]{40}", h)]


def _download_verified(url: str, package: LockedPackage, progress: Progress) -> None:
    target = cached_deb(package)
    if target.is_file():
        return
    received = 0
    try:
        with blobs.writing(target.parent, ".deb") as out, \
                urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                received += len(chunk)
                progress.advance(len(chunk))
            if out.hexdigest() != package.sha256:
                raise UserError(
                    f"hash mismatch for {package.name} {package.version}: the lock says "
                    f"sha256 {package.sha256}, {url} gave {out.hexdigest()} (the download "
                    "was deleted); if the archive really changed, run `cimages lock --update "
                    "FILE`"
                )
    except urllib.error.HTTPError as err:
        progress.advance(-received)
        if err.code == 404:
            raise _Gone() from err
        raise UserError(f"downloading {url} failed: HTTP {err.code}; retry later or "
                        "check the mirror") from err
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        progress.advance(-received)  # the next attempt counts them again
        raise _Transient() from err


def refetch(changed: list[LockedPackage]) -> None:
    """Fetches again the cached .debs that no longer hash to the lock's sha256 (a swapped or
    damaged cache file, found as the layer's unpacking read it): the download verifies."""
    print("cimages: cached .debs of " + ", ".join(p.name for p in changed) + " do not "
          "match the lock's sha256 (the cache was changed): fetching them again",
          file=sys.stderr)
    for p in changed:
        cached_deb(p).unlink(missing_ok=True)
    download(changed)


def download(packages: list[LockedPackage]) -> dict[str, Path]:
    """Path of each package's verified .deb, by name; downloads what the cache lacks."""
    missing = [p for p in packages if not cached_deb(p).is_file()]
    if missing:
        progress = Progress("download", sum(p.size for p in missing))
        with ThreadPoolExecutor(PARALLEL) as pool:
            from_snapshot = [p for p, old in zip(missing, pool.map(
                lambda p: _fetch(p, progress), missing), strict=True) if old]
        progress.finish(f"{len(missing)} packages, {progress.done / 1e6:.1f} MB")
        if from_snapshot:
            print(f"cimages: {len(from_snapshot)} locked .debs are gone from the mirror and "
                  f"came from {snapshot_url()}, checked by sha256: "
                  + ", ".join(f"{p.name} {p.version}" for p in from_snapshot)
                  + "; `cimages lock --update FILE` pins current versions", file=sys.stderr)
    return {p.name: cached_deb(p) for p in packages}
