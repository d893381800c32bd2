"""Python option modules derive config from other options, to a fixpoint (as NixOS does)."""

from __future__ import annotations

from framework.modules import Module, evaluate, mk_default, option
from framework.modules import types as t
from framework.options import image

# A chain like nginx -> systemd -> s6: `web.enable` defines a `service`, whose presence adds
# a package; each step only sees the merged result of the previous round.
WEB = Module(
    "web", __file__,
    {"web": {"enable": option(t.bool_, False), "port": option(t.port, 80)}},
    config=lambda cfg: {"services": {"web": f"serve {cfg['web']['port']}"}}
    if cfg["web"]["enable"] else {},
)
SERVICES = Module(
    "services", __file__,
    {"services": option(t.attrs_of(t.str_), {}), "packages": option(t.list_of(t.str_), [])},
    config=lambda cfg: {"packages": ["supervisor"]} if cfg["services"] else {},
)
NAMED = Module(
    "named", __file__, {},
    config=lambda cfg: {"image": {"tag": mk_default("from-module")}},
)
MODULES = [image.MODULE, WEB, SERVICES, NAMED]


def test_derived_values_chain_through_modules(write):
    path = write("top.yaml", "image: {name: t}\nweb: {enable: true, port: 8080}\n")
    config = evaluate(path, MODULES).config
    assert config["services"] == {"web": "serve 8080"}
    assert config["packages"] == ["supervisor"]


def test_user_definitions_merge_with_module_definitions(write):
    path = write(
        "top.yaml", "image: {name: t}\nweb: {enable: true}\npackages: [curl]\n"
        "services: {other: run}\n",
    )
    config = evaluate(path, MODULES).config
    assert config["services"] == {"other": "run", "web": "serve 80"}
    assert config["packages"] == ["curl", "supervisor"]


def test_a_module_default_yields_to_the_user(write):
    assert evaluate(write("a.yaml", "image: {name: t}\n"), MODULES).config["image"]["tag"] == (
        "from-module"
    )
    path = write("b.yaml", "image: {name: t, tag: mine}\n")
    assert evaluate(path, MODULES).config["image"]["tag"] == "mine"


def test_disabled_module_contributes_nothing(write):
    config = evaluate(write("top.yaml", "image: {name: t}\n"), MODULES).config
    assert config["services"] == {}
    assert config["packages"] == []
