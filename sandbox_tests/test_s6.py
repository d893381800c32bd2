"""The seed project's 15 s6 tests, by name, on real built images in the sandbox."""

from __future__ import annotations

import re

S6_DONT_TERMINATE = {"S6_DONT_TERMINATE_ON_ERROR": "1"}


def position(log: str, pattern: str) -> int:
    found = re.search(pattern, log, re.MULTILINE)
    assert found, f"{pattern!r} not in the output:\n{log}"
    return found.start()


def test_stopIfLongrunNoRestartFails(sandbox):
    box = sandbox("images/longrun-fails.yaml")
    assert box.wait() == 3
    box.wait_for_log(r"^failing: failing starts$")
    box.wait_for_log(r"^s6-init: failing failed with exit code 3; stopping the container$")


def test_stopIfLongrunRestart(sandbox):
    box = sandbox("images/longrun-restart.yaml")
    # s6-supervise restarts at most once a second: two runs each take about 1 s.
    box.wait_for_log(r"(^flaky: flaky run$[\s\S]*){2}", timeout=5)
    box.wait_for_log(r"(^clean: clean run$[\s\S]*){2}", timeout=5)
    assert box.exit_code is None, "a restarted service must not stop the container"
    assert "restarting it (restartOnFailure)" in box.logs()


def test_stopIfOneshotFail(sandbox):
    box = sandbox("images/oneshot-fails.yaml")
    assert box.wait() == 5
    log = box.logs()
    assert "broken: broken runs" in log
    assert "s6-init: broken failed with exit code 5" in log
    assert "next runs" not in log and "daemon runs" not in log


def test_dependentOneshot(sandbox):
    box = sandbox("images/dependent-oneshot.yaml")
    box.wait_for_log(r"^daemon: daemon runs$")
    log = box.logs()
    assert (position(log, "^first: first begins$") < position(log, "^first: first ends$")
            < position(log, "^second: second begins$") < position(log, "^daemon: daemon runs$"))


def test_oneshotPost(sandbox):
    box = sandbox("images/oneshot-post.yaml")
    box.wait_for_log(r"^post: post sees ready$")
    log = box.logs()
    assert position(log, "^daemon: daemon starts$") < position(log, "^post: post sees ready$")
    box.wait_until_succeeds("/etc/s6/status")
    assert box.service_status("daemon") == "ready"
    assert box.service_status("post") == "done"


def test_path(sandbox):
    box = sandbox("images/path.yaml")
    box.wait_for_log(r"^greeter: Hello, world!$")
    assert box.service_status("greeter") == "done"


def test_propagatedEnv(sandbox):
    box = sandbox("images/env.yaml", env={"FROM_CALLER": "caller-value"})
    box.wait_for_log(r"^printer: .* caller=caller-value ")


def test_env(sandbox):
    box = sandbox("images/env.yaml")
    box.wait_for_log(r"^printer: service=service value with spaces image=image-value "
                     r"caller=unset ")


def test_s6DontTerminateOnError(sandbox):
    box = sandbox("images/longrun-fails.yaml", env=S6_DONT_TERMINATE)
    box.wait_for_log(r"^s6-init: failing failed with exit code 3; "
                     r"S6_DONT_TERMINATE_ON_ERROR is set, supervision stays up$")
    assert box.exit_code is None
    assert box.service_status("bystander") == "ready"
    assert box.service_status("failing") == "down"  # not restarted: it failed for good
    assert box.stop() == 143


def test_s6SimpleService(sandbox):
    box = sandbox("images/simple.yaml")
    box.wait_for_log(r"^simple: simple service running$")
    box.wait_until_succeeds("/etc/s6/status")
    assert box.succeed("/etc/s6/status") == "simple long-run ready\n"


def test_preStart(sandbox):
    box = sandbox("images/prestart.yaml")
    box.wait_for_log(r"script runs$")
    log = box.logs()
    assert position(log, "preStart runs$") < position(log, "script runs$")


def test_workingDirectory(sandbox):
    box = sandbox("images/workdir.yaml")
    box.wait_for_log(r"^where: cwd=/usr/share$")


def test_oneshotPre(sandbox):
    box = sandbox("images/oneshot-pre.yaml")
    box.wait_for_log(r"^daemon: daemon sees setup done$")
    log = box.logs()
    assert position(log, "^setup: setup finished$") < position(log, "^daemon: daemon sees")


def test_logger(sandbox):
    box = sandbox("images/logger.yaml")
    # In order; stage 2's own lines may come between (the init's output is one stream).
    box.wait_for_log(r"^chatty: prefix - first line$[\s\S]*^chatty: prefix - second line$")


def test_preservePATH(sandbox):
    path = "/opt/custom/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    box = sandbox("images/env.yaml", env={"PATH": path})
    box.wait_for_log(rf"^printer: .* path=(.*:)?{re.escape(path)}$")


def test_readiness_of_long_runs_with_their_own_user(sandbox):
    """TCP port (a real memcached as `memcache`, in its working directory), file and
    notification-fd readiness all work for a long-run with `user`."""
    box = sandbox("images/readiness-as-user.yaml")
    box.wait_for_log(r"^check: ready$", timeout=20)
    log = box.logs()
    assert "s6-notifyoncheck" not in log, log
    assert re.search(r"^check: STAT pid \d+", log, re.MULTILINE), log
    pid = box.succeed("busybox pidof memcached").strip()
    assert box.succeed(f"stat -c %U /proc/{pid}") == "memcache\n"
    assert box.succeed(f"readlink /proc/{pid}/cwd") == "/var/lib/memcache\n"
    for name in ("memcached", "marker", "notifier"):
        assert box.service_status(name) == "ready"
    assert box.service_status("check") == "done"
