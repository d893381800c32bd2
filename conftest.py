"""Registers the project's pytest plugin for every test folder."""
