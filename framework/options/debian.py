"""`debian.*`: where an image's packages come from. Part of the definition, never of the host:
the same definition and lock give the same image on bookworm, Ubuntu or a laptop."""

from framework.modules import Module, option
from framework.modules import types as t

# Codename -> whether it has `-updates` and `-security` suites. Codenames only, never
# `stable`/`testing`: those move, and a definition must keep meaning the same release.
RELEASES = {"bookworm": True, "trixie": True, "forky": True, "sid": False}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")

# A URL apt accepts that stays one word in a deb822 file: no spaces, quotes or newlines.
mirror_url = t.string(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%+-]*)*",
                      "an http(s) URL of a Debian mirror, e.g. http://deb.debian.org/debian")

MODULE = Module(
    name="debian",
    source=__file__,
    options={
        "debian": {
            "release": option(
                t.enum(*RELEASES), "bookworm",
                "The Debian release (codename) packages are resolved from, with its "
                "-updates and -security suites (sid has neither).", "trixie",
            ),
            "mirror": option(
                mirror_url, DEFAULT_MIRROR,
                "The Debian archive mirror. Release files are verified with the Debian "
                "archive keyring whatever the mirror.", "http://ftp.de.debian.org/debian",
            ),
            "securityMirror": option(
                t.null_or(mirror_url), None,
                "The mirror of the -security suite; null means the mirror's URL with "
                "`-security` appended (deb.debian.org/debian-security for the default).",
                "http://security.debian.org/debian-security",
            ),
            "components": option(
                t.list_of(t.enum(*COMPONENTS)), ["main"], "Archive components to use.",
                ["main", "contrib"],
            ),
        }
    },
)
