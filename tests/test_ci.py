"""The CI matrix, one cell's outputs, the Allure report (rendered in Chromium), the GitHub
workflow and the Hydra jobset."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from framework.ci import TIERS
from framework.ci.browser import rendered_dom, serve
from framework.ci.matrix import Cell, collect, matrix
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


def test_matrix_has_one_cell_per_named_image_and_tier_and_one_per_tier_for_the_rest(project):
    cells = {c.name: (c.image, c.tier, len(c.tests)) for c in matrix(project)}
    assert cells == {
        "beta-sandbox": ("beta", "sandbox", 1), "sandbox-untagged": ("", "sandbox", 1),
        "alpha-vm": ("alpha", "vm", 2), "beta-vm": ("beta", "vm", 1),
        "vm-untagged": ("", "vm", 1),
    }


def assert_cells_cover_every_test(root: Path, cells: list[Cell]) -> None:
    """Per tier, the cells' tests together are exactly the tests pytest collects."""
    for tier in TIERS:
        collected = {str(t["nodeid"]) for t in collect(root, tier).tests}
        covered = {test for cell in cells if cell.tier == tier for test in cell.tests}
        assert covered == collected, (tier, collected ^ covered)


def test_the_cells_of_a_tier_run_every_test_of_the_tier(project):
    assert_cells_cover_every_test(project, matrix(project))


