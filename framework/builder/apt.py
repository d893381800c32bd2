"""apt run against a private state directory: its own lists, status, cache, sources and
configuration, one per set of Debian sources (so two releases' lists never mix).

The host's apt state and configuration are never read or written. The status file is
empty, so nothing counts as installed: the resolution is the real dependency closure of the
request, without the Essential/required set a Debian system would assume.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from framework.atomic import write_atomic
from framework.builder.lockfile import LockedPackage
from framework.builder.sources import DebianSources
from framework.cache import cache_dir
from framework.errors import UserError
from framework.processes import die_with_parent

APT_TIMEOUT = 600  # seconds; an update over a slow mirror can take minutes


def parse_paragraphs(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs (Packages, status, control files) as dicts; continuation lines
    are kept with their newline so multi-line fields survive a round trip."""
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, ""
        elif line[0] in " \t" and key:
            current[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def dependency_names(field: str) -> list[str]:
    """Every package name a Depends/Pre-Depends field mentions (all alternatives)."""
    names = []
    for clause in field.split(","):
        for alternative in clause.split("|"):
            name = alternative.strip().split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0]
            if name:
                names.append(name)
    return names


class PrivateApt:
    def __init__(self, sources: DebianSources, root: Path | None = None) -> None:
        self.sources = sources
        self.root = root or cache_dir("apt") / sources.key()
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "conf.d",
                    "trusted.gpg.d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        for target, text in ((self.root / "sources.list.d" / "debian.sources", sources.deb822()),
                             (self.root / "apt.conf", self._config())):
            if not target.is_file() or target.read_text() != text:
                write_atomic(target, text)

    def _config(self) -> str:
        """Read through APT_CONFIG before anything else, so apt never opens the host's
        /etc/apt/apt.conf(.d): proxies, pinning or architectures there would change what
        an image holds."""
        r = self.root
        return "".join(f'{key} "{value}";\n' for key, value in {
            "Dir::Etc": r, "Dir::Etc::Main": r / "apt.conf", "Dir::Etc::Parts": r / "conf.d",
            "Dir::Etc::Trusted": "/dev/null", "Dir::Etc::TrustedParts": r / "trusted.gpg.d",
        }.items())

    def _options(self) -> list[str]:
        r = self.root
        settings = {
            "Dir::State": r,
            "Dir::State::Lists": r / "lists",
            "Dir::State::status": r / "status",
            "Dir::Cache": r / "cache",
            "Dir::Etc::SourceList": "/dev/null",
            "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::Log": r,
            # Downloads of lists run as root into our private directory, not as _apt.
            "APT::Sandbox::User": "root",
            "Debug::NoLocking": "1",
            "Acquire::Languages": "none",
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            # A mirror that does not answer fails in seconds, not after apt's 120 s default.
            "Acquire::http::Timeout": "30",
            "Acquire::Retries": "2",
        }
        return [arg for k, v in settings.items() for arg in ("-o", f"{k}={v}")]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Several builds (parallel tests) share the lists; one apt at a time.
        with open(self.root / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [tool, *self._options(), *args], capture_output=True, text=True,
                timeout=APT_TIMEOUT, preexec_fn=die_with_parent,
                env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin",
                     "APT_CONFIG": str(self.root / "apt.conf")},
            )
        except subprocess.TimeoutExpired as err:
            raise UserError(
                f"{tool} {args[0]} took over {APT_TIMEOUT}s: the Debian mirror is too slow or "
                "unreachable; check the network (or build with --frozen from cached .debs)"
            ) from err

    def has_lists(self) -> bool:
        return any((self.root / "lists").glob("*_Packages*"))

    def update(self) -> None:
        with self._locked():
            done = self._run("apt-get", "update", "-q", "--error-on=any")
        if done.returncode != 0:
            detail = "; ".join(
                line for line in done.stdout.splitlines() + done.stderr.splitlines()
                if line.startswith(("E:", "W:", "Err:"))
            )
            raise UserError(
                f"could not download the package lists of {self.sources.describe()} "
                f"({detail or 'apt-get update failed'}); check debian.release and "
                "debian.mirror in the definition and the network connection to the mirror, or "
                "build offline with --frozen when the lock file and the cached .debs exist"
            )

    def ensure_lists(self, refresh: bool = False) -> None:
        if refresh or not self.has_lists():
            self.update()

    def resolve(self, packages: list[str]) -> list[LockedPackage]:
        """The closure of `packages` (no recommends), each pinned with its archive hash."""
        if not packages:
            return []
        with self._locked():
            done = self._run("apt-get", "install", "--print-uris", "-qq", "-y", *packages)
        if done.returncode != 0:
            raise self._resolution_error(done.stderr + done.stdout, packages)
        urls = [unquote(line.split("'")[1]) for line in done.stdout.splitlines()
                if line.startswith("'")]
        names = sorted({Path(u).name.split("_", 1)[0] for u in urls})
        with self._locked():
            shown = self._run("apt-cache", "show", *names)
        by_file = {p["Filename"]: p for p in parse_paragraphs(shown.stdout) if "Filename" in p}
        closure = set(names)
        result = []
        for url in urls:
            record = next((p for f, p in by_file.items() if url.endswith("/" + f)), None)
            if record is None:
                raise RuntimeError(f"apt-cache has no record for {url}")
            deps = dependency_names(record.get("Pre-Depends", "") + "," +
                                    record.get("Depends", ""))
            result.append(LockedPackage(
                name=record["Package"], version=record["Version"],
                architecture=record["Architecture"], sha256=record["SHA256"],
                size=int(record["Size"]), installed_size=int(record.get("Installed-Size", 0)),
                url=url, depends=tuple(sorted(set(deps) & closure)),
            ))
        return sorted(result, key=lambda r: r.name)

    def _resolution_error(self, output: str, packages: list[str]) -> UserError:
        missing = re.findall(r"Unable to locate package (\S+)", output)
        if missing:
            hints = []
            for name in missing:
                close = self.suggest(name)
                hint = f"did you mean {', '.join(close)}?" if close else "apt finds nothing similar"
                hints.append(f"`{name}` ({hint})")
            return UserError(
                f"unknown Debian package {'; '.join(hints)}: fix the name in "
                "environment.systemPackages (search with `apt-cache search NAME`)"
            )
        virtual = re.findall(r"Package '(\S+)' has no installation candidate", output)
        if virtual:
            hints = [f"`{name}` (provided by: {', '.join(self.providers(name)) or 'nothing'})"
                     for name in virtual]
            return UserError(
                f"virtual Debian package {'; '.join(hints)}: name one provider in "
                "environment.systemPackages instead"
            )
        errors = "; ".join(line[3:].strip() for line in output.splitlines()
                           if line.startswith("E:")) or output.strip()
        return UserError(
            f"apt cannot install {' '.join(packages)}: {errors}. Fix the package list in "
            "environment.systemPackages"
        )

    def providers(self, name: str) -> list[str]:
        """Packages that provide the virtual package `name`."""
        shown = self._run("apt-cache", "showpkg", name).stdout
        listed = shown.split("Reverse Provides:", 1)[1] if "Reverse Provides:" in shown else ""
        return sorted({line.split()[0] for line in listed.splitlines() if line.strip()})

    def suggest(self, name: str) -> list[str]:
        """Names apt knows that look like `name`: close spellings, then substring matches."""
        names = self._run("apt-cache", "pkgnames").stdout.split()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
        if len(close) < 3:
            found = self._run("apt-cache", "search", "--names-only", re.escape(name)).stdout
            close += [line.split(" ", 1)[0] for line in found.splitlines()
                      if line.split(" ", 1)[0] not in close][: 3 - len(close)]
        return close
