"""`systemd.services.*`: the subset of NixOS-style systemd services translated to s6.

Unknown keys are kept (freeform) so the translation can warn about each of them."""

from collections.abc import Mapping
from typing import Any

from framework.modules import Config, Module, option
from framework.modules import types as t
from framework.options.s6 import READINESS
from framework.options.systemd_translation import conflicts, translate

STR_OR_LIST = t.either(t.str_, t.list_of(t.str_))

SERVICE_CONFIG = t.submodule(
    {
        "Type": option(t.enum("simple", "oneshot", "exec", "forking", "notify", "dbus", "idle"),
                       "simple", "simple, exec -> long-run; notify -> long-run ready when it "
                       "sends READY=1 (sd_notify); oneshot -> oneshot-pre/post."),
        "ExecStart": option(t.null_or(t.str_), None, "Main command (a leading `@` is "
                            "handled as systemd does).", "/usr/bin/env"),
        "ExecStartPre": option(t.null_or(STR_OR_LIST), None, "Commands run first."),
        "User": option(t.null_or(t.account_name), None, "Run as this user."),
        "Group": option(t.null_or(t.account_name), None, "Run with this group."),
        "WorkingDirectory": option(t.null_or(t.absolute_path), None, "Working directory."),
        "Restart": option(
            t.enum("no", "always", "on-failure", "on-success", "on-abnormal", "on-abort",
                   "on-watchdog"),
            "no", "always / on-failure -> restartOnFailure; others warn."),
        "Environment": option(t.null_or(STR_OR_LIST), None, "KEY=value assignments.",
                              ["KEY=value"]),
    },
    freeform=True,
)

SERVICE = t.submodule(
    {
        "enable": option(t.bool_, True, "Whether the service exists."),
        "script": option(t.null_or(t.str_), None, "Shell text of the main process."),
        "preStart": option(t.null_or(t.str_), None, "Shell text run before the main process."),
        "serviceConfig": option(SERVICE_CONFIG, {}, "The [Service] section subset."),
        "environment": option(t.attrs_of(t.str_, t.env_name), {}, "Environment variables."),
        "path": option(t.list_of(t.package), [], "Packages whose bin directories join PATH "
                       "(after coreutils, findutils, grep and sed, as in NixOS)."),
        "after": option(t.list_of(t.service_name), [], "Ordering among oneshots (.service suffix "
                        "optional)."),
        "wantedBy": option(t.list_of(t.str_), [], "Accepted for compatibility; every enabled "
                           "service starts."),
        "readiness": option(t.null_or(READINESS), None, "cimages: the translated long-run's "
                            "s6.services readiness; null means `sd-notify` for Type=notify, "
                            "else `up`.", 8080),
    },
    freeform=True,
)

def _config(cfg: Config) -> Mapping[str, Any]:
    return {"s6": {"services": translate(cfg["systemd"]["services"]).services}}


def _warnings(cfg: Config) -> list[str]:
    return translate(cfg["systemd"]["services"]).warnings


def _assertions(cfg: Config) -> list[str]:
    return conflicts(cfg["systemd"]["services"])


MODULE = Module(
    name="systemd",
    source=__file__,
    options={
        "systemd": {
            "services": option(t.attrs_of(SERVICE, t.service_name), {},
                               "systemd services (translated to s6).",
                               {"hello": {"script": "echo hello", "serviceConfig":
                                          {"Type": "oneshot"}}}),
        }
    },
    config=_config,
    warnings=_warnings,
    assertions=_assertions,
)