def test_matrix_json_lists_each_cell_with_its_name_and_test_count(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main(["matrix", "--json"]) == 0
    include = json.loads(capsys.readouterr().out)["include"]
    assert {"name": "vm-untagged", "image": "", "tier": "vm", "tests": 1} in include
    assert {"name": "alpha-vm", "image": "alpha", "tier": "vm", "tests": 2} in include
    # What hydra/cells.json holds: the same cells without their test counts.
    cell = Cell("", "vm", ("vmtests/test_vm.py::test_names_no_image",))
    assert cell.as_hydra() == {"name": "vm-untagged", "image": "", "tier": "vm"}


def test_a_test_naming_an_image_without_definition_is_an_error(project, monkeypatch, capsys):
    (project / "vmtests" / "test_typo.py").write_text(
        "import pytest\n\n@pytest.mark.image('alhpa')\ndef test_typo():\n    pass\n"
    )
    monkeypatch.chdir(project)
    assert main(["matrix"]) == 2
    err = capsys.readouterr().err
    assert "vmtests/test_typo.py::test_typo names image `alhpa`" in err
    assert "no images/alhpa.yaml; the images are: alpha, beta, gamma" in err


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


def test_ci_cell_runs_every_cell_the_matrix_lists(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    for cell in matrix(project):
        out = project / "out" / cell.name
        main(["ci-cell", cell.name, "--out", str(out)])
        junit = (out / "junit.xml").read_text()
        assert f'name="{cell.name}"' in junit and f'tests="{len(cell.tests)}"' in junit, junit
        ran = set(re.findall(r'<testcase classname="([^"]+)" name="([^"]+)"', junit))
        assert ran == {(c.rsplit("::", 1)[0].replace("/", ".").removesuffix(".py"),
                        c.rsplit("::", 1)[1]) for c in cell.tests}


def test_ci_cell_takes_the_empty_image_for_the_untagged_cell(project, monkeypatch):
    monkeypatch.chdir(project)
    assert main(["ci-cell", "", "vm", "--out", str(project / "u")]) == 0
    assert 'name="vm-untagged"' in (project / "u" / "junit.xml").read_text()


@pytest.mark.parametrize("args, message", [
    (["gamma", "vm"], "no vm test names image `gamma`"),
    (["gamma-vm"], "no vm test names image `gamma`"),
    (["delta", "vm"], "no image definition images/delta.yaml"),
    (["alpha", "qemu"], "unknown tier `qemu`"),
    (["alpha-qemu"], "no matrix cell `alpha-qemu`; the cells are: beta-sandbox, "),
    (["alpha", "vm", "x"], "one cell name (e.g. nginx-vm) or an image and a tier"),
])
def test_a_cell_nobody_tests_is_refused(project, monkeypatch, capsys, args, message):
    monkeypatch.chdir(project)
    assert main(["ci-cell", *args, "--out", str(project / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (project / "o").exists()


def test_with_every_test_tagged_there_is_no_untagged_cell(project, monkeypatch, capsys):
    (project / "sandbox_tests" / "test_sb.py").write_text(
        "import pytest\n\n@pytest.mark.image('beta')\ndef test_beta():\n    pass\n"
    )
    monkeypatch.chdir(project)
    assert main(["ci-cell", "sandbox-untagged", "--out", str(project / "o")]) == 2
    assert "every sandbox test names an image" in capsys.readouterr().err


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
    assert set(jobs) == {"unit", "matrix", "cell", "report"}
    runs = {name: [step.get("run", "") for step in job["steps"]] for name, job in jobs.items()}
    # What .ci/run runs: lint and unit tests here, the tiers in the cells.
    assert "make lint" in runs["unit"] and "make unit-tests" in runs["unit"]
    assert any("cimages matrix --json" in run for run in runs["matrix"])
    assert '.venv/bin/cimages ci-cell "${{ matrix.name }}" --out out' in runs["cell"]
    assert jobs["cell"]["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.cells) }}"
    assert jobs["report"]["needs"] == ["unit", "cell"]
    for name, job in jobs.items():
        # Debian 12, as the project is developed on; bubblewrap and QEMU need the privileges.
        assert job["container"]["image"] == "debian:bookworm", name
        if name in ("unit", "cell"):
            assert "--privileged" in job["container"]["options"], name
        # make, python3-venv and git come before the checkout and `make setup`.
        assert "python3-venv" in runs[name][0] and "git" in runs[name][0], name


def test_workflow_caches_only_verified_inputs_keyed_by_the_locks():
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())["jobs"]
    for name in ("unit", "cell"):
        caches = [s["with"] for s in jobs[name]["steps"] if s.get("uses") == "actions/cache@v4"]
        paths = {p for c in caches for p in c["path"].split()}
        assert {"~/.cache/pip", "~/.cache/cimages/debs", "~/.cache/cimages/blobs",
                "~/.cache/cimages/layers"} <= paths, name
        # Never the unpacked roots or the VM's disks and snapshots: those are rebuilt.
        assert not paths & {"~/.cache/cimages", "~/.cache/cimages/roots", "~/.cache/cimages/vm"}
        assert any("hashFiles('**/*.lock')" in c["key"] for c in caches), name
    cell_keys = [s["with"]["key"] for s in jobs["cell"]["steps"]
                 if s.get("uses") == "actions/cache@v4" and "debs" in s["with"]["path"]]
    # Each cell its own entry: one shared key would hold whatever the first cell saved.
    assert cell_keys and all("matrix.name" in key for key in cell_keys)


# --- Hydra ---------------------------------------------------------------------------------

HYDRA = ROOT / "hydra"


def nix_eval(expression: str, cwd: Path, tmp_path: Path) -> object:
    """Pure evaluation with Debian's nix-instantiate: no daemon, no store (dummy://), no
    state outside tmp_path."""
    nix = shutil.which("nix-instantiate")
    if nix is None:
        pytest.skip("nix-instantiate is missing: `make setup` installs Debian's nix-bin")
    home = tmp_path / "nix-home"
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "NIX_STATE_DIR": str(home / "state"),
           "NIX_CONF_DIR": str(home / "conf"), "XDG_CACHE_HOME": str(home / "cache")}
    result = subprocess.run(
        [nix, "--store", "dummy://", "--eval", "--strict", "--json", "-E", expression],
        cwd=cwd, capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# The jobs as plain data (no derivation is built; drvPath only hashes, in the dummy store).
JOBS = """builtins.mapAttrs (name: job: {
  inherit (job) type cell image tier system builder requiredSystemFeatures __noChroot drvPath;
  timeout = job.meta.timeout;
}) (import ./hydra/release.nix {})"""


def hydra_jobs_of(root: Path, cells: list[dict[str, str]], tmp_path: Path) -> None:
    """The jobset's jobs are exactly `cells` (as `cimages matrix --hydra` prints them), each a
    derivation of the builder that runs its cell."""
    jobs = nix_eval(JOBS, root, tmp_path)
    assert isinstance(jobs, dict)
    assert sorted(jobs) == sorted(c["name"] for c in cells)
    for cell in cells:
        job = jobs[cell["name"]]
        assert job["type"] == "derivation" and job["drvPath"].endswith(f"-{cell['name']}.drv")
        assert {k: job[k] for k in ("cell", "image", "tier")} == {
            "cell": cell["name"], "image": cell["image"], "tier": cell["tier"]}
        assert job["builder"] == "/bin/sh" and job["__noChroot"] is True
        assert "kvm" in job["requiredSystemFeatures"]


def test_the_hydra_jobs_are_the_cells_of_the_matrix(project, monkeypatch, capsys, tmp_path):
    shutil.copytree(HYDRA, project / "hydra", ignore=shutil.ignore_patterns("cells.json"))
    monkeypatch.chdir(project)
    assert main(["matrix", "--hydra"]) == 0
    printed = capsys.readouterr().out
    (project / "hydra" / "cells.json").write_text(printed)
    cells = json.loads(printed)
    assert {c["name"] for c in cells} >= {"alpha-vm", "vm-untagged", "sandbox-untagged"}
    hydra_jobs_of(project, cells, tmp_path)


def test_the_hydra_builder_runs_the_cell_and_keeps_failing_tests_a_build(tmp_path):
    script = (HYDRA / "build-cell.sh").read_text()
    assert 'cimages ci-cell "$cell" --out "$out"' in script and "make setup" in script
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", str(HYDRA / "build-cell.sh")],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout


def test_the_hydra_spec_declares_a_jobset_of_this_repository():
    spec = json.loads((HYDRA / "spec.json").read_text())
    # A dictionary of dictionaries: Hydra's static declarative spec, jobset name -> jobset.
    assert all(isinstance(jobset, dict) for jobset in spec.values())
    for jobset in spec.values():
        assert {"enabled", "hidden", "description", "nixexprinput", "nixexprpath",
                "checkinterval", "schedulingshares", "enableemail", "emailoverride",
                "keepnr", "inputs"} == set(jobset)
        assert (ROOT / jobset["nixexprpath"]).is_file()
        source = jobset["inputs"][jobset["nixexprinput"]]
        assert source["type"] == "git"


@pytest.fixture(scope="module")
def repository_cells() -> list[Cell]:
    return matrix(ROOT)


@pytest.mark.slow
def test_the_repositorys_cells_run_every_tier_test(repository_cells):
    assert_cells_cover_every_test(ROOT, repository_cells)


@pytest.mark.slow
def test_hydra_cells_json_is_current(repository_cells):
    current = json.loads((HYDRA / "cells.json").read_text())
    assert current == [c.as_hydra() for c in repository_cells], (
        "hydra/cells.json is stale: run `.venv/bin/cimages matrix --hydra > hydra/cells.json`"
    )


@pytest.mark.slow
def test_the_repositorys_hydra_jobs_are_its_cells(repository_cells, tmp_path):
    hydra_jobs_of(ROOT, [c.as_hydra() for c in repository_cells], tmp_path)


def test_the_matrix_finds_images_where_the_ini_option_says(project):
    (project / "images").rename(project / "defs")
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\ncimages_images = "defs"\n')
    assert {c.name for c in matrix(project)} >= {"alpha-vm", "beta-sandbox", "vm-untagged"}
