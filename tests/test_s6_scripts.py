"""The s6 scripts' rendering (framework/s6/scripts.py): every script is made from its file in
framework/s6/sh/, the marker-line slots are filled exactly, and every interpolated value is
quoted. Scripts that need no s6 run here under dash, the host's sh (busybox's sh is ash too)."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from framework.s6 import DEFAULT_STATE, NOTIFY_RECORD, scripts
from framework.s6.files import files_for
from framework.s6.plan import Plan, Service

SH = Path(__file__).resolve().parents[1] / "framework" / "s6" / "sh"
# A name evaluation would refuse; the scripts must still carry it as one word, unexpanded.
HOSTILE = "we'ird $(touch pwned) `x` *;|&"


def service(name: str, type: str = "long-run", **fields: Any) -> Service:
    spec: dict[str, Any] = dict(
        name=name, type=type, command=f"exec echo {name}", after=(), restart_on_failure=False,
        user=None, working_directory=None, environment={}, path=(), exec_logger=None,
        readiness="up", stop_timeout=5)
    return Service(**{**spec, **fields})


def everything(name: str = "svc") -> Plan:
    """A plan that uses every source file: each readiness, a user, a working directory,
    `path` packages, an execLogger, environment, oneshots before and after."""
    return Plan(
        pre=[service(f"{name}-pre", "oneshot-pre", environment={"A": "1 2"})],
        long_runs=[
            service(f"{name}-notify", readiness="sd-notify", user="redis",
                    working_directory="/var/lib/x y", path=("redis",)),
            service(f"{name}-port", readiness=8080, exec_logger="cat", restart_on_failure=True),
            service(f"{name}-file", readiness="/run/ready file"),
            service(f"{name}-up", command="set -e\ntrue"),
        ],
        post=[service(f"{name}-post", "oneshot-post", after=(f"{name}-notify",))],
    )


def generated(plan: Plan) -> dict[str, str]:
    return {f.path: f.content.decode() for f in files_for(plan)
            if f.kind == "file" and f.content.startswith(b"#!")}


def fixed_lines(name: str) -> list[str]:
    return [line for line in scripts.source(name).splitlines()
            if not scripts.MARKER.fullmatch(line)]


def contains_in_order(text: str, lines: list[str]) -> bool:
    """Whether every line of `lines` is a line of `text`, in that order."""
    remaining = iter(text.splitlines())
    return all(any(line == have for have in remaining) for line in lines)


def test_the_sources_are_package_resources_in_the_sh_folder():
    on_disk = sorted(p.name for p in SH.glob("*.sh"))
    as_resources = sorted(r.name for r in (files("framework.s6") / "sh").iterdir()
                          if r.name.endswith(".sh"))
    assert on_disk == as_resources


@pytest.mark.parametrize("name, text", [
    ("init.sh", scripts.INIT), ("lib.sh", scripts.LIB), ("prefix.sh", scripts.PREFIX),
    ("svscan-finish.sh", scripts.FINISH_SVSCAN), ("notify-record.sh", scripts.NOTIFY_RECORD_SCRIPT),
])
def test_a_fixed_script_is_its_file_unchanged(name, text):
    assert text == (SH / name).read_text()
    assert scripts.slots(name) == []


def test_every_source_file_is_in_a_generated_script_line_for_line():
    """Each file's fixed lines reach some generated script, verbatim and in order: nothing
    of the shell lives in Python but the per-service lines."""
    out = generated(everything())
    for source in sorted(p.name for p in SH.glob("*.sh")):
        lines = fixed_lines(source)
        if source in ("notify-listener.sh", "package-path.sh"):  # fragments, no shebang
            assert not lines[0].startswith("#!")
        assert any(contains_in_order(text, lines) for text in out.values()), source


def test_a_fixed_value_python_also_uses_agrees_with_the_files():
    assert f"S6_STATE=${{1:-{DEFAULT_STATE}}}" in scripts.INIT
    assert f"state=${{1:-${{S6_STATE:-{DEFAULT_STATE}}}}}" in scripts.source("status.sh")
    assert f"exit {scripts.INIT_ERROR}" in scripts.INIT
    assert f"exit {scripts.INIT_ERROR}" in scripts.source("notify-listener.sh")
    assert f"EXEC:{NOTIFY_RECORD} " in scripts.source("notify-listener.sh")


def test_a_slot_must_be_filled_and_only_a_marked_one():
    assert scripts.slots("run.sh") == ["service", "environment", "notify", "exec"]
    with pytest.raises(ValueError, match="finished"):
        scripts.render("finish.sh")
    with pytest.raises(ValueError, match="given"):
        scripts.render("finish.sh", finished=[], other=[])
    with pytest.raises(ValueError):
        scripts.render("init.sh", order=[])


def test_a_slot_line_replaces_its_marker_and_is_not_scanned_again():
    text = scripts.render("finish.sh", finished=["# @finished: not a marker any more", "x"])
    lines = text.splitlines()
    assert lines[-2:] == ["# @finished: not a marker any more", "x"]
    assert lines[:-2] == fixed_lines("finish.sh")
    # An empty slot leaves no line behind.
    assert scripts.render("check-file.sh", check=[]).splitlines() == fixed_lines("check-file.sh")


def test_the_per_service_lines_carry_each_name_as_one_quoted_word():
    pre, post = service(HOSTILE + "1", "oneshot-pre"), service(HOSTILE + "2", "oneshot-post")
    long_run = service(HOSTILE, readiness="/ready")
    plan = Plan(pre=[pre], long_runs=[long_run], post=[post])

    def filled(text: str, source: str) -> list[list[str]]:
        fixed = set(fixed_lines(source))
        return [shlex.split(line) for line in text.splitlines() if line not in fixed]

    assert filled(scripts.stage2(plan), "stage2.sh") == [
        ["await_svscan"],
        ["run_oneshot", pre.name, "||", "exit", "0"],
        ["supervise", HOSTILE],
        ["run_oneshot", post.name, "||", "exit", "0"],
        ["say", "all services started"],
    ]
    assert filled(scripts.status(plan), "status.sh") == [
        ["long_run", HOSTILE, "true"], ["oneshot", pre.name, "oneshot-pre"],
        ["oneshot", post.name, "oneshot-post"]]
    assert filled(scripts.finish(long_run), "finish.sh") == [
        ["longrun_finished", HOSTILE, "false", "$1", "$2"]]
    assert filled(scripts.log(long_run), "log.sh") == [["exec", "/etc/s6/prefix", HOSTILE]]
    assert filled(scripts.check(long_run) or "", "check-file.sh") == [["[", "-e", "/ready", "]"]]


def test_without_a_oneshot_pre_the_long_runs_start_with_s6_svscan():
    """Their links are in the image's scan directory, and stage 2 only waits for them."""
    plan = Plan(pre=[], long_runs=[service(HOSTILE), service("b")],
                post=[service("c", "oneshot-post")])
    links = {f.path: f.target for f in files_for(plan) if f.kind == "symlink"}
    assert links == {f"/etc/s6/scan/{HOSTILE}": f"../services/{HOSTILE}",
                     "/etc/s6/scan/b": "../services/b"}
    order = [shlex.split(line) for line in scripts.stage2(plan).splitlines()
             if line not in set(fixed_lines("stage2.sh"))]
    assert order[0] == ["wait_for", "-u", HOSTILE, "b", "||", "exit", "0"]
    with_pre = Plan(pre=[service("a", "oneshot-pre")], long_runs=plan.long_runs, post=[])
    assert not [f for f in files_for(with_pre) if f.kind == "symlink"]


