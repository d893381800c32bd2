"""Every option module, in the order their options are documented."""

from framework.modules import Module
from framework.options import debian, environment, image, nginx, nix, s6, systemd, users

ALL_MODULES: list[Module] = [
    m.MODULE for m in (image, debian, environment, users, s6, systemd, nginx, nix)
]
