# Distillery: `make distill` and `make test` are all a new user types; both run `make setup` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU PyTorch. On this project's machines `pip install torch==2.13.0` takes the CPU wheel from local disk.
# Elsewhere, point pip at the CPU index so it does not pull a multi-GB CUDA build:
#   make setup TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
EXTRAS ?= export,hf,dev
STAMP := $(VENV)/.distillery-setup-stamp
OUT ?= runs/toy
PYTEST_ARGS ?=

.PHONY: setup test test-unit test-integration distill judge reasoning teacher lint format readiness bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup: $(STAMP)  ## create .venv with CPU torch and the project (idempotent)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$(TORCH_SPEC)'.split('==')[1] else 1)" 2>/dev/null \
		|| $(BIN)/pip install --disable-pip-version-check $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install --disable-pip-version-check -e ".[$(EXTRAS)]"
	@touch $(STAMP)

test: setup  ## unit + integration tests with branch coverage (reports/junit.xml, reports/coverage.json)
	@mkdir -p reports
	$(BIN)/python -m pytest tests/unit tests/integration \
		--cov --cov-config=coverage.toml --cov-report=term:skip-covered \
		--cov-report=json:reports/coverage.json --junitxml=reports/junit.xml $(PYTEST_ARGS)

test-unit: setup  ## unit tests only (fast)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup  ## integration tests only
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

distill: setup  ## bundled end-to-end pipeline: KD vs scratch, exports; OUT=dir (default runs/toy)
	$(BIN)/python -m training.pipeline --config configs/toy.yaml --out $(OUT)

JUDGE_OUT = $(if $(filter runs/toy,$(OUT)),runs/judge,$(OUT))

judge: setup  ## train a judge on the bundled arithmetic task, export it to ONNX and Core ML; OUT=dir (default runs/judge)
	$(BIN)/python -m arbiter.judge_training.train --config configs/judge.yaml --out $(JUDGE_OUT)
	$(BIN)/python -m arbiter.judge_export $(JUDGE_OUT)/judge --out $(JUDGE_OUT)/onnx
	$(BIN)/python -m arbiter.judge_coreml $(JUDGE_OUT)/judge --out $(JUDGE_OUT)/coreml/judge.mlpackage

reasoning: setup  ## no-CoT / CoT / latent / process students and int8 QAT; OUT=dir (default runs/reasoning)
	$(BIN)/python -m training.reasoning_pipeline --config configs/reasoning.yaml --out $(if $(filter runs/toy,$(OUT)),runs/reasoning,$(OUT))

teacher: setup  ## retrain the bundled teacher (assets/teacher)
	$(BIN)/python -m training.train_teacher --config configs/teacher.yaml --out assets/teacher

lint: setup  ## ruff
	$(BIN)/ruff check training conversion arbiter scripts tests benches

format: setup
	$(BIN)/ruff check --fix training conversion arbiter scripts tests benches

readiness: setup  ## readiness gate on Distillery itself
	$(BIN)/python scripts/assess_readiness.py --fail-under 60

bench: setup  ## benchmarks (figures printed and written to benches/results/)
	$(BIN)/python benches/run_all.py

clean:
	rm -rf reports .pytest_cache .ruff_cache .coverage .coverage.*
