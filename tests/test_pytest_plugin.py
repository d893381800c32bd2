"""The pytest plugin as another repository sees it: loaded by its entry point (no conftest),
its marker registered under --strict-markers, image names resolved in the `cimages_images`
folder, and an unknown name failing with the names there are. No VM, no sandbox started."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
STRICT = ('[tool.pytest.ini_options]\n'
          'addopts = "--strict-markers --strict-config -p no:cacheprovider"\n')


def project(pytester: pytest.Pytester, test: str, ini: str = "",
            images: dict[str, str] | None = None) -> None:
    """A repository of its own: pyproject settings, one test module, image definitions."""
    pytester.makepyprojecttoml(STRICT + ini)
    pytester.makepyfile(test_project=textwrap.dedent(test))
    for path, text in (images or {}).items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # In process, the plugin's modules are already imported by this run, which pytest warns
    # cannot be assertion-rewritten; a real project's run imports them fresh.
    return pytester.runpytest("-W", "ignore::pytest.PytestAssertRewriteWarning", *args)


def test_the_plugin_is_a_pytest11_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("cimages") == "framework.pytest_plugin.plugin", (
        "the installed cimages lacks its entry point: reinstall it (`pip install -e .`)")


def test_the_image_marker_holds_under_strict_markers_without_a_conftest(
        pytester: pytest.Pytester) -> None:
    project(pytester, """
        import pytest

        @pytest.mark.image("web", "db")
        def test_marked(request):
            assert [m.args for m in request.node.iter_markers("image")] == [("web", "db")]
    """)
    assert not (pytester.path / "conftest.py").exists()
    run(pytester).assert_outcomes(passed=1)
    markers = run(pytester, "--markers")
    assert markers.ret == 0
    markers.stdout.fnmatch_lines(["@pytest.mark.image([*]names):*"])


def test_an_unknown_image_fails_once_naming_the_folder_and_its_images(
        pytester: pytest.Pytester) -> None:
    project(pytester, """
        def test_image(image):
            image("webb")

        def test_sandbox(sandbox):
            sandbox("webb")
    """, images={"images/web.yaml": "image: {name: web}\n",
                 "images/db.yaml": "image: {name: db}\n"})
    result = run(pytester)
    result.assert_outcomes(failed=2)
    folder = pytester.path / "images"
    result.stdout.fnmatch_lines([
        f"*no image `webb`: {folder}/webb.yaml does not exist; the images there are: db, web.*"
        "`cimages_images` ini option*",
    ] * 2)
    # One message, not a traceback through the plugin's code.
    assert "definition_path" not in result.stdout.str()


def test_the_cimages_images_ini_option_moves_the_folder(pytester: pytest.Pytester) -> None:
    project(pytester, """
        def test_unknown(image):
            image("web")
    """, ini='cimages_images = "defs/containers"\n',
        images={"defs/containers/api.yaml": "image: {name: api}\n",
                "images/web.yaml": "image: {name: web}\n"})
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*no image `web`: {pytester.path}/defs/containers/web.yaml does not exist; the "
        "images there are: api.*(now `defs/containers`*",
    ])


def test_a_missing_images_folder_is_said(pytester: pytest.Pytester) -> None:
    project(pytester, """
        def test_unknown(image):
            image("web")
    """)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no image `web`*; that folder does not exist.*"])


def test_names_and_paths_reach_the_same_definition_built_once(
        pytester: pytest.Pytester) -> None:
    # No packages: it builds in milliseconds, with no lock and no network.
    project(pytester, """
        def test_resolves(image):
            by_name = image("tiny")
            assert by_name.config["image"]["name"] == "cimages-plugin-tiny"
            assert by_name.digest.startswith("sha256:")
            assert image("defs/tiny.yaml") is by_name
    """, ini='cimages_images = "defs"\n',
        images={"defs/tiny.yaml": "image: {name: cimages-plugin-tiny}\n"})
    run(pytester).assert_outcomes(passed=1)


def test_every_fixture_is_documented(pytester: pytest.Pytester) -> None:
    project(pytester, "def test_nothing():\n    pass\n")
    result = run(pytester, "--fixtures")
    assert result.ret == 0
    lines = result.stdout.lines
    for name in ("sandbox", "image", "vm", "vm_root", "vm_accel", "vm_snapshot"):
        at = next((i for i, line in enumerate(lines) if line.split(" ")[0] == name), None)
        assert at is not None, f"--fixtures does not list {name}"
        assert lines[at + 1].strip() and "no docstring" not in lines[at + 1], lines[at:at + 2]


def test_a_bare_pytest_collects_every_tier_at_the_repository_root() -> None:
    # Guards testpaths, unique module basenames across tiers and a single registration of
    # the plugin (the entry point, not also the root conftest).
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    collected = {line.split("/")[0] for line in done.stdout.splitlines() if "::" in line}
    assert collected == {"tests", "sandbox_tests", "vmtests"}
