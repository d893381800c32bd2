"""`services.nginx`: nginx with virtual hosts, run through the systemd translation."""

from collections.abc import Mapping
from typing import Any

from framework.modules import Config, Module, option
from framework.modules import types as t
from framework.options import nginx_conf

LOCATION = t.submodule(
    {
        "root": option(t.null_or(t.line), None, "Document root for this location."),
        "return": option(t.null_or(t.line), None, "nginx `return` (e.g. `200 plop`)."),
        "proxyPass": option(t.null_or(t.line), None, "Upstream URL to proxy to."),
        "extraConfig": option(t.str_, "", "Lines added inside the location block."),
    }
)

LISTEN = t.submodule(
    {
        "addr": option(t.string(r"[A-Za-z0-9.:\[\]*_-]+", "an address (e.g. 0.0.0.0, [::], "
                                "localhost)"), "0.0.0.0", "Address to listen on."),
        "port": option(t.port, 80, "Port to listen on."),
    }
)

VHOST = t.submodule(
    {
        "root": option(t.null_or(t.line), None, "Document root."),
        "listen": option(t.list_of(LISTEN), [], "Addresses; empty means 0.0.0.0:80.",
                         [{"addr": "0.0.0.0", "port": 8080}]),
        "locations": option(t.attrs_of(LOCATION, t.config_word), {}, "Locations by path.",
                            {"/plop": {"return": "200 plop"}}),
    }
)

# As in NixOS: with no virtual host defined, `localhost` serves the package's default page
# (Debian's /usr/share/nginx/html). The default is spelled out because a bare `{}` is not
# merged through the submodule, so its sub-options would be missing.
DEFAULT_VHOSTS = {"localhost": VHOST.merge("services.nginx.virtualHosts.localhost", [])}

# `nginx -t` first, so a bad configuration fails the start with nginx's own message.
PRE_START = f"""\
mkdir -p {nginx_conf.RUN_DIR} {nginx_conf.CACHE_DIR} {nginx_conf.LOG_DIR}
/usr/sbin/nginx -t -q -c {nginx_conf.CONF_PATH}
"""


def _config(cfg: Config) -> Mapping[str, Any]:
    nginx = cfg["services"]["nginx"]
    if not nginx["enable"]:
        return {}
    user = nginx_conf.USER
    return {
        "environment": {
            "systemPackages": [nginx["package"]],
            "etc": {"nginx/nginx.conf": {"text": nginx_conf.render(nginx)}},
        },
        "users": {
            "users": {user: {"isSystemUser": True, "group": user,
                             "description": "nginx web server"}},
            "groups": {user: {}},
        },
        "systemd": {
            "services": {
                "nginx": {
                    "preStart": PRE_START,
                    # No Restart=: a dead nginx stops the container and its orchestrator's
                    # restart policy decides, instead of a silent restart loop inside.
                    "serviceConfig": {
                        "Type": "simple",
                        "ExecStart": f"/usr/sbin/nginx -c {nginx_conf.CONF_PATH}",
                    },
                    "wantedBy": ["multi-user.target"],
                }
            }
        },
    }


MODULE = Module(
    name="services.nginx",
    source=__file__,
    options={
        "services": {
            "nginx": {
                "enable": option(t.bool_, False, "Run nginx."),
                "package": option(t.package, "nginx", "The Debian package providing nginx."),
                "virtualHosts": option(t.attrs_of(VHOST, t.config_word), DEFAULT_VHOSTS,
                                       "Virtual hosts by server name.",
                                       {"localhost": {"root": "/srv/www"}}),
                "appendHttpConfig": option(t.str_, "", "Lines added to the http block."),
            }
        }
    },
    config=_config,
)
