"""Practice with simulated stations: per station sim_robot, camera_ingest, steps_to_go,
policy, episode_recorder and actor; one learner and one coordinator.

    ros2 launch efm_ros sim_practice.launch.py    # installed (colcon)
    ros2 launch launch/sim_practice.launch.py \
        params_file:=config/sim_practice.yaml    # source tree
    ros2 launch efm_ros sim_practice.launch.py \
        params_file:=config/aloha_sim_practice.yaml   # ALOHA: interbotix_sim + aloha_bridge

The node table lives in efm_ros.node_set, which `python -m efm_ros.bringup` (no `launch`
needed) uses too.
"""

from efm_ros.node_set import launch_description
from efm_ros.share import shared_file

#: share/efm_ros/config/ of the install (or config/ of a source checkout)
DEFAULT_PARAMS = str(shared_file("config", "sim_practice.yaml"))


def generate_launch_description():
    return launch_description(DEFAULT_PARAMS, sim=True)
