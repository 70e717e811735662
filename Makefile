# efm: two commands do all set-up on a fresh machine (README):
#   make demo   the main job
#   make test   lint + the whole test suite
# Everything run from here stays on this machine: DDS discovery is limited to localhost
# and runs get their own ROS domain (tests pick one per test).
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python

export AMENT_PREFIX_PATH := $(VENV)
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 77
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup test lint demo pointmass bench lock clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest -q

# The main job. Until the ROS 2 practice loop lands (issue 6) it runs the largest end-to-end
# thing that works: the PointMass Stage 1 -> Stage 2 pipeline (see README).
demo: setup
	$(PY) -m efm_learning.cli demo

bench: setup
	$(PY) -m benchmarks.run_all

# Re-resolve requirements/lock.txt from requirements/base.in in a scratch venv.
lock:
	rm -rf /tmp/efm-lock && python3 -m venv /tmp/efm-lock
	/tmp/efm-lock/bin/pip install -q torch==2.13.0
	/tmp/efm-lock/bin/pip install -q -r requirements/base.in
	/tmp/efm-lock/bin/python scripts/freeze_lock.py > requirements/lock.txt

clean:
	rm -rf build .venv .pytest_cache .ruff_cache
