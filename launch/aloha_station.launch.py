"""One real ALOHA station (issue 15, item 6): aloha_bridge (dry-run until
safety.dry_run is false) and the efm practice nodes of config/aloha_station.yaml. Start
Interbotix's aloha bring-up (xs_sdk for the two followers and two leaders, the four
realsense cameras) first; docs/ALOHA_HARDWARE.md has the order and the safety checklist.

    ros2 launch efm_ros aloha_station.launch.py                 # installed (colcon)
    ros2 launch launch/aloha_station.launch.py \
        params_file:=config/aloha_station.yaml                  # source tree
"""

from efm_ros.node_set import launch_description
from efm_ros.share import shared_file

#: share/efm_ros/config/ of the install (or config/ of a source checkout)
DEFAULT_PARAMS = str(shared_file("config", "aloha_station.yaml"))


def generate_launch_description():
    return launch_description(DEFAULT_PARAMS, sim=False)
