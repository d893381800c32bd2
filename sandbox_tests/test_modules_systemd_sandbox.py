"""systemd services translated to s6, running in the sandbox (SPEC section 3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from framework.options import evaluate

HERE = Path(__file__).resolve().parent


@pytest.mark.image("example-systemd")
def test_example_systemd_dependent_services_start_in_order(sandbox):
    box = sandbox("../images/example-systemd.yaml")
    box.wait_for_log(r"dependent services 2")
    box.wait_for_log(r"^execStart: serviceConfig.ExecStart running as execStart-shell$")
    box.wait_for_log(r"^preStart: systemd.services.preStart.script$")
    box.wait_for_log(r"^script: .* with environment.OUTPUT=output$")
    log = box.logs()
    assert re.findall(r"dependent services (\d)", log) == ["1", "2"]
    assert log.index("systemd.services.preStart.preStart") < log.index(
        "systemd.services.preStart.script")
    assert box.exit_code is None


def test_user_group_working_directory_environment_and_argv0(sandbox):
    definition = HERE / "images/systemd-subset.yaml"
    assert evaluate(definition).warnings == [
        "systemd.services.nightly: option `startAt` is not supported by the s6 translation; "
        "ignored"
    ]
    box = sandbox(definition)
    box.wait_for_log(r"^identity: user=svc group=svc pwd=/tmp$")
    box.wait_for_log(r"^identity: env=unit value/env/from-serviceConfig$")
    box.wait_for_log(r"^grouped: grouped user=svc group=staff$")
    box.wait_for_log(r"^nightly: nightly ran once$")
    # ExecStart's leading @: the program runs with the second word as its argv[0].
    box.wait_until_succeeds("for p in /proc/[0-9]*; do busybox tr '\\0' ' ' <$p/cmdline; echo; "
                            "done 2>/dev/null | busybox grep -x 'renamed-sleeper infinity '")


def test_group_applies_without_a_user_service_in_the_image(sandbox):
    box = sandbox("images/systemd-group.yaml")
    box.wait_for_log(r"^grouped: grouped user=svc group=staff$")


def test_type_notify_is_ready_when_the_daemon_says_so(sandbox):
    """A real sd_notify daemon (redis-server as `redis`) and a hand-made notifier whose
    READY=1 comes in a second datagram, after a delay: each oneshot after them starts only
    then."""
    box = sandbox("images/sd-notify.yaml")
    box.wait_for_log(r"^ping: PONG$", timeout=30)
    box.wait_for_log(r"^after-notifier: the notifier is ready$", timeout=30)
    log = box.logs()
    ready = log.index("Ready to accept connections")
    assert ready < log.index("ping: PONG")
    assert box.succeed("cat /run/s6/services/slow-notifier/notify.log") == (
        "STATUS=warming up\nSTATUS=nearly\nREADY=1\n")
    assert box.service_status("redis") == "ready"
    assert box.service_status("slow-notifier") == "ready"
    assert box.succeed("busybox ps -o user,args | grep '[r]edis-server'").split()[0] == "redis"
