"""The one description of efm's practice graph (STYLE.md, nav2: build the node list from
one table). ``launch/*.launch.py`` (robot computers with ``launch_ros``) and
:mod:`efm_ros.bringup` (anywhere, e.g. this PyPI-only workspace) both call
:func:`practice_nodes`, so the two cannot drift.

The deployment YAML is a standard ROS 2 parameter file. Station nodes are keyed
``/**/<node>`` (every station gets the same values), globals by their fully qualified
name, and the coordinator's ``stations`` list decides which stations exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: nodes started once per station, in start order (sim_robot only with a simulator)
STATION_NODES = ("sim_robot", "camera_ingest", "steps_to_go", "policy", "episode_recorder", "actor")
#: robot-driver adapters started first in each real station whose deployment YAML has a
#: ``/**/<name>`` section (an ALOHA station: aloha_bridge serves reset, joint_states and
#: executes action_command on the Interbotix followers)
DRIVER_NODES = ("aloha_bridge",)
#: in simulation, what stands in for the hardware behind each driver adapter (and replaces
#: sim_robot in that station): the simulated Interbotix xs_sdk behind aloha_bridge
SIMULATED_HARDWARE = {"aloha_bridge": "interbotix_sim"}
#: nodes started once per deployment
GLOBAL_NODES = ("learner", "coordinator")
#: console script and module of each node
EXECUTABLES = {
    "sim_robot": "efm_ros.sim_robot",
    "camera_ingest": "efm_ros.camera_ingest",
    "steps_to_go": "efm_ros.steps_to_go_node",
    "policy": "efm_ros.policy_node",
    "episode_recorder": "efm_ros.episode_recorder",
    "actor": "efm_ros.actor_node",
    "learner": "efm_ros.learner_node",
    "coordinator": "efm_ros.coordinator_node",
    "aloha_bridge": "efm_ros.aloha_bridge",
    "interbotix_sim": "efm_ros.interbotix_sim",
}


@dataclass(frozen=True)
class NodeSpec:
    """One node to start: ``ros2 run efm_ros <executable>`` under ``namespace``."""

    executable: str
    namespace: str
    #: parameters set on top of the YAML (the station name, from the namespace)
    overrides: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()

    @property
    def module(self) -> str:
        return EXECUTABLES[self.executable]

    @property
    def name(self) -> str:
        return self.executable

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a ROS 2 parameter YAML, refusing what rcl would refuse, with the key named."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a parameter file must map node names to ros__parameters")
    for node, body in data.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise ValueError(f"{path}: {node!r} has no ros__parameters section")
    return data


#: scalars that rcl's YAML 1.1 parser reads as booleans unless quoted
_YAML11_BOOLS = {"y", "n", "yes", "no", "on", "off", "true", "false"}


class _RclSafeDumper(yaml.SafeDumper):
    """Quotes strings that rcl would otherwise parse as booleans (e.g. a joint named y)."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = '"' if value.lower() in _YAML11_BOOLS else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_RclSafeDumper.add_representer(str, _represent_str)


def dump_params(params: dict[str, Any]) -> str:
    """A parameter YAML that rcl parses back to the same values."""
    return yaml.dump(params, Dumper=_RclSafeDumper, sort_keys=False)


def node_params(params: dict[str, Any], fully_qualified: str) -> dict[str, Any]:
    """The parameters the YAML gives one node (``/**/name`` then exact-name keys)."""
    name = fully_qualified.rsplit("/", 1)[-1]
    merged: dict[str, Any] = {}
    for key in (f"/**/{name}", fully_qualified, fully_qualified.lstrip("/")):
        merged.update(params.get(key, {}).get("ros__parameters", {}))
    return merged


def practice_nodes(params: dict[str, Any], *, sim: bool) -> list[NodeSpec]:
    """Every node of a practice deployment: station nodes per station, then the globals.

    ``sim=False`` leaves out ``sim_robot``: on a robot computer the robot's own driver
    publishes the cameras and joint states and serves ``reset``, directly or through a
    driver adapter of DRIVER_NODES that the YAML configures. With ``sim=True`` and such an
    adapter configured, the adapter runs against its SIMULATED_HARDWARE instead of
    sim_robot (an ALOHA station in simulation: interbotix_sim + aloha_bridge).
    """
    stations = node_params(params, "/coordinator").get("stations")
    if not stations or not all(isinstance(s, str) and s.strip("/") for s in stations):
        raise ValueError("coordinator.ros__parameters.stations must list station names")
    specs: list[NodeSpec] = []
    drivers = tuple(d for d in DRIVER_NODES if f"/**/{d}" in params)
    simulated = tuple(SIMULATED_HARDWARE[d] for d in drivers)
    if sim and drivers and len(stations) > 1:
        raise ValueError(
            f"{', '.join(simulated)} speaks the hardware's fixed topic names (/follower_left/"
            "...): simulate one such station per ROS domain, got stations " + str(stations))
    for station in stations:
        ns = "/" + station.strip("/")
        for node in (*(simulated if sim else ()), *drivers, *STATION_NODES):
            if node == "sim_robot" and (not sim or drivers):
                continue
            specs.append(
                NodeSpec(
                    node,
                    ns,
                    overrides={"station": station.strip("/")},
                    remappings=(("weights", "/learner/weights"),) if node == "policy" else (),
                )
            )
    specs += [NodeSpec(node, "/") for node in GLOBAL_NODES]
    return specs


def launch_nodes(
    params_file: str, *, sim: bool, log_level: str = "info", use_sim_time: bool = False
) -> list:
    """launch_ros ``Node`` actions for :func:`practice_nodes` (robot computers only:
    ``launch_ros`` is not installable from PyPI)."""
    from launch_ros.actions import Node

    return [
        Node(
            package="efm_ros",
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace,
            parameters=[params_file, {**spec.overrides, "use_sim_time": use_sim_time}],
            remappings=list(spec.remappings),
            arguments=["--ros-args", "--log-level", log_level],
            output="screen",
        )
        for spec in practice_nodes(load_params(params_file), sim=sim)
    ]


def launch_description(default_params: str, *, sim: bool):
    """The LaunchDescription both launch files return: declared, described arguments and
    the node table above."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    def setup(context):
        return launch_nodes(
            LaunchConfiguration("params_file").perform(context),
            sim=sim,
            log_level=LaunchConfiguration("log_level").perform(context),
            use_sim_time=LaunchConfiguration("use_sim_time").perform(context) == "true",
        )

    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=default_params,
                description="Deployment parameter YAML (nodes by name under "
                "ros__parameters; the coordinator's `stations` list decides "
                "the stations).",
            ),
            DeclareLaunchArgument(
                "log_level", default_value="info", description="Log level of every node."
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                description="Use /clock (Gazebo or a bag) instead of wall time.",
            ),
            OpaqueFunction(function=setup),
        ]
    )
