"""`nix.*`: Debian's nix-bin as a single-user install."""

from framework.modules import Module, option
from framework.modules import types as t

MODULE = Module(
    name="nix",
    source=__file__,
    options={
        "nix": {
            "enable": option(t.bool_, False, "Install nix (single-user)."),
            "settings": option(
                t.attrs_of(t.either(t.bool_, t.int_, t.str_, t.list_of(t.str_))),
                {"sandbox": False},
                "Written to /etc/nix/nix.conf (lists space-separated).",
                {"experimental-features": ["nix-command", "flakes"]},
            ),
        }
    },
)
