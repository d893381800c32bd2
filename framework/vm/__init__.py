"""The VM tier: a QEMU machine whose root is an image built by the builder, running Docker.

Public API: `Machine` (framework.vm.docker: SPEC section 6 plus Docker helpers),
`docker_host()` (framework.vm.host: the VM root, built and cached), `booted_snapshot()`
(framework.vm.snapshot) and `select_accel()` (framework.vm.accel).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so `import framework.vm.accel` does not pull in paramiko and QMP.
    if name == "Machine":
        from framework.vm.docker import Machine

        return Machine
    raise AttributeError(name)
