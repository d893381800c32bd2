"""`users.*`: accounts written to /etc/passwd, /etc/group and /etc/shadow."""

from framework.modules import Module, option
from framework.modules import types as t

USER = t.submodule(
    {
        "uid": option(t.null_or(t.integer(0, 2**31 - 1)), None,
                      "User id; allocated deterministically when null."),
        "group": option(t.null_or(t.account_name), None,
                        "Primary group; null: `users` for normal users, else a group named "
                        "after the user."),
        "extraGroups": option(t.list_of(t.account_name), [], "Supplementary groups.", ["wheel"]),
        "home": option(t.null_or(t.account_path), None,
                       "Home directory; null: /home/NAME for normal users, else /var/empty."),
        "createHome": option(t.bool_, False, "Create the home directory, owned by the user "
                             "(always done for normal users)."),
        "shell": option(t.null_or(t.account_path), None,
                        "Login shell; null: /bin/sh for normal users, else /usr/sbin/nologin."),
        "isNormalUser": option(t.bool_, False, "A person: uid from 1000, home, shell."),
        "isSystemUser": option(t.bool_, False, "A daemon account: uid below 1000."),
        "description": option(t.account_field, "", "The GECOS field.", "Alice Liddell"),
    }
)

GROUP = t.submodule(
    {
        "gid": option(t.null_or(t.integer(0, 2**31 - 1)), None,
                      "Group id; allocated deterministically when null."),
        "members": option(t.list_of(t.account_name), [],
                          "Users in the group besides those naming it."),
    }
)

MODULE = Module(
    name="users",
    source=__file__,
    options={
        "users": {
            "users": option(t.attrs_of(USER, t.account_name), {}, "User accounts.",
                            {"alice": {"isNormalUser": True}}),
            "groups": option(t.attrs_of(GROUP, t.account_name), {}, "Groups.",
                             {"web": {"gid": 800}}),
        }
    },
)
