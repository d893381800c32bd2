"""The caches in use by a running VM (its booted snapshot, root disk, unpacked root) are
refused by an eviction from another process, the one `cimages cache --gc/--clear` makes for
every entry, and the VM and the next restore go on working.

Eviction is asked for these entries only: a whole `--clear` would empty the real cache that
the rest of the tier shares (tests/test_cache.py clears whole temporary caches)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from framework.vm.machine import VMRoot

ROOT = Path(__file__).resolve().parent.parent

EVICT = """
import json, sys
from pathlib import Path
from framework import cache
wanted = set(json.loads(sys.argv[1]))
refused = {}
for folder in cache.scan():
    for entry in folder.entries:
        if str(entry.path) in wanted:
            refused[str(entry.path)] = not cache.evict(entry)
print(json.dumps(refused))
"""


def test_a_running_vms_snapshot_disk_and_root_survive_an_eviction(vm, vm_snapshot: Path,
                                                                  vm_root: VMRoot,
                                                                  vm_factory, tmp_path):
    vm.succeed("true")  # running, restored from the snapshot
    wanted = [str(vm_snapshot), str(vm_root.disk)]
    done = subprocess.run([sys.executable, "-c", EVICT, json.dumps(wanted)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == {path: True for path in wanted}
    assert vm_snapshot.is_file() and vm_root.disk.is_file()
    assert vm.succeed("echo still") == "still\n"
    other = vm_factory.machine(tmp_path / "second", "second")
    try:
        assert other.succeed("echo restored") == "restored\n"
    finally:
        other.crash()
