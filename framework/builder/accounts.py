"""/etc/passwd, /etc/group, /etc/shadow and home directories from `users.*`.

Every image starts from Debian's static base-passwd accounts (root, daemon, www-data,
nogroup, the shadow/utmp/tty groups, ...), because .deb files name owners such as
root:shadow and the ids must be the ones Debian assigns. Accounts that packages' postinst
scripts would create come next (see maintscripts.SYSTEM_ACCOUNTS), then `users.*`, which
wins on a name clash. Missing ids are allocated deterministically in name order: normal
users from 1000 up, system users and groups from 999 down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from framework.builder.unpack import IdMap
from framework.errors import UserError
from framework.image_files import ImageFile

NOLOGIN = "/usr/sbin/nologin"

# name: (uid, gid, gecos, home, shell), from Debian's base-passwd (passwd.master).
BASE_USERS: dict[str, tuple[int, int, str, str, str]] = {
    "root": (0, 0, "root", "/root", "/bin/sh"),
    "daemon": (1, 1, "daemon", "/usr/sbin", NOLOGIN),
    "bin": (2, 2, "bin", "/bin", NOLOGIN),
    "sys": (3, 3, "sys", "/dev", NOLOGIN),
    "sync": (4, 65534, "sync", "/bin", "/bin/sync"),
    "games": (5, 60, "games", "/usr/games", NOLOGIN),
    "man": (6, 12, "man", "/var/cache/man", NOLOGIN),
    "lp": (7, 7, "lp", "/var/spool/lpd", NOLOGIN),
    "mail": (8, 8, "mail", "/var/mail", NOLOGIN),
    "news": (9, 9, "news", "/var/spool/news", NOLOGIN),
    "uucp": (10, 10, "uucp", "/var/spool/uucp", NOLOGIN),
    "proxy": (13, 13, "proxy", "/bin", NOLOGIN),
    "www-data": (33, 33, "www-data", "/var/www", NOLOGIN),
    "backup": (34, 34, "backup", "/var/backups", NOLOGIN),
    "list": (38, 38, "Mailing List Manager", "/var/list", NOLOGIN),
    "irc": (39, 39, "ircd", "/run/ircd", NOLOGIN),
    "nobody": (65534, 65534, "nobody", "/nonexistent", NOLOGIN),
}

BASE_GROUPS: dict[str, int] = {
    "root": 0, "daemon": 1, "bin": 2, "sys": 3, "adm": 4, "tty": 5, "disk": 6, "lp": 7,
    "mail": 8, "news": 9, "uucp": 10, "man": 12, "proxy": 13, "kmem": 15, "dialout": 20,
    "fax": 21, "voice": 22, "cdrom": 24, "floppy": 25, "tape": 26, "sudo": 27, "audio": 29,
    "dip": 30, "www-data": 33, "backup": 34, "operator": 37, "list": 38, "irc": 39,
    "src": 40, "shadow": 42, "utmp": 43, "video": 44, "sasl": 45, "plugdev": 46,
    "staff": 50, "games": 60, "users": 100, "nogroup": 65534,
}


@dataclass
class User:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str
    create_home: bool = False
    home_mode: int = 0o755


@dataclass
class Accounts:
    users: dict[str, User] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)

    def id_map(self) -> IdMap:
        return IdMap({n: u.uid for n, u in self.users.items()}, dict(self.groups))


def _allocate(taken: set[int], start: int, step: int) -> int:
    number = start
    while number in taken:
        number += step
    taken.add(number)
    return number


def accounts(cfg: dict[str, Any], system: dict[str, dict[str, Any]] | None = None) -> Accounts:
    """All accounts of the image. `system` holds accounts packages need, in the same shape
    as `users.users`/`users.groups` entries: {"users": {...}, "groups": {...}}."""
    system = system or {"users": {}, "groups": {}}
    declared_users = {**system.get("users", {}), **cfg["users"]["users"]}
    declared_groups = {**system.get("groups", {}), **cfg["users"]["groups"]}
    result = Accounts(
        {n: User(n, u, g, gecos, home, shell) for n, (u, g, gecos, home, shell)
         in BASE_USERS.items()},
        dict(BASE_GROUPS),
    )
    gids = set(result.groups.values())
    for name in sorted(declared_groups):
        gid = declared_groups[name].get("gid")
        if gid is not None:
            result.groups[name] = gid
            gids.add(gid)
    # A system user's own group: named after it, unless it names one.
    for name, spec in sorted(declared_users.items()):
        if not spec.get("isNormalUser") and spec.get("group") is None:
            declared_groups.setdefault(name, {})
    for name in sorted(declared_groups):
        if name not in result.groups:
            result.groups[name] = _allocate(gids, 999, -1)
        for member in declared_groups[name].get("members", []):
            result.members.setdefault(name, []).append(member)

    uids = {u.uid for u in result.users.values()}
    for spec in declared_users.values():
        if spec.get("uid") is not None:
            uids.add(spec["uid"])
    for name in sorted(declared_users):
        spec = declared_users[name]
        normal = bool(spec.get("isNormalUser"))
        group = spec.get("group") or ("users" if normal else name)
        if group not in result.groups:
            raise UserError(
                f"users.users.{name}.group is `{group}`, which no users.groups entry "
                f"declares; add users.groups.{group} or fix the name"
            )
        uid = spec.get("uid")
        if uid is None:
            existing = result.users.get(name)
            uid = existing.uid if existing else _allocate(uids, 1000 if normal else 999,
                                                          1 if normal else -1)
        home = spec.get("home") or (f"/home/{name}" if normal else "/nonexistent")
        result.users[name] = User(
            name, uid, result.groups[group], spec.get("description", ""), home,
            spec.get("shell") or ("/bin/sh" if normal else NOLOGIN),
            create_home=normal or bool(spec.get("createHome")),
            home_mode=0o700 if normal else 0o755,
        )
        for extra in spec.get("extraGroups", []):
            if extra not in result.groups:
                raise UserError(
                    f"users.users.{name}.extraGroups names `{extra}`, which no users.groups "
                    f"entry declares; add users.groups.{extra} or fix the name"
                )
            result.members.setdefault(extra, []).append(name)
    return result


def account_files(acc: Accounts) -> list[ImageFile]:
    users = sorted(acc.users.values(), key=lambda u: (u.uid, u.name))
    groups = sorted(acc.groups.items(), key=lambda g: (g[1], g[0]))
    passwd = "".join(f"{u.name}:x:{u.uid}:{u.gid}:{u.gecos}:{u.home}:{u.shell}\n"
                     for u in users)
    group = "".join(f"{n}:x:{gid}:{','.join(sorted(set(acc.members.get(n, []))))}\n"
                    for n, gid in groups)
    # "*": no password can log in; "!" would also lock; day 0 keeps dates out of the image.
    shadow = "".join(f"{u.name}:*:0:0:99999:7:::\n" for u in users)
    gshadow = "".join(f"{n}:*::{','.join(sorted(set(acc.members.get(n, []))))}\n"
                      for n, _ in groups)
    files = [
        ImageFile("/etc/passwd", content=passwd.encode()),
        ImageFile("/etc/group", content=group.encode()),
        ImageFile("/etc/shadow", content=shadow.encode(), mode=0o640, group="shadow"),
        ImageFile("/etc/gshadow", content=gshadow.encode(), mode=0o640, group="shadow"),
    ]
    for u in users:
        if u.create_home:
            files.append(ImageFile(u.home, kind="dir", mode=u.home_mode, user=u.uid,
                                   group=u.gid))
    return files
