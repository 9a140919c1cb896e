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

# Container images, one per component (components/<name>/Dockerfile) plus the platform image
# (flows/Dockerfile: Prefect server/worker, MLflow server). Needs a Docker engine: not part of
# `make test` or `make run`. REGISTRY=ghcr.io/you TAG=0.1.0 make images [PUSH=1]
REGISTRY ?= ghcr.io/litops
TAG ?= 0.1.0
IMAGES := data train evaluate register
images:
	@for c in $(IMAGES); do \
	  docker build -f components/$$c/Dockerfile -t $(REGISTRY)/litops-$$c:$(TAG) . || exit 1; \
	done
	docker build -f flows/Dockerfile -t $(REGISTRY)/litops-platform:$(TAG) .
	@if [ -n "$(PUSH)" ]; then for i in $(IMAGES) platform; do docker push $(REGISTRY)/litops-$$i:$(TAG) || exit 1; done; fi

clean:
	rm -rf .litops .pytest_cache
