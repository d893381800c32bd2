"""`s6.*`: services supervised by the image's s6 init."""

from typing import Any

from framework.modules import Config, Module, mk_default, option
from framework.modules import types as t
from framework.s6 import DEFAULT_STATE, INIT, NOTIFY_PACKAGES, PACKAGES
from framework.s6.plan import enabled_services, problems, unknown_after

READINESS = t.either(
    t.port,
    t.string(r"up|notification-fd|sd-notify|/[^\x00-\x1f\x7f]+",
             "`up`, `notification-fd`, `sd-notify`, a TCP port or an absolute file path"),
)

SERVICE = t.submodule(
    {
        "type": option(t.enum("oneshot-pre", "long-run", "oneshot-post"), "long-run",
                       "oneshot-pre runs before the long-runs, oneshot-post after them."),
        "execStart": option(t.null_or(t.str_), None, "The command line to run.",
                            "nginx -g 'daemon off;'"),
        "script": option(t.null_or(t.str_), None, "Shell text to run (instead of execStart).",
                         "echo hello"),
        "after": option(t.list_of(t.service_name), [], "Services this one starts after.",
                        ["setup"]),
        "restartOnFailure": option(t.bool_, False,
                                   "Restart a long-run that exits non-zero instead of "
                                   "stopping the container."),
        "user": option(t.null_or(t.account_name), None, "Run as this user.", "nginx"),
        "workingDirectory": option(t.null_or(t.absolute_path), None, "Working directory.",
                                   "/srv"),
        "environment": option(t.attrs_of(t.str_, t.env_name), {}, "Variables added to the caller's "
                              "environment.", {"KEY": "value"}),
        "path": option(t.list_of(t.package), [], "Packages whose bin directories join PATH "
                       "(and are added to the image).", ["curl"]),
        "enable": option(t.bool_, True, "Whether the service exists."),
        "execLogger": option(t.null_or(t.str_), None, "A command receiving the service's "
                             "stdout.", "sed -u 's/^/prefix - /'"),
        "readiness": option(READINESS, "up", "When a long-run counts as ready for the "
                            "oneshot-posts after it: `up` (started), a TCP port listening, "
                            "a file existing, `notification-fd` (it writes a line to fd 3) "
                            "or `sd-notify` (it sends READY=1 to $NOTIFY_SOCKET, as systemd "
                            "Type=notify daemons do).", 8080),
        "stopTimeout": option(t.integer(1, 7), 3, "Seconds a long-run gets to exit after "
                              "SIGTERM before it is killed (the whole shutdown is capped at "
                              "8 s, under Docker's 10 s)."),
    }
)


def _config(cfg: Config) -> dict[str, Any]:
    services = enabled_services(cfg)
    if not services:
        return {}
    paths = [p for spec in services.values() for p in spec["path"]]
    if any(spec["readiness"] == "sd-notify" for spec in services.values()):
        paths += NOTIFY_PACKAGES
    return {
        "environment": {"systemPackages": [*PACKAGES, *dict.fromkeys(paths)]},
        "image": {"entryPoint": mk_default([INIT, DEFAULT_STATE])},
    }

MODULE = Module(
    name="s6",
    source=__file__,
    options={
        "s6": {
            "services": option(t.attrs_of(SERVICE, t.service_name), {}, "Services of the s6 init.",
                               {"web": {"execStart": "python3 -m http.server 8000"}}),
        }
    },
    config=_config,
    assertions=problems,
    warnings=unknown_after,
)
