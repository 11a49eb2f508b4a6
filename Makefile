# Every target installs what it needs into .venv first, so each works as the only command on a
# fresh machine. The CPU torch wheel is installed before the package so that pip never resolves an
# unpinned torch to the multi-GB CUDA build.
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
DEMO_DATA   ?= data/tiny
DEMO_RUN    ?= runs/demo
PYTEST_ARGS ?=

.PHONY: install demo test test-slow bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Synthetic tiny dataset -> main job (APL self-training, 1 round) on a local Ray -> mAP table and plots in $(DEMO_RUN).
demo: $(STAMP)
	$(PY) jobs/make_dataset.py --preset tiny --out $(DEMO_DATA)
	$(PY) jobs/selftrain.py --config configs/tiny_apl.yaml --set run.dir=$(DEMO_RUN)

# The suite minus the multi-minute integration tests (multi-node simulation, fault injection, ray job
# submit against a CLI-started head): those run with `make test-slow`.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf $(VENV) runs data .pytest_cache
