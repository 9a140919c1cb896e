# The two README commands: `make run` and `make test`. Both build .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test venv images clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: venv  ## retrain on the embedded default (extra Hydra overrides: make run ARGS="train.steps=600")
	$(BIN)/litops run $(ARGS)

test: venv  ## the whole suite, CPU only (GPU tests skip with a reason)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf .litops .pytest_cache
