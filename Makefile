# One entry point for people and CI. Every target sets itself up: a fresh clone needs
# only python3 (>= 3.11) and make.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= data

.PHONY: demo test soak bench check wheel clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tillmesh demo --data $(DATA)

test: $(STAMP)
	$(BIN)/pytest -q

soak: $(STAMP)
	$(BIN)/pytest -q -m soak -o addopts=''

bench: $(STAMP)
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
