"""The sandbox tier's fixture, `sandbox`: images started under bubblewrap, no root, no VM."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from framework.pytest_plugin.images import built, definition_path
from framework.sandbox.image import start_image
from framework.sandbox.runner import Sandbox


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Callable[..., Sandbox]]:
    """`sandbox("web")`: builds images/web.yaml (once per session), starts its init in a
    fresh bubblewrap sandbox (no root, no VM) and returns the running Sandbox.

    A name is NAME.yaml in the `cimages_images` folder (ini option, default `images`,
    relative to the rootdir); a path (with a `/` or ending in `.yaml`, e.g.
    `sandbox("images/web.yaml")`) is relative to the test file's folder. Optional: `env`
    (added to the image's environment), `workdir` (an earlier sandbox's, to restart that
    container with its files kept).
    After the test every sandbox is killed (its whole PID namespace) and its files deleted;
    its output is printed, so a failing test shows it.
    """
    started: list[Sandbox] = []
    base = Path(request.path).parent

    def start(definition: str | Path, env: Mapping[str, str] | None = None,
              workdir: Path | None = None) -> Sandbox:
        path = definition_path(request.config, definition, base=base)
        box = start_image(built(path), env=env, workdir=workdir)
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
