"""The fixtures (`sandbox`, `vm`, `image`) and the `image` marker come from the installed
cimages pytest plugin (the `pytest11` entry point `cimages`, framework/pytest_plugin/), as in
any repository that installs cimages: registering them here too would load them twice.

This file stays, empty, as the rootdir's conftest: pytest's default import mode then puts
the checkout on sys.path, so `framework` imports from here even without an install."""
