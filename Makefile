# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv (if needed) and installs colonseg with everything it needs into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.colonseg-installed

.PHONY: demo test install benchmark lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/colonseg demo --out demo_out

test: $(STAMP)
	$(BIN)/pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check colonseg tests benchmarks scripts

benchmark: $(STAMP)
	$(BIN)/python benchmarks/predictor_speed.py
