# trio-gateway: `make run` starts the demo, `make test` runs every test, `make bench` measures.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
APT_PACKAGES_BENCH := nginx-light wrk valgrind
APT_PACKAGES_TEST := redis-server slapd
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y

.PHONY: install run test test-deps lint bench bench-micro bench-load bench-instructions bench-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	@touch $(STAMP)

# Starts the demo echo upstream on 127.0.0.1:9081 and the gateway on config.json (:9080).
run: install
	@$(PY) bench/echo_upstream.py --port 9081 & upstream=$$!; \
	trap 'kill $$upstream 2>/dev/null' EXIT INT TERM; \
	$(PY) -m gateway --config config.json

# Debian packages the tests need: a real redis-server and a real OpenLDAP slapd (the
# fixtures start them on free ports; the packages' own services are not used).
test-deps:
	@missing=""; for p in redis-server slapd; do command -v $$p >/dev/null || [ -x /usr/bin/$$p ] || [ -x /usr/sbin/$$p ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  $(APT_INSTALL) $(APT_PACKAGES_TEST) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update >/dev/null && $(APT_INSTALL) $(APT_PACKAGES_TEST) >/dev/null; }; \
	fi

test: install test-deps lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check gateway tests bench
	$(PY) -m ruff format --check gateway tests bench
	$(PY) -m mypy

# Debian packages for the load benchmark (nginx as baseline and fast upstream, wrk as client,
# valgrind for the instruction counts).
bench-deps:
	@missing=""; for p in nginx wrk valgrind; do command -v $$p >/dev/null || [ -x /usr/sbin/$$p ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  $(APT_INSTALL) $(APT_PACKAGES_BENCH) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update >/dev/null && $(APT_INSTALL) $(APT_PACKAGES_BENCH) >/dev/null; }; \
	fi

bench: bench-micro bench-load

bench-micro: install
	$(PY) bench/micro/hot_path.py
	$(PY) bench/micro/auth.py
	$(PY) bench/micro/limit_count.py
	$(PY) bench/micro/oidc.py

bench-load: install bench-deps
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench,test]'
	$(PY) bench/load/run.py

# Instructions per proxied request under callgrind: steady where req/s drift (not in `bench`).
bench-instructions: install bench-deps
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(PY) bench/load/instructions.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
