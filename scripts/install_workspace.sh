#!/usr/bin/env bash
# Build and install the four efm packages with colcon, as on a robot computer
# (docs/DEPLOY.md). The one install path: docker/Dockerfile runs it, and
# tests/test_installed_workspace.py runs it here into a scratch prefix.
#
#   scripts/install_workspace.sh [BUILD_BASE] [INSTALL_BASE]    (default build/ws, install/)
#
# With a system ROS 2 (/opt/ros/$ROS_DISTRO) it is sourced first; without one (this
# repository's .venv, ROS 2 from PyPI wheels) the venv is the underlay: set
# AMENT_PREFIX_PATH to it, as `make setup` does.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_BASE=${1:-build/ws}
INSTALL_BASE=${2:-install}

if [ -z "${AMENT_PREFIX_PATH:-}" ] && [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/$ROS_DISTRO/setup.bash" ]; then
  # shellcheck disable=SC1090
  set +u; source "/opt/ros/$ROS_DISTRO/setup.bash"; set -u
fi
if [ -z "${AMENT_PREFIX_PATH:-}" ]; then
  echo "install_workspace: no ROS 2 underlay (source /opt/ros/<distro>/setup.bash, or" \
       "activate .venv and export AMENT_PREFIX_PATH=\$VIRTUAL_ENV)" >&2
  exit 2
fi
if ! command -v colcon > /dev/null; then
  echo "install_workspace: colcon is missing (apt python3-colcon-common-extensions," \
       "or pip colcon-common-extensions)" >&2
  exit 2
fi

cmake_args=(-DBUILD_TESTING=OFF)
if [ -n "${VIRTUAL_ENV:-}" ]; then
  # ROS from wheels: CMake finds ament_cmake and rosidl in the venv, and the venv's Python
  export CMAKE_PREFIX_PATH=${CMAKE_PREFIX_PATH:-$AMENT_PREFIX_PATH}
  cmake_args+=("-DPython3_EXECUTABLE=$VIRTUAL_ENV/bin/python")
fi

colcon --log-base "$BUILD_BASE/log" build \
  --base-paths src \
  --build-base "$BUILD_BASE" \
  --install-base "$INSTALL_BASE" \
  --merge-install \
  --event-handlers console_direct- console_cohesion- status- summary+ \
  --cmake-args "${cmake_args[@]}"
echo "install_workspace: installed into $INSTALL_BASE (source $INSTALL_BASE/setup.bash)"
