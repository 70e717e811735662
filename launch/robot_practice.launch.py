"""Practice on real stations: as sim_practice.launch.py without sim_robot. Each station's
robot driver must publish camera/<name>/image_raw and joint_states, accept action_command
(efm_interfaces/ActionCommand) and serve reset (efm_interfaces/ResetStation) in the
station's namespace.

    ros2 launch efm_ros robot_practice.launch.py    # installed (colcon)
    ros2 launch launch/robot_practice.launch.py \
        params_file:=config/robot_practice.yaml    # source tree
"""

from efm_ros.node_set import launch_description
from efm_ros.share import shared_file

#: share/efm_ros/config/ of the install (or config/ of a source checkout)
DEFAULT_PARAMS = str(shared_file("config", "robot_practice.yaml"))


def generate_launch_description():
    return launch_description(DEFAULT_PARAMS, sim=False)
