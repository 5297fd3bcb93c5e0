# The README's commands. Each target sets up .venv first, so `make train` and
# `make test` work on their own from a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: help install install-test train test test-slow lint format readme ui app notebook clean

help:
	@echo "make train [ARGS='model=mlp ...']  train (default: the seed's CNN) and record it in MLflow"
	@echo "make test                          the fast test suite (small slices of MNIST)"
	@echo "make test-slow                     full-size training runs (accuracy targets)"
	@echo "make bench-NAME [ARGS=...]         run benchmarks/NAME.py (see benchmarks/README.md)"
	@echo "make readme                        rewrite README.md's figures from benchmarks/results/"
	@echo "make ui                            browse the runs: mlflow ui on 127.0.0.1:5000"
	@echo "make app [ARGS='--port 8502']      draw a digit: the champion and challenger read it (127.0.0.1:8501)"
	@echo "make notebook                      the seed's MLP-vs-CNN comparison, from MLflow (JupyterLab)"
	@echo "make lint / make format            ruff"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

train: install
	$(BIN)/python -m digit_experiments.train $(ARGS)

# .ci/system-packages: PostgreSQL for the `digits stack` tests and Chromium for the
# browser tests (installed as root with apt-get; anyone else gets a note, and those tests
# skip saying what to install).
test: install-test
	.ci/system-packages
	$(BIN)/python -m pytest $(ARGS)

test-slow: install-test
	$(BIN)/python -m pytest -m slow $(ARGS)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# One benchmark: make bench-overhead, bench-throughput, bench-stalls, bench-startup, bench-time_to_99,
# bench-blur, bench-inference, bench-memory, bench-sweep_parallel, bench-accuracy, bench-fast,
# bench-ensemble ARGS=DIR/ROW (figures in
# benchmarks/results/; then `make readme`).
bench-%: install-test
	$(BIN)/python benchmarks/$*.py $(ARGS)

# README.md's generated blocks from benchmarks/results/*.json (stdlib only: no install).
readme: $(BIN)/python
	$(BIN)/python benchmarks/readme.py $(ARGS)

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# The draw-a-digit web app over the registry's champion and challenger.
app: install
	$(BIN)/digits app $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache

# The seed's comparison told from MLflow, in JupyterLab on 127.0.0.1 (the `notebook` extra).
notebook: install
	$(BIN)/python -m pip install --quiet -e '.[notebook]'
	$(BIN)/jupyter lab --ip 127.0.0.1 notebooks/mlp_vs_cnn.ipynb
