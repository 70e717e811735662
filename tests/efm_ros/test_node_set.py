"""One node table feeds the launch files and the bringup runner (issue 6 item 4)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from efm_ros.bringup import ros_args
from efm_ros.node_set import load_params, node_params, practice_nodes

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "config" / "sim_practice.yaml", ROOT / "config" / "robot_practice.yaml",
           ROOT / "config" / "aloha_station.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_deployment_files_parse_and_name_every_node(path):
    params = load_params(path)
    sim = "sim" in path.name
    specs = practice_nodes(params, sim=sim)
    stations = node_params(params, "/coordinator")["stations"]
    driver = "aloha" in path.name  # a real ALOHA station: aloha_bridge first in each station
    per_station = 6 if sim else 5 + driver
    assert len(specs) == per_station * len(stations) + 2
    assert ("sim_robot" in {s.name for s in specs}) == sim
    assert ("aloha_bridge" in {s.name for s in specs}) == driver
    if driver:
        assert specs[0].name == "aloha_bridge"
        # in simulation the bridge drives the simulated xs_sdk, in place of sim_robot
        simulated = [s.name for s in practice_nodes(params, sim=True)]
        assert simulated[:2] == ["interbotix_sim", "aloha_bridge"]
        assert "sim_robot" not in simulated and len(simulated) == len(specs) + 1
    for spec in specs:
        if spec.namespace != "/":
            assert spec.overrides == {"station": spec.namespace.strip("/")}
    policy = next(s for s in specs if s.name == "policy")
    assert ("weights", "/learner/weights") in policy.remappings


def test_a_simulated_aloha_deployment_has_one_station(tmp_path):
    """interbotix_sim speaks the arms' fixed topic names (/follower_left/...): two simulated
    ALOHA stations on one domain would drive each other's arms, so they are refused."""
    params = load_params(CONFIGS[2])
    params["/coordinator"]["ros__parameters"]["stations"] = ["station_0", "station_1"]
    with pytest.raises(ValueError, match="one such station per ROS domain"):
        practice_nodes(params, sim=True)
    assert len(practice_nodes(params, sim=False)) == 2 * 6 + 2  # real stations: fine


def test_runner_arguments_match_the_table(tmp_path):
    spec = practice_nodes(load_params(CONFIGS[0]), sim=True)[3]
    args = ros_args(spec, tmp_path / "p.yaml")
    assert args[:5] == ["--ros-args", "-r", f"__ns:={spec.namespace}", "-r", f"__node:={spec.name}"]
    assert "--params-file" in args and str(tmp_path / "p.yaml") in args


def test_composed_stations_run_the_same_nodes(tmp_path):
    """bringup --compose: one efm_ros.compose process per station naming exactly that
    station's nodes of the table; the globals keep their own processes; every station node
    module exports the NodeEntry its main runs, and unknown names are refused."""
    from efm_ros.bringup import processes
    from efm_ros.compose import entry_of, select
    from efm_ros.spin import NodeEntry

    params = load_params(CONFIGS[0])
    specs = practice_nodes(params, sim=True)
    commands = processes(specs, tmp_path / "p.yaml", compose=True)
    stations = sorted({s.namespace for s in specs if s.namespace != "/"})
    assert sorted(commands) == sorted([*stations, "/learner", "/coordinator"])
    for station in stations:
        command = commands[station]
        assert command[1:3] == ["-m", "efm_ros.compose"]
        named = command[command.index("--nodes") + 1 :]
        assert named == [s.fully_qualified_name for s in specs if s.namespace == station]
    assert len(processes(specs, tmp_path / "p.yaml", compose=False)) == len(specs)
    assert all(isinstance(entry_of(s), NodeEntry) for s in specs if s.namespace != "/")
    assert [s.name for s in select(CONFIGS[0], named, sim=True)] == [
        s.name for s in specs if s.namespace == stations[-1]
    ]
    with pytest.raises(ValueError, match="not nodes of"):
        select(CONFIGS[0], ["/station_9/policy"], sim=True)


def test_bad_deployment_files_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"/coordinator": {"stations": ["a"]}}))
    with pytest.raises(ValueError, match="ros__parameters"):
        load_params(bad)
    bad.write_text(yaml.safe_dump({"/coordinator": {"ros__parameters": {"stations": []}}}))
    with pytest.raises(ValueError, match="stations"):
        practice_nodes(load_params(bad), sim=True)


