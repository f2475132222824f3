# Everyday targets. `make setup && make test` on a fresh machine; `make demo` runs the main job on CPU.
VENV   ?= .venv
PY     := $(VENV)/bin/python
GW     := $(VENV)/bin/groupwise
TORCH  ?= torch==2.13.0
DEEPSPEED ?= deepspeed==0.19.8
NGPUS  ?= 8
RUNS   ?= runs

.PHONY: setup setup-gpu test test-fast lint format smoke demo train clean

setup:  ## CPU virtualenv: pinned CPU torch (no CUDA download), DeepSpeed, the project (editable) + dev tools
	python3 -m venv $(VENV)
	$(PY) -m pip install -q setuptools wheel
	$(PY) -m pip install -q $(TORCH)
	# DeepSpeed ships as an sdist whose build imports torch: build it against the torch just installed
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation $(DEEPSPEED)
	$(PY) -m pip install -q -e ".[dev]"
	@$(PY) -c "import torch, deepspeed, transformers; print('torch', torch.__version__, '| deepspeed', deepspeed.__version__, '| transformers', transformers.__version__)"

setup-gpu:  ## GPU node: the vllm extra pins vllm and the torch it requires (issue: vLLM rollout worker)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q setuptools wheel "torch==2.14.0"
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation $(DEEPSPEED)
	$(PY) -m pip install -q -e ".[dev,vllm]"

test:  ## the whole suite on CPU (GPU / vLLM tests are skipped with their reason)
	$(PY) -m pytest -q tests

test-fast:  ## unit and component tests only
	$(PY) -m pytest -q -m "not slow" tests

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

smoke:  ## a few steps of the tiny random model through the real DeepSpeed engine (< 3 min on 2 cores)
	$(GW) train -c configs/smoke.yaml run_dir=$(RUNS)/smoke

demo:  ## the main job on CPU with the embedded default config
	$(GW) train run_dir=$(RUNS)/demo

train:  ## torchrun on this node: make train CONFIG=configs/x.yaml NGPUS=8
	PATH=$(VENV)/bin:$$PATH scripts/train_node.sh $(NGPUS) -c $(CONFIG)

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
