import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cimages(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framework", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_eval_prints_the_image_name_of_the_example():
    result = cimages("eval", "images/example.yaml", "--option", "image.name")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"


def test_committed_option_reference_is_current():
    result = cimages("options")
    assert result.returncode == 0, result.stderr
    assert (ROOT / "docs/options.md").read_text() == result.stdout, (
        "docs/options.md is stale: run `make docs`"
    )


def test_version_is_the_installed_packages():
    from importlib.metadata import version

    result = cimages("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"cimages {version('cimages')}\n"


def test_a_closed_pipe_ends_quietly():
    # head reads one line and exits; cimages then writes into a pipe nobody reads.
    done = subprocess.run(
        f"{sys.executable} -m framework eval images/nginx.yaml --json | head -1; "
        "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout == "{\n"
    assert done.stderr == ""


def test_build_json_and_digestfile(tmp_path):
    digestfile = tmp_path / "digest"
    result = cimages("build", "images/empty.yaml", "-o", str(tmp_path / "out"), "--json",
                     "--digestfile", str(digestfile))
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert built["references"] == ["empty:latest"]
    assert digestfile.read_text() == built["digest"]
    assert built["digest"].startswith("sha256:") and len(built["digest"]) == 71
    assert Path(built["oci"], "index.json").is_file() and Path(built["archive"]).is_file()
    assert built["layers"]["total"] == built["layers"]["written"] + built["layers"]["reused"]


def test_an_interrupt_or_user_error_anywhere_is_one_line(capsys):
    from framework.errors import UserError, run_entry_point

    def interrupted() -> int:
        raise KeyboardInterrupt

    def refused() -> int:
        raise UserError("bad input; fix it")

    assert run_entry_point("cimages", interrupted) == 130
    assert capsys.readouterr().err == "cimages: interrupted\n"
    assert run_entry_point("demo", refused) == 2
    assert capsys.readouterr().err == "demo: error: bad input; fix it\n"


def test_ctrl_c_while_the_subcommands_import_is_an_interrupt(monkeypatch, capsys):
    import importlib

    from framework.cli import main

    def interrupted_import(name: str):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted_import)
    assert main(["build", "images/hello.yaml"]) == 130
    assert capsys.readouterr().err == "cimages: interrupted\n"
