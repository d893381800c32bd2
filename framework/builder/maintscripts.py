"""What Debian's maintainer scripts would have done, done by the builder instead.

The builder runs no maintainer script (an image is built without executing its content).
What those scripts do, and what the builder does about it:

- system accounts (`adduser --system`, `addgroup`): SYSTEM_ACCOUNTS below, for the packages
  in it; other packages' account creation is reported as not covered;
- `update-alternatives --install`: parsed from each postinst; the highest priority
  alternative whose target is in the image gets /etc/alternatives/NAME and its links;
- CA certificates (`update-ca-certificates`): /etc/ssl/certs/ca-certificates.crt is the
  concatenation of the shipped certificates, in name order, as the script writes it;
- the ldconfig cache: not written. Debian's glibc searches its multiarch directories
  (/usr/lib/x86_64-linux-gnu, ...) without a cache, which is where packaged libraries live;
  packages shipping /etc/ld.so.conf.d entries for other directories are reported;
- init-system glue (deb-systemd-helper, update-rc.d, invoke-rc.d) and debconf: nothing to
  do in a container, whose services the s6 init starts;
- SSH host keys and the kernel's module index/initramfs: reported as not covered; they
  belong to the first boot (keys must not be shared by every copy of an image).

`inventory()` lists, per package, which scripts it has and which of these apply.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from framework.builder.unpack import usr_path
from framework.image_files import ImageFile

# package -> accounts its postinst creates, in the shape of users.users / users.groups.
SYSTEM_ACCOUNTS: dict[str, dict[str, dict[str, Any]]] = {
    "apt": {"users": {"_apt": {"group": "nogroup", "home": "/nonexistent"}}},
    "openssh-server": {"users": {"sshd": {"group": "nogroup", "home": "/run/sshd"}}},
    "dbus-system-bus-common": {"users": {"messagebus": {"home": "/nonexistent"}}},
    "docker.io": {"groups": {"docker": {}}},
    "uuid-runtime": {"users": {"uuidd": {"home": "/run/uuidd"}}},
    "tcpdump": {"users": {"tcpdump": {"home": "/nonexistent"}}},
    "polkitd": {"users": {"polkitd": {"home": "/nonexistent"}}},
}

CA_DIR = "usr/share/ca-certificates/"

# (what a script does, the pattern that shows it, whether the builder covers it)
ACTIONS: list[tuple[str, str, bool | None]] = [
    ("system accounts", r"\b(adduser|addgroup|useradd|groupadd)\b", None),
    ("alternatives", r"update-alternatives\s+--install", True),
    ("CA certificates", r"update-ca-certificates", True),
    ("ldconfig", r"\bldconfig\b", True),
    ("init-system glue", r"deb-systemd|update-rc\.d|invoke-rc\.d|systemctl", True),
    ("debconf", r"/usr/share/debconf/confmodule", True),
    # Not done at build time on purpose: host keys baked into an image are shared secrets
    # (generate them when the container or VM starts: `ssh-keygen -A`).
    ("SSH host keys", r"ssh-keygen", False),
    # The kernel's module index and initramfs: a VM image's job (`depmod` at build or boot).
    ("kernel module index/initramfs", r"\bdepmod\b|update-initramfs|linux-update-symlinks",
     False),
]


def system_accounts(packages: Iterable[str]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {"users": {}, "groups": {}}
    for name in sorted(packages):
        for kind, entries in SYSTEM_ACCOUNTS.get(name, {}).items():
            merged[kind].update(entries)
    return merged


@dataclass(frozen=True)
class Alternative:
    link: str
    name: str
    path: str
    priority: int
    slaves: tuple[tuple[str, str, str], ...]


def parse_alternatives(script: str) -> list[Alternative]:
    """`update-alternatives --install` calls with literal arguments (calls built from shell
    variables cannot be read without running the script and are skipped)."""
    found = []
    joined = script.replace("\\\n", " ")
    for line in joined.splitlines():
        if "--install" not in line or "update-alternatives" not in line or "$" in line:
            continue
        try:
            words = shlex.split(line.split("update-alternatives", 1)[1], comments=True)
        except ValueError:
            continue
        words = [w for w in words if w not in ("--quiet", "--force")]
        if len(words) < 5 or words[0] != "--install" or not words[4].isdigit():
            continue
        slaves = []
        rest = words[5:]
        while len(rest) >= 4 and rest[0] == "--slave":
            slaves.append((rest[1], rest[2], rest[3]))
            rest = rest[4:]
        found.append(Alternative(words[1], words[2], words[3], int(words[4]), tuple(slaves)))
    return found


def alternative_files(postinsts: dict[str, str], present: set[str]) -> list[ImageFile]:
    """The links update-alternatives would make: LINK -> /etc/alternatives/NAME -> PATH."""
    best: dict[str, Alternative] = {}
    for package in sorted(postinsts):
        for alt in parse_alternatives(postinsts[package]):
            if usr_path(alt.path) not in present:
                continue
            current = best.get(alt.name)
            if current is None or alt.priority > current.priority:
                best[alt.name] = alt
    files = []
    for alt in best.values():
        for link, name, path in ((alt.link, alt.name, alt.path), *alt.slaves):
            if usr_path(path) not in present:
                continue
            files.append(ImageFile("/" + usr_path(link), kind="symlink",
                                   target=f"/etc/alternatives/{name}"))
            files.append(ImageFile(f"/etc/alternatives/{name}", kind="symlink", target=path))
    return files


def ca_bundle(certificates: dict[str, bytes]) -> list[ImageFile]:
    """`certificates`: path under usr/share/ca-certificates -> PEM bytes."""
    if not certificates:
        return []
    pem = b"".join(data if data.endswith(b"\n") else data + b"\n"
                   for _, data in sorted(certificates.items()))
    return [ImageFile("/etc/ssl/certs/ca-certificates.crt", content=pem)]


def inventory(control: dict[str, dict[str, str]], files: dict[str, dict[str, str]]
              ) -> dict[str, dict[str, list[str]]]:
    """Per package with maintainer scripts: the scripts, what is covered, what is not."""
    report = {}
    for package in sorted(control):
        scripts = sorted(n for n in control[package]
                         if n in ("preinst", "postinst", "prerm", "postrm", "triggers"))
        if not scripts:
            continue
        text = "\n".join(control[package][n] for n in scripts)
        covered: list[str] = []
        missing: list[str] = []
        for action, pattern, handled in ACTIONS:
            if not re.search(pattern, text):
                continue
            if action == "system accounts":
                handled = package in SYSTEM_ACCOUNTS
            (covered if handled else missing).append(action)
        # libc6's own entry names the multiarch directories glibc searches anyway.
        if package != "libc6" and any(p.startswith("etc/ld.so.conf.d/")
                                      for p in files.get(package, {})):
            missing.append("ldconfig (extra library directory)")
        report[package] = {"scripts": scripts, "covered": covered, "notCovered": missing}
    return report
