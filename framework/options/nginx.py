"""`services.nginx`: nginx with virtual hosts, run through the systemd translation."""

from framework.modules import Module, option
from framework.modules import types as t

LOCATION = t.submodule(
    {
        "root": option(t.null_or(t.str_), None, "Document root for this location."),
        "return": option(t.null_or(t.str_), None, "nginx `return` (e.g. `200 plop`)."),
        "proxyPass": option(t.null_or(t.str_), None, "Upstream URL to proxy to."),
        "extraConfig": option(t.str_, "", "Lines added inside the location block."),
    }
)

LISTEN = t.submodule(
    {
        "addr": option(t.str_, "0.0.0.0", "Address to listen on."),
        "port": option(t.port, 80, "Port to listen on."),
    }
)

VHOST = t.submodule(
    {
        "root": option(t.null_or(t.str_), None, "Document root."),
        "listen": option(t.list_of(LISTEN), [], "Addresses; empty means 0.0.0.0:80.",
                         [{"addr": "0.0.0.0", "port": 8080}]),
        "locations": option(t.attrs_of(LOCATION), {}, "Locations by path.",
                            {"/plop": {"return": "200 plop"}}),
    }
)

MODULE = Module(
    name="services.nginx",
    source=__file__,
    options={
        "services": {
            "nginx": {
                "enable": option(t.bool_, False, "Run nginx."),
                "package": option(t.package, "nginx", "The Debian package providing nginx."),
                "virtualHosts": option(t.attrs_of(VHOST), {}, "Virtual hosts by server name.",
                                       {"localhost": {"root": "/srv/www"}}),
                "appendHttpConfig": option(t.str_, "", "Lines added to the http block."),
            }
        }
    },
)
