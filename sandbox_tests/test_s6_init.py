"""What the init does beyond the seed: exit codes, readiness, shutdown, reaping, users."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from framework.builder import build
from framework.errors import UserError
from framework.target import CommandFailed, TargetDied, WaitTimeout

EXIT_CODES = "images/exit-codes.yaml"


@pytest.mark.parametrize(
    ("env", "code", "culprit"),
    [
        ({"PRE_EXIT": "7"}, 7, "pre"),
        ({"DAEMON_EXIT": "3"}, 3, "daemon"),
        ({"DAEMON_SIGNAL": "KILL"}, 128 + 9, "daemon"),
        ({"POST_EXIT": "9"}, 9, "post"),
    ],
    ids=["oneshot-pre", "long-run-exit", "long-run-killed", "oneshot-post"],
)
def test_exit_code_is_the_failing_steps_own(sandbox, env, code, culprit):
    box = sandbox(EXIT_CODES, env=env)
    assert box.wait() == code
    box.wait_for_log(rf"^s6-init: {culprit} failed with exit code {code}; stopping")


def test_sigterm_stops_with_143_and_sigint_with_130(sandbox):
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        box = sandbox(EXIT_CODES)
        box.wait_for_log(r"^s6-init: all services started$")
        began = time.monotonic()
        box.signal(signum)
        assert box.wait() == code
        assert time.monotonic() - began < 2, "shutdown must end as soon as all is down"


def test_only_oneshots_exit_0_when_done(sandbox):
    box = sandbox("images/oneshots-only.yaml")
    assert box.wait() == 0
    assert "only: only oneshot" in box.logs()


def test_readiness_before_oneshot_post_10_of_10(sandbox):
    boxes = [sandbox("images/slow-listener.yaml") for _ in range(10)]
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda b: b.wait_for_log(r"^provision: provisioned$", timeout=20),
                      boxes))
    for box in boxes:
        assert box.exit_code is None
        assert "failed" not in box.logs()


def test_daemon_ignoring_sigterm_is_killed_after_its_stop_timeout(sandbox):
    box = sandbox("images/stubborn.yaml")
    box.wait_for_log(r"^stubborn: ignoring SIGTERM$")
    began = time.monotonic()
    assert box.stop() == 143
    assert 0.9 < time.monotonic() - began < 3


def test_orphans_are_reaped_within_1s(sandbox):
    box = sandbox("images/orphans.yaml")
    box.wait_for_file("/run/orphan.pid")
    pid = box.read_file("/run/orphan.pid").strip()
    # The orphan lives 0.3 s; a zombie would keep its /proc entry.
    box.wait_until_succeeds(f"[ ! -e /proc/{pid} ]", timeout=1.3)


def test_sigterm_during_startup_stops_cleanly(sandbox):
    box = sandbox("images/slow-start.yaml")
    box.wait_for_log(r"^slow: slow starts$")
    began = time.monotonic()
    assert box.stop() == 143
    assert time.monotonic() - began < 2
    assert "daemon runs" not in box.logs()


def test_failing_oneshot_pre_never_starts_long_runs(sandbox):
    box = sandbox(EXIT_CODES, env={"PRE_EXIT": "1"})
    assert box.wait() == 1
    assert "daemon runs" not in box.logs() and "post runs" not in box.logs()


def test_restart_on_failure_restarts_at_least_twice(sandbox):
    box = sandbox("images/longrun-restart.yaml")
    box.wait_for_log(r"(restarting it \(restartOnFailure\)[\s\S]*){2}", timeout=5)
    assert box.exit_code is None


def test_restarted_container_reuses_its_state(sandbox):
    first = sandbox("images/simple.yaml")
    first.wait_for_log(r"^simple: simple service running$")
    assert first.stop() == 143
    again = sandbox("images/simple.yaml", workdir=first.workdir)
    again.wait_until_succeeds("/etc/s6/status")
    assert again.service_status("simple") == "ready"


def test_service_runs_as_its_user(sandbox):
    box = sandbox("images/user.yaml")
    box.wait_for_log(r"^asuser: running as app uid 1000$")


def test_status_reports_each_service(sandbox):
    box = sandbox(EXIT_CODES)
    box.wait_for_log(r"^s6-init: all services started$")
    assert box.succeed("/etc/s6/status").splitlines() == [
        "daemon long-run ready", "pre oneshot-pre done", "post oneshot-post done"]


def test_after_cycle_is_rejected_at_build_time(tmp_path):
    definition = tmp_path / "cycle.yaml"
    definition.write_text(
        "image: {name: cycle}\n"
        "s6:\n  services:\n"
        "    a: {type: oneshot-pre, script: 'true', after: [b]}\n"
        "    b: {type: oneshot-pre, script: 'true', after: [a]}\n")
    with pytest.raises(UserError, match=r"`after` cycle among oneshot-pre services: "
                                        r"a -> b -> a"):
        build(definition)


def test_a_command_runs_inside_right_after_start(sandbox):
    """bwrap reports the init's pid before it has its root: execute must wait for it."""
    for _ in range(5):
        box = sandbox("images/probe.yaml")
        assert box.succeed("echo inside") == "inside\n"


def test_a_command_may_open_its_output_by_path(sandbox):
    box = sandbox("images/probe.yaml")
    assert box.succeed("echo out > /dev/stdout; echo err > /dev/stderr") == "out\nerr\n"


def test_a_background_process_holding_the_output_does_not_hang_a_command(sandbox):
    box = sandbox("images/probe.yaml")
    began = time.monotonic()
    assert box.succeed("sleep 30 & echo started") == "started\n"
    assert time.monotonic() - began < 5


def test_the_shared_contract_in_the_sandbox(sandbox):
    """The vocabulary and errors the VM tier has too (framework.target): port waits, a
    failed check as an AssertionError with its fields, a timeout with the last output."""
    box = sandbox("images/slow-listener.yaml")
    box.wait_for_open_port(8080)
    assert box.read_file("/etc/www/index.html") == "provisioned\n"
    with pytest.raises(CommandFailed, match=r"`echo oops; exit 3` exited 3; output:\noops") \
            as failed:
        box.succeed("echo oops; exit 3")
    assert isinstance(failed.value, AssertionError) and failed.value.status == 3
    with pytest.raises(WaitTimeout, match=r"timed out after 0.5 s waiting for `echo no; false` "
                                          r"to succeed; last output:\nno"):
        box.wait_until_succeeds("echo no; false", timeout=0.5)
    box.wait_for_closed_port(8081, timeout=5)  # nothing listens there


def test_a_wait_on_a_sandbox_that_exited_ends_at_once_and_is_no_failed_check(sandbox):
    box = sandbox("images/longrun-fails.yaml")
    began = time.monotonic()
    with pytest.raises(TargetDied, match=r"the sandbox exited with code 3 while waiting for "
                                         r"`false` to succeed") as died:
        box.wait_until_succeeds("false")
    assert not isinstance(died.value, AssertionError)
    assert time.monotonic() - began < 10, "not at the wait's timeout"
