"""The nix image in the sandbox: Debian's nix-bin as a single-user install."""

from __future__ import annotations

import pytest


@pytest.mark.image("nix")
def test_nix_evaluates_an_expression(sandbox):
    box = sandbox("images/nix-idle.yaml")
    box.wait_for_log("all services started")
    assert box.succeed("nix-instantiate --eval -E '1 + 1'") == "2\n"
    assert box.succeed("nix --version").startswith("nix (Nix) 2.")
    assert "sandbox = false" in box.read_file("/etc/nix/nix.conf")
