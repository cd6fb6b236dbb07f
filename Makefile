# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing and installs what it needs (pip takes torch from local wheels where present):
# `make demo` only the package and torchvision, `make test` (and lint, docs, ...) the full toolchain.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
export MPLBACKEND := Agg

.PHONY: install test lint demo bench docs tutorials clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,vision]"
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[vision]"
	touch $(DEMO_STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

demo: $(DEMO_STAMP)
	$(BIN)/captum-fam demo --out fam-demo.png

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py --markdown
	$(BIN)/python benchmarks/retrieval.py --markdown

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

tutorials: $(STAMP)
	$(BIN)/python tutorials/run.py --save

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis docs/_build docs/tutorials/notebooks
