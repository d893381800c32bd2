"""The cimages pytest plugin, loaded through the `pytest11` entry point `cimages` by any
project that installs cimages (disable it with `-p no:cimages`).

Its parts are registered under their module names, so a run that also names one with
`-p framework.pytest_plugin.vm` (or an old conftest's `pytest_plugins`) loads it once.
"""

pytest_plugins: list[str] = [
    "framework.pytest_plugin.images",  # the `image` marker and fixture, `cimages_images`
    "framework.pytest_plugin.sandbox",  # the `sandbox` fixture
    "framework.pytest_plugin.vm",  # `vm` and its session fixtures, --accel & co.
]
