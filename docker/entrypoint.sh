#!/usr/bin/env bash
# Source ROS 2, the efm venv and the efm install, then run the command.
set -e
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source /opt/efm-venv/bin/activate
source /efm_ws/install/setup.bash
exec "$@"
