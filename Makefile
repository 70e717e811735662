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

.PHONY: setup test lint demo demo-aloha demo-pointmass pointmass bench lock clean stage1-pushtable

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .

# Two pytest workers (pytest-xdist): most ROS tests wait on the graph. tests/conftest.py
# makes each file one unit (a few long files spread test by test) and hands units out
# heaviest first; tests claim their own ROS domain through a file lock (tests/ros_harness.py).
test: setup lint
	$(PY) -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder

# The main job: PushTable Block2Block practice over ROS 2 with two simulated stations
# (camera images, conv_efm, 4 blocks, 64 px). Stage 1 is the shipped release
# checkpoints/pushtable (sha256-verified; DEMO_ARGS=--retrain trains it, ~15 min), then
# practice until the coordinator's GT-free plateau rule stops it (at most 30 rounds), the
# kept version measured on 500 report tasks; report in runs/demo/ (docs/DEMO.md).
demo: setup
	$(PY) -m efm_ros.demo --config config/pushtable.yaml --params config/sim_practice.yaml \
	  --out runs/demo --rounds 30 --minutes 15 --eval-episodes 500 \
	  --stage1-release checkpoints/pushtable $(DEMO_ARGS)

# Train the shipped PushTable Stage 1 (10,000 demos; config/pushtable.yaml: up to 8,000
# steps, ended earlier by the validation budget rule; seed 3, docs/RESULTS.md 6.1c;
# ~75 min on one core) and write it as the release checkpoints/pushtable.
stage1-pushtable: setup
	$(PY) -m efm_learning.cli sft --config config/pushtable.yaml --generate \
	  --set run_dir=runs/stage1_pushtable --set seed=3
	$(PY) -m efm_learning.cli release --from runs/stage1_pushtable/sft --to checkpoints/pushtable \
	  --command "make stage1-pushtable"

# ALOHA bimanual insertion in simulation (docs/ALOHA.md): 300 scripted demonstrations
# (data/aloha_48x64, ~20 min), Stage 1 (config/aloha.yaml, ~30 min on 2 cores), GT
# evaluation, then Stage 2 over ROS 2 with one simulated station (config/aloha_sim_practice.yaml,
# 10 min), report in runs/demo_aloha/. Resumable: demos and Stage 1 are kept.
demo-aloha: setup
	$(PY) -m efm_ros.demo_aloha --config config/aloha.yaml --params config/aloha_sim_practice.yaml \
	  --out runs/demo_aloha --data data/aloha_48x64 --demos 300 --minutes 10 --eval-episodes 20 \
	  $(DEMO_ARGS)

# The same graph on PointMass (state vectors, MLP EFM): ~14 min, runs/demo_pointmass/.
# A process per node, as its docs/DEMO.md numbers were measured.
demo-pointmass: setup
	$(PY) -m efm_ros.demo --config config/pointmass.yaml --params config/pointmass_practice.yaml \
	  --out runs/demo_pointmass --rounds 40 --minutes 14 --eval-episodes 100 \
	  --processes node --executor single

# PointMass end to end in-process (paper Figure 4): efm demo.
pointmass: setup
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
