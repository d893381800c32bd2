"""`environment.*`: the packages in the image and files under /etc."""

from framework.modules import Config, Module, option
from framework.modules import types as t

ETC_FILE = t.submodule(
    {
        "enable": option(t.bool_, True, "Whether the file is created."),
        "text": option(t.null_or(t.str_), None, "The file's content.", "nameserver 127.0.0.1\n"),
        "source": option(t.null_or(t.module_file), None,
                         "A file to copy, beside the module (a relative path).",
                         "./motd"),
        "mode": option(t.string(r"0?[0-7]{3,4}", "an octal mode like 0644"), "0644",
                       "Permission bits (octal)."),
        "user": option(t.owner, "root", "Owner (name from users.users, or a number)."),
        "group": option(t.owner, "root", "Group (name from users.groups, or a number)."),
    }
)


def _assertions(cfg: Config) -> list[str]:
    errors = []
    for name, spec in cfg["environment"]["etc"].items():
        if spec["enable"] and (spec["text"] is None) == (spec["source"] is None):
            errors.append(
                f"environment.etc.\"{name}\": give exactly one of `text` or `source`"
            )
    return errors


MODULE = Module(
    name="environment",
    source=__file__,
    options={
        "environment": {
            "systemPackages": option(
                t.list_of(t.package), [], "Debian packages; their dependency closure "
                "(without recommends) is the image's content. No maintainer scripts run.",
                ["hello"],
            ),
            "etc": option(
                t.attrs_of(ETC_FILE, t.etc_path), {},
                "Files under /etc, by path relative to /etc.",
                {"motd": {"text": "hi\n", "mode": "0644"}},
            ),
        }
    },
    assertions=_assertions,
)
