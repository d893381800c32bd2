"""Images from another Debian release than the host's run the same init."""


def test_an_image_from_trixie_runs_its_init(sandbox):
    box = sandbox("images/trixie.yaml")
    found = box.wait_for_log(r"^release: running on Debian (\S+)$")
    assert found.group(1).startswith("13.")
    assert box.succeed("/etc/s6/status") == "release long-run ready\n"
    assert "Debian GNU/Linux 13 (trixie)" in box.read_file("/usr/lib/os-release")
