"""The project's pytest plugin (entry point `cimages`: `plugin.py`): the `sandbox` fixture
(sandbox tier), `vm` (VM tier) and `image` (both), and the `image` marker."""
