# One entry point for people and CI. `make demo` and `make test` run `setup` first, so a fresh
# Debian 12 machine needs nothing else.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
APT_PACKAGES := qemu-system-x86 qemu-utils qemu-user bubblewrap skopeo mmdebstrap s6 execline \
	apt-utils e2fsprogs xz-utils zstd chromium debian-archive-keyring nix-bin shellcheck \
	docker-registry podman runc
# Runs pytest on a tier only once it holds tests, so a missing tier is said, not hidden.
define run_tier
	@if compgen -G "$(1)/test_*.py" >/dev/null; then \
		$(PYTEST) $(1) --alluredir=allure-results/$(1) --clean-alluredir $(2) $(PYTEST_ARGS); \
	else echo "$(1): no tests yet"; fi
endef

.PHONY: setup demo test unit-tests sandbox-tests vm-tests lint bench docs report clean

setup: $(VENV)/.installed
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $$missing; \
	fi
	@# Allure's CLI comes from npm; Debian's nodejs/npm only where the machine has no Node.
	@command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m framework.demo

test: setup lint unit-tests sandbox-tests vm-tests

# ruff, mypy (framework/), then shellcheck over every script the s6 module generates for the images here (and
# the VM's init.sh): what is interpolated into them is the definitions' input.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m framework.s6.shellcheck images sandbox_tests/images vmtests/images \
		framework/vm/docker-host.yaml

# pytest-xdist workers for the unit and sandbox tiers: on two cores the unit tier takes
# 2m07 with two against 2m57 with one (measured in one session).
TEST_WORKERS ?= 2
unit-tests: setup
	$(call run_tier,tests,-n $(TEST_WORKERS))

sandbox-tests: setup
	$(call run_tier,sandbox_tests,-n $(TEST_WORKERS))

# One VM per pytest-xdist worker; each VM uses one host core under TCG.
VM_WORKERS ?= 2
vm-tests: setup
	$(call run_tier,vmtests,-n $(VM_WORKERS))

bench: setup
	$(PY) -m framework.bench

# The Allure HTML report of the last test run (each tier writes allure-results/<tier>).
report: setup
	$(VENV)/bin/cimages report allure-results/* -o allure-report

docs: setup
	$(VENV)/bin/cimages options > docs/options.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache bench/results.json \
		allure-results allure-report