def test_the_run_script_quotes_environment_user_directory_and_command():
    odd = "it's $HOME; `id`"
    svc = service("svc", environment={"B": odd, "A": ""}, user=odd, working_directory=odd,
                  command=f"echo {odd}", path=("x",))
    lines = scripts.run(svc, check=f"/etc/s6/services/{odd}/check").splitlines()
    assert lines[:3] == ["#!/bin/busybox sh", "# long-run svc", "exec 2>&1"]
    assert [shlex.split(line) for line in lines[3:5]] == [["export", "A="],
                                                          ["export", f"B={odd}"]]
    assert lines[5:8] == fixed_lines("package-path.sh")
    # The exec line, which goes on over the command's lines.
    argv = shlex.split("\n".join(lines[8:]))
    assert argv == ["exec", "/usr/bin/s6-notifyoncheck", "-3", "3", "-n", "0", "-w", "50",
                    "-c", f"/etc/s6/services/{odd}/check", "/usr/bin/s6-setuidgid", odd,
                    "/bin/bash", "-e", "-c", f"cd {shlex.quote(odd)} || exit 111\necho {odd}"]


def test_only_an_sd_notify_service_gets_the_listener():
    listener = fixed_lines("notify-listener.sh")
    assert contains_in_order(scripts.run(service("a", readiness="sd-notify"), None), listener)
    assert listener[-1] not in scripts.run(service("a", readiness=80), None)


