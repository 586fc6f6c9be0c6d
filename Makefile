# Two entry points for a fresh machine: `make quickstart` and `make test`.
# Each creates .venv and installs ablab (and so torch, pinned in pyproject.toml only).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: quickstart test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# ablab alone: what the quickstart needs.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# ablab with the test extra: pytest and the optional mirrors (wandb, mlflow, tensorboard).
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

quickstart: $(VENV)/.installed
	$(BIN)/ablab run -c quickstart --name quickstart

test: $(VENV)/.installed-test
	ABLAB_DATA=$${ABLAB_DATA:-$(abspath ../shared/data)} $(BIN)/pytest -q

clean:
	rm -rf $(VENV) .ablab
