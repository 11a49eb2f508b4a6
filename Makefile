# Every target installs what it needs into .venv first, so each works as the only command on a
# fresh machine. The CPU torch wheel is installed before the package so that pip never resolves an
# unpinned torch to the multi-GB CUDA build.
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
# Feature extraction from video files (jobs/extract_features.py) needs torchvision and PyAV. PyPI's
# torchvision wheels are built against the CUDA torch of the same release (the CPU torch above cannot load
# their operators), so `make test` installs a matching pair over it: a CUDA build, which runs on CPU too.
ifeq ($(shell uname -m),aarch64)
VIDEO_SPEC  ?= torch==2.9.1 torchvision==0.24.1 av
else
VIDEO_SPEC  ?= torch==2.14.1 torchvision==0.29.1 av
endif
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
VIDEO_STAMP := $(VENV)/.installed-video
DEMO_DATA   ?= data/demo
DEMO_RUN    ?= runs/demo
DEMO_VIDEOS ?= 144
PYTEST_ARGS ?=

.PHONY: install video demo test test-slow bench bench-real clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The extra `video` (torchvision, av) with the torch it needs; `make install` / `make demo` stay light.
video: $(VIDEO_STAMP)

$(VIDEO_STAMP): $(STAMP)
	$(PY) -m pip install --quiet $(VIDEO_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,video]"
	touch $(VIDEO_STAMP)

# Synthetic tiny dataset (144 videos: 10 labeled, 86 unlabeled, 48 test) -> main job (APL self-training,
# 1 round) on a local Ray -> mAP table and plots in $(DEMO_RUN). At 144 videos the round-1 student beats its
# teacher on every seed measured (benchmarks/RESULTS.md, "The demo's story"); the default 48 are a teacher
# at its ceiling on 16 test videos.
demo: $(STAMP)
	$(PY) jobs/make_dataset.py --preset tiny --num-videos $(DEMO_VIDEOS) --out $(DEMO_DATA)
	$(PY) jobs/selftrain.py --config configs/tiny_apl.yaml --set data.root=$(DEMO_DATA) --set run.dir=$(DEMO_RUN)

# The suite with the fault-injection tests (killed inference actor, removed node, killed driver, ray job
# submit against a CLI-started head), without the other multi-minute integration tests (multi-node
# simulation, Ray regeneration/NoCo rounds, a duplicate Train-worker failure): those run with `make test-slow`.
test: $(STAMP) $(VIDEO_STAMP)
	$(PY) -m pytest -q -m "not slow or fault" --durations=25 $(PYTEST_ARGS)

test-slow: $(STAMP) $(VIDEO_STAMP)
	$(PY) -m pytest -q -m "slow and not fault" $(PYTEST_ARGS)

# The speed benchmarks (minutes). bench_real.py, the recipes on real recordings, takes hours: `make bench-real`.
bench: $(STAMP) $(VIDEO_STAMP)
	set -e; for b in $(filter-out benchmarks/bench_real.py,$(wildcard benchmarks/bench_*.py)); do echo "== $$b"; $(PY) $$b; done

# Every recipe vs supervised 10/20/100 % on hapt, sfinge3d, thumos14-synth, 3 seeds (needs RAYTAL_SHARED_DATA;
# resumable: the same command continues where it stopped). Tables in runs/bench_real/tables.md.
bench-real: $(STAMP)
	$(PY) benchmarks/bench_real.py

clean:
	rm -rf $(VENV) runs data .pytest_cache
