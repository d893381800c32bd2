"""The Debian archive an image's packages come from, as the definition's `debian.*` names it.

The host's /etc/apt is never read: the same definition resolves the same way on a Debian
machine, on Ubuntu (GitHub's runners) or anywhere apt runs. Release files are verified with
the Debian archive keyring, whichever mirror serves them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.options.debian import DEFAULT_MIRROR, RELEASES

# Debian's keyring package (debian-archive-keyring) puts it here, on Debian and Ubuntu alike.
KEYRING = Path(os.environ.get("CIMAGES_DEBIAN_KEYRING",
                              "/usr/share/keyrings/debian-archive-keyring.gpg"))


@dataclass(frozen=True)
class DebianSources:
    release: str
    mirror: str
    security_mirror: str
    components: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> DebianSources:
        debian = cfg["debian"]
        mirror = debian["mirror"].rstrip("/")
        return cls(debian["release"], mirror,
                   (debian["securityMirror"] or mirror + "-security").rstrip("/"),
                   tuple(dict.fromkeys(debian["components"])))

    @classmethod
    def from_lock(cls, data: dict[str, Any] | None) -> DebianSources:
        """A lock's `debian` entry; locks written before it existed were bookworm's."""
        data = data or {}
        mirror = str(data.get("mirror", DEFAULT_MIRROR))
        return cls(str(data.get("release", "bookworm")), mirror,
                   str(data.get("securityMirror", mirror + "-security")),
                   tuple(data.get("components", ("main",))))

    def as_lock(self) -> dict[str, Any]:
        return {"release": self.release, "mirror": self.mirror,
                "securityMirror": self.security_mirror, "components": list(self.components)}

    def describe(self) -> str:
        return f"{self.release} from {self.mirror} ({', '.join(self.components)})"

    def key(self) -> str:
        """Names the private apt state of these sources: lists of two releases never mix."""
        return hashlib.sha256(json.dumps(self.as_lock(), sort_keys=True).encode()).hexdigest()[:16]

    def deb822(self) -> str:
        if not KEYRING.is_file():
            raise UserError(
                f"no Debian archive keyring at {KEYRING}: the builder verifies the archive's "
                "Release files with it; install it with `apt-get install debian-archive-keyring` "
                "(`make setup` does), or point CIMAGES_DEBIAN_KEYRING at a copy"
            )
        suites = [self.release] + ([f"{self.release}-updates"] if RELEASES[self.release] else [])
        stanzas = [(self.mirror, suites)]
        if RELEASES[self.release]:
            stanzas.append((self.security_mirror, [f"{self.release}-security"]))
        return "\n".join(
            f"Types: deb\nURIs: {uri}\nSuites: {' '.join(names)}\n"
            f"Components: {' '.join(self.components)}\nSigned-By: {KEYRING}\n"
            for uri, names in stanzas)