def sh(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "script"
    path.write_text(script)
    return subprocess.run(["sh", str(path), *args], capture_output=True, text=True,
                          timeout=30, cwd=tmp_path)


def test_the_file_check_tests_the_very_path(tmp_path):
    target = tmp_path / HOSTILE
    check = scripts.check(service("a", readiness=str(target))) or ""
    assert sh(check, tmp_path).returncode == 1
    target.touch()
    assert sh(check, tmp_path).returncode == 0
    assert not (tmp_path / "pwned").exists()


def test_the_port_check_sees_a_listening_socket(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        check = scripts.check(service("a", readiness=port)) or ""
        assert sh(check, tmp_path).returncode == 1
        listener.listen()
        assert sh(check, tmp_path).returncode == 0


def test_the_status_script_names_each_service_as_it_is(tmp_path):
    """Without s6 every long-run reads as down; the oneshots' records are read by name."""
    plan = Plan(pre=[service(HOSTILE + "1", "oneshot-pre")], long_runs=[service(HOSTILE)],
                post=[service("post", "oneshot-post")])
    (tmp_path / "oneshots").mkdir()
    (tmp_path / "oneshots" / (HOSTILE + "1")).write_text("done\n")
    done = sh(scripts.status(plan), tmp_path, str(tmp_path))
    assert done.stdout.splitlines() == [f"{HOSTILE} long-run down",
                                        f"{HOSTILE}1 oneshot-pre done",
                                        "post oneshot-post pending"]
    assert done.returncode == 1
    assert not (tmp_path / "pwned").exists()


def test_the_prefix_script_prefixes_every_line(tmp_path):
    path = tmp_path / "prefix"
    path.write_text(scripts.PREFIX)
    done = subprocess.run(["sh", str(path), HOSTILE], input="a\n\\n b\nlast", text=True,
                          capture_output=True, timeout=30)
    assert done.stdout == f"{HOSTILE}: a\n{HOSTILE}: \\n b\n{HOSTILE}: last\n"


def test_generated_scripts_for_hostile_names_are_shellcheck_clean(tmp_path):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make setup installs it)")
    paths = []
    for i, (where, text) in enumerate(sorted(generated(everything(HOSTILE)).items())):
        paths.append(tmp_path / f"{i}-{Path(where).name}")
        paths[-1].write_text(text)
    done = subprocess.run(["shellcheck", "--shell=dash", "--severity=warning", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout


def test_the_shellcheck_lint_checks_the_source_files(tmp_path, monkeypatch):
    from framework.s6 import shellcheck

    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make setup installs it)")
    (tmp_path / "bad.sh").write_text("#!/bin/sh\nrm -rf $1/*\n")
    monkeypatch.setattr(shellcheck, "SOURCES", tmp_path)
    done = shellcheck.check([])
    assert done.returncode == 1
    assert "bad.sh" in done.stdout
    monkeypatch.setattr(shellcheck, "SOURCES", SH)
    assert shellcheck.check([]).returncode == 0
