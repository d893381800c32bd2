"""A failing VM test leaves what is needed to see why: the serial console, dockerd's log,
the containers' logs and a screenshot, in the Allure results and in $CIMAGES_LOG_DIR; with
--keep-vm it says how to attach to the VM."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAILING = '''
def test_fails_on_purpose(vm):
    vm.succeed("echo written by the failing test > /dev/console")
    assert vm.succeed("echo from the vm") == "something else"
'''


def test_a_failing_vm_test_gets_its_logs_and_a_screenshot(tmp_path):
    (tmp_path / "test_inner.py").write_text(FAILING)
    results, logs = tmp_path / "allure", tmp_path / "logs"
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "framework.pytest_plugin.vm", f"--alluredir={results}", "--keep-vm",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "CIMAGES_LOG_DIR": str(logs)},
        # No controlling terminal: --keep-vm then says how to attach and goes on instead of
        # waiting for Enter.
        start_new_session=True,
    )
    assert inner.returncode == 1, inner.stdout[-3000:]
    assert "1 failed" in inner.stdout
    result = next(json.loads(p.read_text()) for p in results.glob("*-result.json"))
    # Made in the `vm` fixture's tear-down: Allure shows them under that test's tear-down.
    attached = {
        a["name"]: a
        for container in map(json.loads, map(Path.read_text, results.glob("*-container.json")))
        if result["uuid"] in container.get("children", [])
        for after in container.get("afters", [])
        for a in after.get("attachments", [])
    }
    assert {"serial console", "dockerd log", "screen"} <= set(attached), attached
    # Restored from the snapshot: the console shows this run's output.
    assert "written by the failing test" in (
        results / attached["serial console"]["source"]).read_text()
    assert (results / attached["screen"]["source"]).read_bytes().startswith(b"\x89PNG")
    said = inner.stdout + inner.stderr  # pytest shows the tear-down's stderr in the report
    attach = re.search(r"ssh -i (\S+) -o StrictHostKeyChecking=no -p (\d+) root@127\.0\.0\.1",
                       said)
    assert attach, said[-3000:]
    assert Path(attach[1]).read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert "no terminal: stopping it now" in said
    kept = {p.name for p in (logs / "test_fails_on_purpose").iterdir()}
    assert {"serial-console.log", "dockerd-log.log", "screen.png"} <= kept, kept
