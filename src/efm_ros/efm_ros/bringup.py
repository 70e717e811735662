"""Start the practice graph without ``launch`` (PyPI-only workspaces, CI, quick runs).

    python -m efm_ros.bringup --params config/sim_practice.yaml [--robot] [--log-dir DIR]

Starts exactly the nodes that ``launch/sim_practice.launch.py`` starts (both read
:func:`efm_ros.node_set.practice_nodes`), each as its own process with the same parameter
file, namespace, overrides and remappings; one log file per node. ``--compose`` runs
each station's nodes in one process instead (:mod:`efm_ros.compose`). ^C (or SIGTERM) sends
SIGINT to every node, so recorders close their bags, then waits; stragglers are killed.
With ``--exit-with coordinator`` the whole graph stops when that node exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from efm_ros.node_set import NodeSpec, load_params, practice_nodes


def ros_args(spec: NodeSpec, params_file: Path) -> list[str]:
    """The ``--ros-args`` a launch_ros Node action would pass for ``spec``."""
    args = [
        "--ros-args",
        "-r",
        f"__ns:={spec.namespace}",
        "-r",
        f"__node:={spec.name}",
        "--params-file",
        str(params_file),
    ]
    for key, value in spec.overrides.items():
        args += ["-p", f"{key}:={value}"]
    for source, target in spec.remappings:
        args += ["-r", f"{source}:={target}"]
    return args


def processes(
    specs: list[NodeSpec], params_file: Path, *, compose: bool, sim: bool = True
) -> dict[str, list[str]]:
    """Process name -> command line. One process per node, or with ``compose`` one
    :mod:`efm_ros.compose` process per station (named by its namespace) and one per
    global node (the learner may run elsewhere, or under torchrun)."""
    commands: dict[str, list[str]] = {}
    stations: dict[str, list[str]] = {}
    for spec in specs:
        if compose and spec.namespace != "/":
            stations.setdefault(spec.namespace, []).append(spec.fully_qualified_name)
        else:
            command = [sys.executable, "-m", spec.module, *ros_args(spec, params_file)]
            commands[spec.fully_qualified_name] = command
    for namespace, names in stations.items():
        command = [sys.executable, "-m", "efm_ros.compose", "--params", str(params_file)]
        commands[namespace] = [*command, *([] if sim else ["--robot"]), "--nodes", *names]
    return commands


class Graph:
    """The started node processes (``compose``: one process per station)."""

    def __init__(
        self,
        specs: list[NodeSpec],
        params_file: Path,
        log_dir: Path,
        env: dict[str, str] | None = None,
        *,
        compose: bool = False,
        sim: bool = True,
        prefix: Callable[[str], list[str]] | None = None,
    ) -> None:
        """``prefix(process name)``: a command to run each process under (e.g. ``ip netns
        exec``: efm_ros.netns.SimulatedLan.prefix)."""
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = []
        for name, command in processes(specs, params_file, compose=compose, sim=sim).items():
            log = open(log_dir / (name.strip("/").replace("/", ".") + ".log"), "wb")  # noqa: SIM115 - closed in stop()
            self.logs.append(log)
            self.procs[name] = subprocess.Popen(
                [*(prefix(name) if prefix else []), *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def poll(self) -> dict[str, int]:
        """Exit codes of the nodes that have exited."""
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def kill(self, name: str | None = None) -> None:
        """SIGKILL (a crash: no cleanup runs) to node ``name``, or to every node."""
        for key, proc in self.procs.items():
            if (name is None or key == name) and proc.poll() is None:
                proc.kill()
                proc.wait()

    def stop(self, timeout: float = 15.0) -> dict[str, int]:
        """SIGINT to all (like ^C), wait up to ``timeout``, then SIGKILL what is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
        return {name: p.returncode for name, p in self.procs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True, type=Path, help="deployment parameter YAML")
    parser.add_argument(
        "--robot",
        action="store_true",
        help="real stations: leave out sim_robot (the robot driver runs)",
    )
    parser.add_argument("--log-dir", type=Path, default=Path("runs/bringup/logs"))
    parser.add_argument(
        "--compose",
        action="store_true",
        help="run each station's nodes in one process (efm_ros.compose): less CPU per "
        "control step; one log per station",
    )
    parser.add_argument(
        "--exit-with", default="", help="stop everything when this node (e.g. /coordinator) exits"
    )
    args = parser.parse_args(argv)
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") is None:
        print(
            "note: ROS_AUTOMATIC_DISCOVERY_RANGE is unset; DDS may reach other machines",
            file=sys.stderr,
        )
    specs = practice_nodes(load_params(args.params), sim=not args.robot)
    graph = Graph(
        specs, args.params.resolve(), args.log_dir, compose=args.compose, sim=not args.robot
    )
    print(f"started {len(specs)} nodes in {len(graph.procs)} processes; logs in {args.log_dir}/")
    for spec in specs:
        print(f"  {spec.fully_qualified_name}")
    stop = {"now": False}

    def request_stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    reported: set[str] = set()
    try:
        while not stop["now"]:
            exited = graph.poll()
            if args.exit_with and args.exit_with in exited:
                break
            for name, code in exited.items():
                if name not in reported:
                    reported.add(name)
                    print(f"node {name} exited with {code}; see its log", file=sys.stderr)
            time.sleep(0.2)
    finally:
        codes = graph.stop()
    bad = {n: c for n, c in codes.items() if c not in (0, -signal.SIGINT, 130)}
    print("stopped" + (f"; nodes with errors: {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
