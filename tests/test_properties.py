"""Property tests over the string-typed options a definition may set: whatever the string,
evaluation either refuses it (a UserError: exit 2 at the command line) or the generated
layer holds only normal paths inside the image, /etc/passwd and /etc/group keep one line
per account, and every generated script parses (`sh -n`)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.builder.accounts import account_files, accounts
from framework.builder.generated import GENERATORS
from framework.errors import UserError
from framework.options import evaluate

# Every character class a hostile value uses: quotes, $( ), newlines, .., /, NUL, spaces.
HOSTILE = st.text(alphabet=st.sampled_from(list("aZ09_-.:/ \n\t'\"$()`;|&<>*?\\\x00\x7f@#=")),
                  min_size=0, max_size=24)
ANY_TEXT = st.one_of(HOSTILE, st.text(max_size=24))

Place = Callable[[str], dict[str, Any]]
SERVICE = {"script": "true"}
# Each puts the string where one option (or option name) of a definition goes.
PLACES: dict[str, Place] = {
    "s6 service name": lambda v: {"s6": {"services": {v: SERVICE}}},
    "s6 script": lambda v: {"s6": {"services": {"a": {"script": v}}}},
    "s6 execStart": lambda v: {"s6": {"services": {"a": {"execStart": v}}}},
    "s6 user": lambda v: {"users": {"users": {"app": {"isSystemUser": True}}},
                          "s6": {"services": {"a": {**SERVICE, "user": v}}}},
    "s6 after": lambda v: {"s6": {"services": {"a": SERVICE, "b": {
        "type": "oneshot-post", "script": "true", "after": [v]}}}},
    "s6 workingDirectory": lambda v: {"s6": {"services": {"a": {
        **SERVICE, "workingDirectory": v}}}},
    "s6 environment value": lambda v: {"s6": {"services": {"a": {
        **SERVICE, "environment": {"X": v}}}}},
    "s6 environment name": lambda v: {"s6": {"services": {"a": {
        **SERVICE, "environment": {v: "x"}}}}},
    "s6 execLogger": lambda v: {"s6": {"services": {"a": {**SERVICE, "execLogger": v}}}},
    "s6 readiness": lambda v: {"s6": {"services": {"a": {**SERVICE, "readiness": v}}}},
    "systemd service name": lambda v: {"systemd": {"services": {v: {"script": "true"}}}},
    "systemd ExecStart": lambda v: {"systemd": {"services": {"a": {
        "serviceConfig": {"ExecStart": v}}}}},
    "systemd User/Group": lambda v: {"systemd": {"services": {"a": {
        "script": "true", "serviceConfig": {"User": v, "Group": v}}}}},
    "user name": lambda v: {"users": {"users": {v: {"isNormalUser": True}}}},
    "user description": lambda v: {"users": {"users": {"alice": {"description": v}}}},
    "user home": lambda v: {"users": {"users": {"alice": {"home": v, "createHome": True}}}},
    "user shell": lambda v: {"users": {"users": {"alice": {"shell": v}}}},
    "user group": lambda v: {"users": {"users": {"alice": {"group": v}}}},
    "group name": lambda v: {"users": {"groups": {v: {}}}},
    "etc path": lambda v: {"environment": {"etc": {v: {"text": "x"}}}},
    "etc text": lambda v: {"environment": {"etc": {"motd": {"text": v}}}},
    "etc owner": lambda v: {"environment": {"etc": {"motd": {"text": "x", "user": v}}}},
    "image name": lambda v: {"image": {"name": v}},
    "image tag": lambda v: {"image": {"name": "probe", "tag": v}},
    "image workingDir": lambda v: {"image": {"name": "probe", "workingDir": v}},
    "image env": lambda v: {"image": {"name": "probe", "env": {v: v}}},
}


SERVICES_NGINX = {"enable": True}
PLACES.update({
    "nginx virtual host": lambda v: {"services": {"nginx": {
        **SERVICES_NGINX, "virtualHosts": {v: {"root": "/srv"}}}}},
    "nginx location": lambda v: {"services": {"nginx": {**SERVICES_NGINX, "virtualHosts": {
        "localhost": {"locations": {v: {"return": "200 x"}}}}}}},
    "nginx return": lambda v: {"services": {"nginx": {**SERVICES_NGINX, "virtualHosts": {
        "localhost": {"locations": {"/x": {"return": v}}}}}}},
    "nginx root": lambda v: {"services": {"nginx": {**SERVICES_NGINX, "virtualHosts": {
        "localhost": {"root": v}}}}},
    "nginx listen addr": lambda v: {"services": {"nginx": {**SERVICES_NGINX, "virtualHosts": {
        "localhost": {"listen": [{"addr": v, "port": 80}]}}}}},
    "nix setting name": lambda v: {"nix": {"enable": True, "settings": {v: "x"}}},
    "nix setting value": lambda v: {"nix": {"enable": True, "settings": {"x": v}}},
    "systemd preStart": lambda v: {"systemd": {"services": {"a": {"script": "true",
                                                                  "preStart": v}}}},
    "systemd Environment": lambda v: {"systemd": {"services": {"a": {
        "script": "true", "serviceConfig": {"Environment": v}}}}},
    "systemd ExecStartPre": lambda v: {"systemd": {"services": {"a": {
        "script": "true", "serviceConfig": {"ExecStartPre": v}}}}},
    "systemd WorkingDirectory": lambda v: {"systemd": {"services": {"a": {
        "script": "true", "serviceConfig": {"WorkingDirectory": v}}}}},
    "user extraGroups": lambda v: {"users": {"users": {"alice": {"extraGroups": [v]}},
                                             "groups": {v: {}} if v.isidentifier() else {}}},
})


def generated(body: dict[str, Any], folder: Path) -> list[Any] | None:
    definition = folder / "probe.yaml"
    body = {**body, "image": {"name": "probe", **body.get("image", {})}}
    definition.write_text(yaml.safe_dump(body, allow_unicode=True))
    try:
        cfg = evaluate(definition).config
        files = account_files(accounts(cfg))
        for generator in GENERATORS:
            files += generator(cfg)
    except UserError:
        return None
    return files


def assert_confined(files: list[Any], folder: Path) -> None:
    scripts = folder / "scripts"
    scripts.mkdir(exist_ok=True)
    for i, f in enumerate(files):
        assert f.path.startswith("/") and os.path.normpath(f.path) == f.path, f.path
        assert not any(c in f.path for c in "\x00\n\r"), f.path
        if f.path.startswith("/etc/") and f.kind == "file" and f.content.startswith(b"#!"):
            (scripts / f"{i}").write_bytes(f.content)
        if f.path in ("/etc/passwd", "/etc/group", "/etc/shadow"):
            for line in f.content.decode().split("\n")[:-1]:  # as getpwent reads them
                fields = line.split(":")
                assert len(fields) == {"/etc/passwd": 7, "/etc/group": 4,
                                       "/etc/shadow": 9}[f.path], line
    done = subprocess.run(
        ["sh", "-c", 'for f in "$1"/*; do [ -e "$f" ] || continue; sh -n "$f" || echo "$f"; '
         'done', "check", str(scripts)], capture_output=True, text=True, timeout=60)
    assert done.stdout == "" and done.stderr == "", done.stdout + done.stderr


@pytest.mark.parametrize("place", sorted(PLACES))
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=ANY_TEXT)
def test_a_string_option_is_refused_or_stays_confined(place, value):
    with tempfile.TemporaryDirectory() as tmp:
        files = generated(PLACES[place](value), Path(tmp))
        if files is not None:
            assert_confined(files, Path(tmp))


# Not vacuous: each place takes a plain value, so the property above sees accepted ones.
PLAIN = {"image workingDir": "/srv", "s6 readiness": "/run/ready", "user home": "/home/a",
         "user shell": "/bin/sh", "s6 workingDirectory": "/srv", "etc owner": "root",
         "s6 user": "app", "systemd User/Group": "root", "user group": "users",
         "etc text": "nameserver 127.0.0.1\n", "s6 execLogger": "cat"}

PLAIN.update({"nginx location": "/api", "nginx root": "/srv", "nginx listen addr": "0.0.0.0",
              "nginx return": "200 ok", "systemd WorkingDirectory": "/srv",
              "systemd Environment": "A=b", "systemd ExecStartPre": "/bin/true",
              "nix setting name": "cores", "user extraGroups": "web"})


@pytest.mark.parametrize("place", sorted(PLACES))
def test_each_place_takes_a_plain_value(place, tmp_path):
    files = generated(PLACES[place](PLAIN.get(place, "web")), tmp_path)
    assert files is not None
    assert_confined(files, tmp_path)

