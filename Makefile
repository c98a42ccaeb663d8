# Each target sets itself up: it creates .venv when missing and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# compat: a .pth path entry instead of setuptools' import-hook finder, so that type checkers
# (mypy on a user's script, run from anywhere) find the installed gradtx and its py.typed.
EDITABLE_MODE := --config-settings editable_mode=compat

.PHONY: test test-deep lint study demo mnist-figures bench bench-quick device-check docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]" $(EDITABLE_MODE)
	touch $@

$(VENV)/.lint-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[lint]" $(EDITABLE_MODE)
	touch $@

$(VENV)/.examples-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[examples]" $(EDITABLE_MODE)
	touch $@

$(VENV)/.bench-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[bench]" $(EDITABLE_MODE)
	touch $@

$(VENV)/.docs-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[docs]" $(EDITABLE_MODE)
	touch $@

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

# The property tests with 2,000 examples each (``make test`` runs the "ci" profile's 200).
test-deep: $(VENV)/.test-deps
	GRADTX_HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -n 2 --dist loadgroup -q tests/properties

# ruff and mypy read their settings from pyproject.toml ([tool.ruff], [tool.mypy]: packages = gradtx).
lint: $(VENV)/.lint-deps
	$(BIN)/ruff check gradtx tests examples benchmarks docs
	$(BIN)/ruff format --check gradtx
	$(BIN)/mypy

demo: $(VENV)/.examples-deps
	$(BIN)/python -m examples.mnist --optimizers sgd,momentum,nesterov,rmsprop,adagrad,adadelta,adam --epochs 5 --source idx

mnist-figures: $(VENV)/.examples-deps
	$(BIN)/python -m examples.mnist --optimizers sgd,momentum,nesterov,rmsprop,adagrad,adadelta,adam --epochs 5 --source idx --out docs/mnist --readme README.md

# The optimizer study (issue 13): every grid one compiled program; report and figures into docs/.
study: $(VENV)/.examples-deps
	$(BIN)/python -m examples.study --out docs/study --page docs/study.md

bench: $(VENV)/.bench-deps
	$(BIN)/python -m benchmarks

bench-quick: $(VENV)/.bench-deps
	$(BIN)/python -m benchmarks --quick

# On whatever accelerator JAX finds (CPU here): the device, a parity check, the quick benchmarks.
device-check: $(VENV)/.bench-deps
	$(BIN)/python -m benchmarks.device_check

# The generated pages (docs/gen_pages.py, committed), then the site into site/ (not committed).
docs: $(VENV)/.docs-deps
	$(BIN)/python docs/gen_pages.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

clean:
	rm -rf $(VENV) results
