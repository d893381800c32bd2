"""Registers the project's pytest plugins for every test folder."""

pytest_plugins: list[str] = ["framework.pytest_plugin.sandbox", "framework.pytest_plugin.vm"]
