# flowforge-pipeline — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install up down status test lint peers-venv bench faults soak clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its pinned dependencies

up: $(STAMP) ## Start the local stack in the background (returns when healthy)
	$(BIN)/flowforge-pipeline up

down: $(STAMP) ## Stop the local stack; stored data is kept
	$(BIN)/flowforge-pipeline down

status: $(STAMP) ## Show components and freshness of every contract item
	$(BIN)/flowforge-pipeline status

test: $(STAMP) ## Run the test suite (starts its own stand-ins on random ports)
	$(BIN)/pytest -q

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

peers-venv: $(STAMP) ## Create .venv-peers (Quix Streams) for the peer comparison
	$(BIN)/python bench/peer_vwap.py --setup-only

bench: $(STAMP) peers-venv ## Run the benchmarks (< 20 min); report in bench/results/REPORT.md
	$(BIN)/python bench/report.py

faults: $(STAMP) ## SIGKILL each flow and store mid-backfill; serving layer must equal an uninterrupted run (~6 min)
	$(BIN)/python bench/faults.py --json bench/results/faults.json

soak: $(STAMP) ## 30-minute soak at 10x the default rates; result in bench/results/
	@$(BIN)/python bench/soak.py --json bench/results/soak.json; rc=$$?; \
	  $(BIN)/python bench/report.py --report-only; exit $$rc

clean: ## Remove the virtualenv and caches (keeps .flowforge/ data)
	rm -rf $(VENV) .venv-peers .pytest_cache .mypy_cache .ruff_cache
