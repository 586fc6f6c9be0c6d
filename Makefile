# Two entry points for a fresh machine: `make quickstart` and `make test`.
# Each creates .venv and installs ablab with the exact versions of constraints.txt (torch 2.13.0, CPU);
# pyproject.toml states the ranges, so a user's own torch is never replaced.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/pip install --quiet -c constraints.txt

.PHONY: quickstart test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# ablab alone: what the quickstart needs.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

# ablab with the test extra: pytest, import-linter, the optional mirrors and integrations.
$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]'
	touch $(VENV)/.installed $@

quickstart: $(VENV)/.installed
	$(BIN)/ablab run -c quickstart --name quickstart

# One pytest worker per core, whole files to a worker (a file's fixtures are built once), one torch
# thread each: 9 minutes on 2 cores where one worker with both threads took 17.
test: $(VENV)/.installed-test
	OMP_NUM_THREADS=1 ABLAB_DATA=$${ABLAB_DATA:-$(abspath ../shared/data)} $(BIN)/pytest -q -n auto --dist loadfile

clean:
	rm -rf $(VENV) .ablab
