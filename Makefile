# aichaos task runner: the README and CI call these targets verbatim.
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# most integration tests wait on fixed-length runs: two at a time, a file's tests on one worker
PYTEST_PARALLEL ?= -n 2 --dist loadfile

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[sample,dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install aichaos with the sample stack and dev tools

demo: $(STAMP) ## Run the demo experiment on the local runtime (about two minutes, no Docker needed)
	$(BIN)/aichaos run experiments/model-latency-spike.yaml --runtime local

test: $(STAMP) ## Run the unit and integration tests (sets up Docker and Chromium for their tests where it can)
	PYTHON=$(BIN)/python scripts/docker-env
	scripts/browser-env
	$(BIN)/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

unit: $(STAMP) ## Run the unit tests only (fast, hermetic)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check aichaos sample_stack tests benchmarks
	$(BIN)/mypy

bench: $(STAMP) ## Run the benchmarks (prints figures; compares against baselines in the same run)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

docker-env: $(STAMP) ## Start a Docker engine, build the local base image and the sample wheelhouse
	PYTHON=$(BIN)/python scripts/docker-env

clean: ## Remove the virtualenv and run directories
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache

.PHONY: help install demo test unit lint bench docker-env clean