@pytest.mark.parametrize(
    "name", ["sim_practice.launch.py", "robot_practice.launch.py", "aloha_station.launch.py"]
)
def test_launch_files(name):
    path = ROOT / "launch" / name
    compile(path.read_text(), str(path), "exec")  # always: the file is valid Python
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip(
            "launch_ros is not installable from PyPI; launch files run on robot "
            "computers with a ROS 2 install (see PLATFORM.md)"
        )
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("efm_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    # Evaluate it as `ros2 launch` would: arguments at their defaults, then the
    # OpaqueFunction, whose launch_nodes() builds the node actions (issue 17, defect 11:
    # the test used to stop at the description and never called it).
    context = LaunchContext()
    actions = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            context.launch_configurations[entity.name] = perform_substitutions(
                context, entity.default_value
            )
        elif isinstance(entity, OpaqueFunction):
            actions.extend(entity.execute(context) or [])
    params = context.launch_configurations["params_file"]
    expected = practice_nodes(load_params(params), sim=name.startswith("sim"))
    nodes = [a for a in actions if isinstance(a, Node)]
    assert len(nodes) == len(expected) > 0, (len(nodes), [s.name for s in expected])


def test_demo_writes_its_own_deployment(tmp_path):
    from efm_ros.demo import deployment

    ckpt = {"policy": tmp_path / "bc", "reward": tmp_path / "s2g"}
    path = deployment(CONFIGS[0], tmp_path, ckpt)
    params = load_params(path)
    assert node_params(params, "/station_0/policy")["model.checkpoint"] == str(ckpt["policy"])
    assert node_params(params, "/station_1/steps_to_go")["model.checkpoint"] == str(ckpt["reward"])
    assert node_params(params, "/learner")["output_dir"] == str(tmp_path / "learner")
    assert len(practice_nodes(params, sim=True)) == 14


def test_demo_report_names_the_measured_version_and_rates_per_version(tmp_path):
    import json

    from efm_ros.demo import report

    def episode(i: int, version: int, success: bool) -> dict:
        return {"episode_id": f"e{i}", "station": "station_0", "policy_version": version,
                "length": 10, "success": success, "steps_to_go": [5.0, 2.0],
                "instruction": "push the red moon to the blue cube"}

    # weights v2 were the newest; a few episodes already ran with them before the stop
    seen = {"episodes": [episode(0, 0, False), episode(1, 0, True), episode(2, 1, True),
                         episode(3, 2, True), episode(3, 2, True)],  # a repeated message
            "weights": [(1, "file://v1"), (2, "file://v2")]}
    before = {"eval/success_rate": 0.5, "eval/mean_length": 9.0, "num_episodes": 100}
    after = {"eval/success_rate": 0.75, "eval/mean_length": 7.0, "num_episodes": 100}
    report(tmp_path, "pushtable", before, after, seen, 1.0, final=2)
    text = (tmp_path / "report.md").read_text()
    assert "after Stage 2 (v2)" in text and "+0.250" in text
    # 50/100 -> 75/100: z = 0.25 / sqrt(0.625 * 0.375 * 0.02) = 3.65, p = 0.0003
    assert "p = 0.000" in text and "100 and 100 fixed tasks" in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["policy_versions"] == [0, 1, 2] and results["episodes"] == 4
    assert results["detector_success_by_version"] == [0.5, 1.0, 1.0]
    assert results["ground_truth_change"]["p_value"] < 0.001
    assert (tmp_path / "learning_curve.png").is_file()


def test_demo_hands_over_the_version_the_plateau_rule_kept(tmp_path):
    from types import SimpleNamespace

    from efm_ros.demo import kept_policy

    stage1 = tmp_path / "best_bc"
    weights = [(0, f"file://{stage1}"), (1, "file:///runs/v1"), (2, "file:///runs/v2"),
               (3, "file:///runs/v3")]
    status = SimpleNamespace(best_policy_version=2)
    assert kept_policy({"weights": weights, "status": status}, stage1) == (2, Path("/runs/v2"))
    # the rule kept the Stage 1 policy: hand it over, not the newest version
    status.best_policy_version = 0
    assert kept_policy({"weights": weights, "status": status}, stage1) == (0, stage1)
    # no version judged yet (-1) or no status at all: the Stage 1 policy, never an
    # unvouched-for newer one
    status.best_policy_version = -1
    assert kept_policy({"weights": weights, "status": status}, stage1) == (0, stage1)
    assert kept_policy({"weights": weights, "status": None}, stage1) == (0, stage1)


def test_the_aloha_station_file_configures_each_node_it_starts(ros_context, tmp_path):
    """Every node of config/aloha_station.yaml that needs no checkpoint starts with its
    section (the declared parameters' validators run): the four realsense views stacked,
    the 14 joints, the reset gate, the 300-step episodes."""
    from rclpy.parameter import Parameter

    from efm_ros.actor_node import ActorNode
    from efm_ros.aloha_bridge import AlohaBridgeNode
    from efm_ros.camera_ingest import CameraIngestNode
    from efm_ros.coordinator_node import CoordinatorNode
    from efm_ros.episode_recorder import EpisodeRecorderNode

    params = load_params(ROOT / "config" / "aloha_station.yaml")
    made = []
    try:
        for name, cls, ns in (("camera_ingest", CameraIngestNode, "/station_0"),
                              ("actor", ActorNode, "/station_0"),
                              ("aloha_bridge", AlohaBridgeNode, "/station_0"),
                              ("episode_recorder", EpisodeRecorderNode, "/station_0"),
                              ("coordinator", CoordinatorNode, "/")):
            values = node_params(params, f"{ns.rstrip('/')}/{name}")
            values = {k: v for k, v in values.items() if "fleet_key" not in k}  # none here
            values = {k: str(tmp_path / k) if k.endswith("_dir") else v
                      for k, v in values.items()}  # /var/lib/efm is the robot's
            made.append(cls(context=ros_context, namespace=ns, parameter_overrides=[
                Parameter(k, value=v) for k, v in values.items()]))
        ingest, actor, bridge, _recorder, coordinator = made
        assert ingest.layout == "aloha_stacked" and len(ingest.proprio_names) == 14
        assert actor.default_max_steps == 300 and actor.send_previous is False
        assert bridge.dry_run and coordinator.require_reset
    finally:
        for node in made:
            node.destroy_node()
