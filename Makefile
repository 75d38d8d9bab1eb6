# One entry point for people and CI. Every target sets itself up: a fresh clone needs
# only python3 (>= 3.11) and make.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= data

# Debian packages the tests use (the browser test, the clock-skew test, HQ on PostgreSQL).
# Installed here, visibly and only where missing, never from inside a test; needs root.
SYSTEM_DEPS := chromium:/usr/bin/chromium faketime:/usr/bin/faketime \
	postgresql-15:/usr/lib/postgresql/15/bin/initdb

.PHONY: demo test soak bench check wheel clean system-deps

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tillmesh demo --data $(DATA)

system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do \
	  [ -x "$${dep#*:}" ] || missing="$$missing $${dep%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages the tests need:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

test: $(STAMP) system-deps
	$(BIN)/pytest -q

soak: $(STAMP) system-deps
	$(BIN)/pytest -q -m soak -o addopts=''

bench: $(STAMP) system-deps
	$(BIN)/pytest -q -s -m bench -o addopts='' tests/bench

check: $(STAMP)
	$(BIN)/ruff check core conflict broker replicas tests
	$(BIN)/ruff format --check core conflict broker replicas tests
	$(BIN)/mypy

wheel: $(STAMP)
	$(BIN)/pip wheel -q --no-deps -w dist .
	@ls dist/tillmesh-*.whl

clean:
	rm -rf $(VENV) $(DATA) dist build .pytest_cache .mypy_cache .ruff_cache
