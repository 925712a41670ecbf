# Two entry points, both safe on a fresh clone: `make demo` and `make test`.
# Each creates .venv (once per change of pyproject.toml) and installs the package into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/demo
SCHEDULE ?= schedules/tinygpt_2x.grow

.PHONY: demo test typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sparkling train $(SCHEDULE) --out $(OUT)

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) typecheck
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info
