"""The host's Debian archive entries, re-written into a private deb822 sources file.

The host may also list third-party repositories (Google, NodeSource); an image's content
must come only from Debian, so every entry whose URI is not on a debian.org host is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from framework.errors import UserError

ETC_APT = Path("/etc/apt")


@dataclass(frozen=True)
class Source:
    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None

    def deb822(self) -> str:
        lines = [
            "Types: deb",
            f"URIs: {self.uri}",
            f"Suites: {self.suite}",
            f"Components: {' '.join(self.components)}",
        ]
        if self.signed_by:
            lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


def _is_debian(uri: str) -> bool:
    host = urlparse(uri).hostname or ""
    return host == "debian.org" or host.endswith(".debian.org")


def _parse_sources(text: str) -> list[Source]:
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                found.append(Source(uri, suite, tuple(fields.get("components", "").split()),
                                    fields.get("signed-by")))
    return found


def _parse_list(text: str) -> list[Source]:
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        options: dict[str, str] = {}
        if words and words[0].startswith("["):
            while words:
                raw = words.pop(0)
                word = raw.strip("[]")
                if "=" in word:
                    k, _, v = word.partition("=")
                    options[k] = v
                if raw.endswith("]"):
                    break
        if len(words) >= 2:
            found.append(Source(words[0], words[1], tuple(words[2:]), options.get("signed-by")))
    return found


def debian_sources(etc_apt: Path = ETC_APT) -> list[Source]:
    """Debian entries of the host's apt configuration, in a stable order, deduplicated."""
    found: list[Source] = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        found += _parse_list(main_list.read_text())
    parts = etc_apt / "sources.list.d"
    for path in sorted(parts.glob("*.list")) if parts.is_dir() else []:
        found += _parse_list(path.read_text())
    for path in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        found += _parse_sources(path.read_text())
    debian = list(dict.fromkeys(s for s in found if _is_debian(s.uri)))
    if not debian:
        raise UserError(
            f"no Debian archive in {etc_apt}/sources.list(.d): the builder resolves packages "
            "from deb.debian.org only; add an entry such as "
            "`deb http://deb.debian.org/debian bookworm main`"
        )
    return debian
