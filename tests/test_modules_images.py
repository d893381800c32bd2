"""Every predefined image and README example evaluates, without warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.options import evaluate

ROOT = Path(__file__).resolve().parent.parent
PREDEFINED = ["empty", "hello", "s6", "nginx", "example", "example-systemd", "nix"]
DEFINITIONS = [ROOT / "images" / f"{name}.yaml" for name in PREDEFINED] + sorted(
    (ROOT / "tests" / "readme_examples").glob("*.yaml")
)


def test_the_four_readme_examples_are_there():
    assert len(DEFINITIONS) == len(PREDEFINED) + 4


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_definition_evaluates_without_warnings(definition):
    assert evaluate(definition).warnings == []


def test_example_is_hello_with_alice():
    config = evaluate(ROOT / "images" / "example.yaml").config
    assert config["image"]["name"] == "hello"
    assert config["users"]["users"]["alice"]["isNormalUser"] is True


def test_s6_image_runs_nginx_as_an_s6_service():
    config = evaluate(ROOT / "images" / "s6.yaml").config
    assert config["systemd"]["services"] == {}
    assert config["s6"]["services"]["nginx"]["execStart"] == '/usr/sbin/nginx -g "daemon off;"'


@pytest.mark.slow
@pytest.mark.parametrize("definition", sorted((ROOT / "tests" / "readme_examples").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_readme_example_builds(definition, tmp_path):
    from framework.builder import build

    result = build(definition, tmp_path / "out")
    assert result.digest.startswith("sha256:")
    assert result.archive.is_file()
