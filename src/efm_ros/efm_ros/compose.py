"""Run several nodes of the practice graph in one process (our stand-in for an rclcpp
component container, which rclpy lacks).

    python -m efm_ros.compose --params config/sim_practice.yaml \
        --nodes /station_0/sim_robot /station_0/camera_ingest ... [--robot]

The nodes are the ones :func:`efm_ros.node_set.practice_nodes` describes, with the same
parameter file, namespace, overrides and remappings as their own processes would get
(:func:`efm_ros.bringup.ros_args`); each spins its own executor on its own thread
(:func:`efm_ros.spin.run_nodes`). Sharing one rclpy context, they share one DDS
participant, and Fast DDS delivers messages between them within the process instead of
through the shared-memory or UDP transport: a composed station spends much less CPU per
control step (docs/ROS.md, throughput). ``bringup --compose`` starts one such process per
station.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from efm_ros.node_set import NodeSpec, load_params, practice_nodes
from efm_ros.spin import NodeEntry, run_nodes


def entry_of(spec: NodeSpec) -> NodeEntry:
    """The ``ENTRY`` its node module's ``main`` runs."""
    entry = getattr(importlib.import_module(spec.module), "ENTRY", None)
    if not isinstance(entry, NodeEntry):
        raise ValueError(f"{spec.module} has no NodeEntry ENTRY: it cannot be composed")
    return entry


def select(params_file: Path, names: list[str], *, sim: bool) -> list[NodeSpec]:
    """The specs of ``names`` (fully qualified), in the node table's order."""
    specs = practice_nodes(load_params(params_file), sim=sim)
    known = {s.fully_qualified_name for s in specs}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"{unknown} are not nodes of {params_file}; it has {sorted(known)}")
    return [s for s in specs if s.fully_qualified_name in names]


def main(argv: list[str] | None = None) -> None:
    from efm_ros.bringup import ros_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True, type=Path, help="deployment parameter YAML")
    parser.add_argument(
        "--nodes", nargs="+", required=True, help="fully qualified node names to run"
    )
    parser.add_argument("--robot", action="store_true", help="a deployment without sim_robot")
    args = parser.parse_args(argv)
    specs = select(args.params, args.nodes, sim=not args.robot)
    run_nodes(
        [
            (
                entry_of(spec),
                {"cli_args": ros_args(spec, args.params), "use_global_arguments": False},
            )
            for spec in specs
        ]
    )


if __name__ == "__main__":
    main()
