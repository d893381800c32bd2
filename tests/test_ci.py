"""The CI matrix, one cell's outputs, the Allure report (rendered in Chromium), the workflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from framework.ci.browser import rendered_dom, serve
from framework.ci.matrix import matrix
from framework.ci.report import generate
from framework.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small project: three images, tests in both tiers that name some of them."""
    for name in ("alpha", "beta", "gamma"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / f"{name}.yaml").write_text(f"image: {{name: {name}}}\n")
    (tmp_path / "vmtests").mkdir()
    (tmp_path / "vmtests" / "test_vm.py").write_text(textwrap.dedent("""
        import allure
        import pytest

        @pytest.mark.image("alpha")
        def test_alpha_boots():
            allure.attach("boot log", name="serial.log")

        @pytest.mark.image("alpha", "beta")
        def test_alpha_and_beta_fail():
            assert 1 == 2

        def test_names_no_image():
            pass
    """))
    (tmp_path / "sandbox_tests").mkdir()
    (tmp_path / "sandbox_tests" / "test_sb.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.image("beta")
        def test_beta_in_sandbox():
            pass

        def test_sandbox_fails():
            assert False
    """))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmarkers = ["image(*names): images"]\n'
    )
    return tmp_path


def test_matrix_has_one_cell_per_named_image_and_tier(project):
    cells = {(c.image, c.tier): len(c.tests) for c in matrix(project)}
    assert cells == {("beta", "sandbox"): 1, ("alpha", "vm"): 2, ("beta", "vm"): 1}


def test_a_cell_writes_junit_allure_logs_and_hydra_products(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    out = project / "out"
    assert main(["ci-cell", "alpha", "vm", "--out", str(out)]) == 1  # one test fails
    junit = (out / "junit.xml").read_text()
    assert 'tests="2"' in junit and 'failures="1"' in junit
    assert list((out / "allure-results").glob("*-result.json"))
    assert "test_alpha_and_beta_fail" in (out / "logs" / "pytest.log").read_text()
    products = (out / "nix-support" / "hydra-build-products").read_text().splitlines()
    assert products == [
        f"report junit {out / 'junit.xml'}",
        f"report allure {out / 'allure-results'}",
        f"file log {out / 'logs' / 'pytest.log'}",
    ]
    assert (out / "nix-support" / "failed").exists()


def test_a_cell_nobody_tests_is_refused(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main(["ci-cell", "gamma", "vm", "--out", str(project / "o")]) == 2
    assert "no vm test names image `gamma`" in capsys.readouterr().err
    assert not (project / "o").exists()


def test_the_report_shows_every_test_in_chromium(project, tmp_path):
    results = tmp_path / "results"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--alluredir={results}", "vmtests", "sandbox_tests"],
        cwd=project, capture_output=True, timeout=120,
    )
    report = generate([results], tmp_path / "report")
    with serve(report) as url:
        dom = rendered_dom(url)
    titles = re.findall(r'data-testid="tree-leaf-title"[^>]*>([^<]+)<', dom)
    # Allure opens the groups holding a failure; each tier of the sample has one.
    assert sorted(titles) == [
        "test_alpha_and_beta_fail", "test_alpha_boots", "test_beta_in_sandbox",
        "test_names_no_image", "test_sandbox_fails",
    ]


def test_workflow_is_valid_and_runs_the_matrix():
    workflow = ROOT / ".github" / "workflows" / "ci.yml"
    check = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
         "vendor.github-workflows", str(workflow)],
        capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    assert "cimages matrix --json" in json.dumps(jobs["matrix"])
    assert "cimages ci-cell" in json.dumps(jobs["cell"])
    assert jobs["report"]["needs"] == "cell"
