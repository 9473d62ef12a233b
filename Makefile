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

.PHONY: all deps test-deps apt venv test test-fast lint demo bench clean

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
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests that need no FUSE mount (seconds, not minutes).
test-fast: venv
	$(PY) -m pytest -m 'not fuse' $(PYTEST_ARGS)

# The gates: lint, format and types (config in pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check snfs tests bench
	$(VENV)/bin/ruff format --check snfs tests bench
	$(VENV)/bin/mypy

demo: venv
	$(VENV)/bin/snfs demo

bench: venv
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
