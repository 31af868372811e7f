# The two commands a fresh machine needs (see README):
#   make demo   set up, then run the default rollout suite and print where the report is
#   make test   set up, then run the test suite
PYTHON ?= python3
export MUJOCO_GL ?= egl

.PHONY: setup demo test test-fast bench

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	$(PYTHON) -m realgap suite $$([ -f outputs/suite/default/suite.json ] && echo --resume)  # a second run only rebuilds the report

test: setup
	$(PYTHON) -m pytest -q

test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow"

bench: setup
	$(PYTHON) benchmarks/bench_env.py
	$(PYTHON) benchmarks/bench_policy.py
	$(PYTHON) benchmarks/bench_suite.py
