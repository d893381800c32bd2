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
