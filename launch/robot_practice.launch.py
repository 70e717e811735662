"""Practice on real stations: as sim_practice.launch.py without sim_robot. Each station's
robot driver must publish camera/<name>/image_raw and joint_states, accept action_command
(efm_interfaces/ActionCommand) and serve reset (efm_interfaces/ResetStation) in the
station's namespace.

    ros2 launch launch/robot_practice.launch.py params_file:=config/robot_practice.yaml
"""

from pathlib import Path

from efm_ros.node_set import launch_description

DEFAULT_PARAMS = str(Path(__file__).resolve().parents[1] / "config" / "robot_practice.yaml")


def generate_launch_description():
    return launch_description(DEFAULT_PARAMS, sim=False)
