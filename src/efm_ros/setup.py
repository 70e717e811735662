"""ament_python package efm_ros: builds with colcon on a robot computer, or `pip install -e` in a venv."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

package_name = "efm_ros"

# launch files, the rviz config, deployment YAMLs and URDF live at the repository root
# (one copy for the source tree and the install); colcon installs them to share/efm_ros
# with the same layout, which efm_ros.share relies on. Paths are relative to this file.
here = Path(__file__).resolve().parent
root = Path("..") / ".."


def shared(folder: str, pattern: str) -> tuple[str, list[str]]:
    files = sorted(glob(str(root / folder / pattern), root_dir=here))
    if not files:
        raise SystemExit(f"efm_ros: no {folder}/{pattern} at the repository root")
    return ("share/" + package_name + "/" + folder, files)


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        shared("launch", "*.launch.py"),
        shared("launch", "*.rviz"),
        shared("config", "*.yaml"),
        shared("urdf", "*.urdf"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="efm developers",
    maintainer_email="dev@efm.invalid",
    description="ROS 2 nodes of efm: sim robot driver, camera ingestion, policy, steps-to-go reward and success service, episode recorder, actor, learner and coordinator.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "camera_ingest = efm_ros.camera_ingest:main",
            "episode_recorder = efm_ros.episode_recorder:main",
            "sim_robot = efm_ros.sim_robot:main",
            "steps_to_go = efm_ros.steps_to_go_node:main",
            "policy = efm_ros.policy_node:main",
            "actor = efm_ros.actor_node:main",
            "learner = efm_ros.learner_node:main",
            "coordinator = efm_ros.coordinator_node:main",
            "bringup = efm_ros.bringup:main",
            "compose = efm_ros.compose:main",
            "efm-fleet-key = efm_ros.fleet_auth:main",
            "efm-operator = efm_ros.operator_cli:main",
            "efm-bags-to-dataset = efm_ros.bags_to_dataset:main",
            "aloha_bridge = efm_ros.aloha_bridge:main",
            "interbotix_sim = efm_ros.interbotix_sim:main",
        ]
    },
)
