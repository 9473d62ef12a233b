# Every target sets up what it needs on a fresh Debian machine: the apt packages pyfuse3
# compiles and mounts with, a virtualenv in .venv, and the package with its extras.
PYTHON  ?= $(shell command -v python3.11 || command -v python3)
VENV    ?= .venv
PY      := $(VENV)/bin/python
APT_PKGS := fuse3 libfuse3-dev pkg-config
# The tests run the real tools users run on a mount (gio: GNOME's file operations; openssl:
# a self-signed certificate for the TLS test).
TEST_APT_PKGS := rsync vim-tiny attr systemd libglib2.0-bin openssl
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# `make test` runs this many test files side by side (pytest-xdist, one file per worker, so a
# file's module-scoped emulator and mount stay shared): most tests wait on mounts and timers.
TEST_JOBS ?= 3

.PHONY: all deps test-deps apt venv test test-fast lint soak demo bench clean

all: test

# apt packages: installed only when one is missing, so a warm machine skips apt entirely.
deps:
	@$(MAKE) --no-print-directory apt PKGS="$(APT_PKGS)"

test-deps:
	@$(MAKE) --no-print-directory apt PKGS="$(APT_PKGS) $(TEST_APT_PKGS)"

apt:
	@missing=""; for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(MAKE) deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'  # test includes the emulator extra
	touch $@

venv: deps $(VENV)/.installed

# The gates first (seconds), then the suite: CI runs exactly this.
test: test-deps venv lint
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

# The tests that need no FUSE mount (seconds, not minutes).
test-fast: venv
	$(PY) -m pytest -m 'not fuse' $(PYTEST_ARGS)

# The gates: lint, format and types (config in pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check snfs tests bench
	$(VENV)/bin/ruff format --check snfs tests bench
	$(VENV)/bin/mypy

# Long runs of the write path (docs/WRITES.md, "Tests"): the model test (if this branch has it)
# for MINUTES, then random workers through a real mount with faults and daemon kills, MINUTES
# per mode (default and --write-back). Prints the seed; non-zero on any violation.
SEED    ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
MINUTES ?= 5
soak: test-deps venv
	@echo "soak: seed $(SEED), $(MINUTES) min"; rc=0; \
	if [ -f tests/test_writes_model.py ]; then \
	  SNFS_SOAK_SEED=$(SEED) SNFS_SOAK_MINUTES=$(MINUTES) \
	    $(PY) -m pytest tests/test_writes_model.py --timeout=0 -q -p no:cacheprovider || rc=1; \
	else echo "soak: no tests/test_writes_model.py on this branch; the model half is skipped"; fi; \
	$(PY) tests/soak/mount_soak.py --seed $(SEED) --minutes $(MINUTES) || rc=1; \
	exit $$rc

demo: venv
	$(VENV)/bin/snfs demo

bench: venv
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
