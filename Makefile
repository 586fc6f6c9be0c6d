# Two entry points for a fresh machine: `make quickstart` and `make test`.
# Each creates .venv and installs ablab (and so torch, pinned in pyproject.toml only).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/ablab run -c quickstart --name quickstart

test: $(STAMP)
	ABLAB_DATA=$${ABLAB_DATA:-$(abspath ../shared/data)} $(BIN)/pytest -q

clean:
	rm -rf $(VENV) .ablab
