"""Fetching .debs into a content-addressed cache (`debs/<sha256>.deb`), in parallel,
each verified against the lock before it is used."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from framework.builder.lockfile import LockedPackage
from framework.builder.progress import Progress
from framework.cache import cache_dir
from framework.errors import UserError

PARALLEL = 6
TIMEOUT = 60  # seconds without a byte from the mirror
# A failed name lookup or a dropped connection is retried, as apt does (Acquire::Retries):
# seen once on this network while two pytest workers fetched ~200 .debs at once.
RETRY_DELAYS_S = (1.0, 3.0)


def cached_deb(package: LockedPackage) -> Path:
    return cache_dir("debs") / f"{package.sha256}.deb"


def _fetch(package: LockedPackage, progress: Progress) -> Path:
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return _fetch_once(package, progress)
        except _Transient as err:
            if delay is None:
                raise UserError(
                    f"cannot download {package.name} from {package.url} ({err.__cause__}), "
                    f"tried {len(RETRY_DELAYS_S) + 1} times: no network? check the connection "
                    "to deb.debian.org; builds with every .deb already cached need none"
                ) from err.__cause__
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


class _Transient(Exception):
    """A network failure worth another attempt; the original error is its __cause__."""


def _fetch_once(package: LockedPackage, progress: Progress) -> Path:
    target = cached_deb(package)
    if target.is_file():
        return target
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".download-")
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(package.url,
                                                                timeout=TIMEOUT) as response:
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
                progress.advance(len(chunk))
        if digest.hexdigest() != package.sha256:
            raise UserError(
                f"hash mismatch for {package.name} {package.version}: the lock says sha256 "
                f"{package.sha256}, {package.url} gave {digest.hexdigest()} (the download was "
                "deleted); if the archive really changed, run `cimages lock --update FILE`"
            )
        os.replace(tmp, target)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise UserError(
                f"{package.name} {package.version} is gone from the Debian archive ({package.url}"
                " answers 404): the lock pins a superseded version; run "
                "`cimages lock --update FILE` to pin the current one"
            ) from err
        raise UserError(f"downloading {package.url} failed: HTTP {err.code}; retry later or "
                        "check the mirror") from err
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        progress.advance(-received)  # the next attempt counts them again
        raise _Transient() from err
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def download(packages: list[LockedPackage]) -> dict[str, Path]:
    """Path of each package's verified .deb, by name; downloads what the cache lacks."""
    missing = [p for p in packages if not cached_deb(p).is_file()]
    if missing:
        progress = Progress("download", sum(p.size for p in missing))
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda p: _fetch(p, progress), missing))
        progress.finish(f"{len(missing)} packages, {progress.done / 1e6:.1f} MB")
    return {p.name: cached_deb(p) for p in packages}
