"""The `sandbox` fixture: `sandbox(definition, env=None)` builds the image (once per
session), starts its init in a fresh bubblewrap sandbox and returns the running
`framework.sandbox.runner.Sandbox`. A relative definition path is resolved against the
test file's directory. After the test every sandbox is killed (its whole PID namespace)
and its files deleted; its output is printed so a failing test shows it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from framework.sandbox.image import start_image
from framework.sandbox.runner import Sandbox

_builds: dict[Path, Any] = {}


def built(definition: Path) -> Any:
    """The BuildResult of a definition, built once per test session."""
    from framework.builder import build

    if definition not in _builds:
        _builds[definition] = build(definition)
    return _builds[definition]


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Callable[..., Sandbox]]:
    started: list[Sandbox] = []
    base = Path(request.path).parent

    def start(definition: str | Path, env: Mapping[str, str] | None = None,
              workdir: Path | None = None) -> Sandbox:
        """`workdir`: an earlier sandbox's, to restart that container (its files kept)."""
        box = start_image(built((base / definition).resolve()), env=env, workdir=workdir)
        started.append(box)
        return box

    yield start
    for box in started:
        running = box.exit_code is None
        output = box.logs()
        box.cleanup()
        print(f"--- sandbox output (init pid {box.init_pid}, "
              f"{'killed' if running else f'exit code {box.exit_code}'}) ---\n{output}")
        assert not Path(f"/proc/{box.init_pid}").exists(), "a sandbox process survived"
