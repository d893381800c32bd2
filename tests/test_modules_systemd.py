"""The systemd -> s6 translation table, at evaluation level (SPEC section 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from module_defs import evaluate_yaml

from framework.errors import UserError
from framework.options import evaluate

IMAGES = Path(__file__).resolve().parent.parent / "images"


def s6_services(tmp_path, systemd_services: str) -> tuple[dict, list[str]]:
    result = evaluate_yaml(
        tmp_path,
        "image: {name: t}\nsystemd:\n  services:\n"
        + "".join(f"    {line}\n" for line in systemd_services.strip("\n").splitlines()),
    )
    return result.config["s6"]["services"], result.warnings


def test_simple_service_becomes_a_long_run(tmp_path):
    services, warnings = s6_services(tmp_path, "web: {script: 'exec python3 -m http.server'}")
    assert services["web"]["type"] == "long-run"
    assert services["web"]["script"] == "set -e\nexec python3 -m http.server\n"
    assert warnings == []


def test_exec_type_is_a_long_run_too(tmp_path):
    services, _ = s6_services(tmp_path, "web: {serviceConfig: {Type: exec, ExecStart: x}}")
    assert services["web"]["type"] == "long-run"


def test_oneshot_becomes_oneshot_pre(tmp_path):
    services, _ = s6_services(tmp_path, "init: {script: 'true', serviceConfig: {Type: oneshot}}")
    assert services["init"]["type"] == "oneshot-pre"
    assert services["init"]["restartOnFailure"] is False


def test_order_among_oneshots_is_kept_without_the_service_suffix(tmp_path):
    services, warnings = s6_services(tmp_path, """
        first: {script: 'echo 1', serviceConfig: {Type: oneshot}}
        second: {script: 'echo 2', after: [first.service], serviceConfig: {Type: oneshot}}
    """)
    assert services["second"]["after"] == ["first"]
    assert {s["type"] for s in services.values()} == {"oneshot-pre"}
    assert warnings == []


def test_oneshot_after_a_simple_service_is_post_and_so_are_its_followers(tmp_path):
    services, warnings = s6_services(tmp_path, """
        db: {script: 'exec sleep infinity'}
        provision: {script: 'true', after: [db.service], serviceConfig: {Type: oneshot}}
        report: {script: 'true', after: [provision], serviceConfig: {Type: oneshot}}
        setup: {script: 'true', serviceConfig: {Type: oneshot}}
        late: {script: 'true', after: [setup, db], serviceConfig: {Type: oneshot}}
    """)
    assert services["provision"]["type"] == "oneshot-post"
    assert services["provision"]["after"] == ["db"]
    assert services["report"]["type"] == "oneshot-post"
    assert services["report"]["after"] == ["provision"]
    assert services["setup"]["type"] == "oneshot-pre"
    # Every oneshot-pre has run before any oneshot-post: that order needs no `after`.
    assert services["late"]["after"] == ["db"]
    assert warnings == []


def test_pre_start_runs_before_the_main_command_in_its_own_subshell(tmp_path):
    services, _ = s6_services(tmp_path, """
        web:
          preStart: mkdir -p /run/web
          serviceConfig: {ExecStart: 'web --port 80', ExecStartPre: ['-rm /run/web/pid', 'check']}
    """)
    assert services["web"]["script"] == (
        "set -e\n(\nmkdir -p /run/web\n)\nrm /run/web/pid || true\ncheck\nexec web --port 80\n"
    )


def test_exec_start_with_at_sets_argv0(tmp_path):
    services, warnings = s6_services(
        tmp_path, "web: {serviceConfig: {ExecStart: '@/usr/bin/prog prog-name -v --x'}}"
    )
    assert services["web"]["script"].splitlines()[-1] == (
        "exec /usr/lib/execline/bin/exec -a prog-name /usr/bin/prog -v --x"
    )
    assert warnings == []


def test_unsupported_exec_prefix_warns(tmp_path):
    services, warnings = s6_services(tmp_path, "web: {serviceConfig: {ExecStart: '+/bin/x'}}")
    assert services["web"]["script"].endswith("exec /bin/x\n")
    assert warnings == [
        "systemd.services.web: `serviceConfig.ExecStart` prefix `+` is not supported by the "
        "s6 translation; the command runs without it"
    ]


@pytest.mark.parametrize(("restart", "expected"), [("'no'", False), ("always", True),
                                                   ("on-failure", True)])
def test_restart_maps_to_restart_on_failure(tmp_path, restart, expected):
    services, warnings = s6_services(
        tmp_path, f"web: {{script: x, serviceConfig: {{Restart: {restart}}}}}"
    )
    assert services["web"]["restartOnFailure"] is expected
    assert warnings == []


def test_user_working_directory_environment_and_path_are_honoured(tmp_path):
    services, _ = s6_services(tmp_path, """
        web:
          script: exec web
          environment: {A: from-environment, B: b}
          path: [curl]
          serviceConfig:
            User: www
            WorkingDirectory: /srv
            Environment: ['A=from-serviceConfig "C=with space"', D=d]
    """)
    web = services["web"]
    assert web["user"] == "www"
    assert web["workingDirectory"] == "/srv"
    assert web["environment"] == {"A": "from-serviceConfig", "B": "b", "C": "with space",
                                  "D": "d"}
    # NixOS's default unit PATH comes first.
    assert web["path"] == ["coreutils", "findutils", "grep", "sed", "curl"]


def test_group_switches_user_and_group_with_s6_tools(tmp_path):
    services, _ = s6_services(tmp_path, """
        web: {script: exec web, serviceConfig: {User: www, Group: staff}}
    """)
    web = services["web"]
    # s6's `user` would set the user's own primary group: the script drops privileges itself.
    assert web["user"] is None
    assert web["script"] == (
        "exec s6-envuidgid -B www:staff /usr/lib/execline/bin/export GIDLIST '' "
        "s6-applyuidgid -Uz /bin/busybox sh -c "
        "'set -e\nexec web\n'\n"
    )


def test_disabled_service_is_not_translated(tmp_path):
    services, warnings = s6_services(tmp_path, "off: {enable: false, script: x}")
    assert services == {}
    assert warnings == []


def test_every_unsupported_option_warns_naming_service_and_option(tmp_path):
    _, warnings = s6_services(tmp_path, """
        job:
          script: x
          startAt: daily
          requires: [other.service]
          postStart: echo started
          after: [network.target]
          serviceConfig:
            Restart: on-abnormal
            Type: forking
            TimeoutStopSec: 5
            Environment: NOT_AN_ASSIGNMENT
    """)
    assert sorted(warnings) == sorted([
        "systemd.services.job: option `postStart` is not supported by the s6 translation; "
        "ignored",
        "systemd.services.job: option `requires` is not supported by the s6 translation; "
        "ignored",
        "systemd.services.job: option `startAt` is not supported by the s6 translation; "
        "ignored",
        "systemd.services.job: option `serviceConfig.TimeoutStopSec` is not supported by the "
        "s6 translation; ignored",
        "systemd.services.job: `serviceConfig.Restart = on-abnormal` is not supported (only "
        "no, always, on-failure); the service is not restarted",
        "systemd.services.job: `serviceConfig.Type = forking` is not supported (only simple, "
        "exec, notify, oneshot); run as simple",
        "systemd.services.job: `after = network.target` names no service of this image; the "
        "ordering is ignored",
        "systemd.services.job: `serviceConfig.Environment` has words that are not KEY=value "
        "(NOT_AN_ASSIGNMENT); ignored",
    ])


def test_ordering_a_long_run_warns(tmp_path):
    _, warnings = s6_services(tmp_path, """
        a: {script: x}
        b: {script: x, after: [a.service]}
    """)
    assert warnings == [
        "systemd.services.b: `after = a.service` orders a long-running service, which s6 "
        "does not do; ignored"
    ]


def test_restart_on_a_oneshot_warns(tmp_path):
    _, warnings = s6_services(
        tmp_path, "a: {script: x, serviceConfig: {Type: oneshot, Restart: on-failure}}"
    )
    assert warnings == [
        "systemd.services.a: `serviceConfig.Restart = on-failure` is not supported for "
        "oneshot services; they run once"
    ]


def test_a_service_with_nothing_to_run_warns(tmp_path):
    services, warnings = s6_services(tmp_path, "empty: {wantedBy: [multi-user.target]}")
    assert services == {}
    assert warnings == [
        "systemd.services.empty: has neither `script` nor `serviceConfig.ExecStart`; nothing "
        "to run, so it is not translated"
    ]


def test_script_and_exec_start_together_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"systemd.services.both: both `script` and "):
        s6_services(tmp_path, "both: {script: x, serviceConfig: {ExecStart: y}}")


def test_a_user_s6_service_of_the_same_name_conflicts_with_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"conflicting values for option `s6.services.web.type`"):
        evaluate_yaml(tmp_path, """
            image: {name: t}
            systemd: {services: {web: {script: x}}}
            s6: {services: {web: {type: oneshot-pre}}}
        """)


def test_example_systemd_image_orders_its_dependent_services():
    result = evaluate(IMAGES / "example-systemd.yaml")
    services = result.config["s6"]["services"]
    assert services["first"]["type"] == services["second"]["type"] == "oneshot-pre"
    assert services["second"]["after"] == ["first"]
    assert "dependent services 1" in services["first"]["script"]
    assert "dependent services 2" in services["second"]["script"]
    assert result.warnings == []
