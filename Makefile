# Each target sets itself up: it creates .venv when missing and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo mnist-figures bench bench-quick clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	touch $@

$(VENV)/.examples-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[examples]"
	touch $@

$(VENV)/.bench-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[bench]"
	touch $@

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest -n 2 -q

demo: $(VENV)/.examples-deps
	$(BIN)/python -m examples.mnist --optimizers sgd,momentum,nesterov,rmsprop,adagrad,adadelta,adam --epochs 5 --source idx

mnist-figures: $(VENV)/.examples-deps
	$(BIN)/python -m examples.mnist --optimizers sgd,momentum,nesterov,rmsprop,adagrad,adadelta,adam --epochs 5 --source idx --out docs/mnist --readme README.md

bench: $(VENV)/.bench-deps
	$(BIN)/python -m benchmarks

bench-quick: $(VENV)/.bench-deps
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) results
