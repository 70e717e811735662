"""Multi-host practice, simulated on one machine (issue 16, item 6): the learner and the
coordinator in one network namespace, each station in its own, joined only by veth links
the test creates (efm_ros.netns.SimulatedLan: a private subnet that exists only inside
them). DDS over UDP with discovery over that subnet, no shared memory; episodes cross to
the learner and each new version goes back to the stations over ROS 2 (weights.transport
ros), with no filesystem path shared between the "machines". The namespaces are removed
afterwards."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

import pytest
import yaml
from practice_graph import practice_yaml

STATIONS = ("station_0", "station_1")


def _lan_or_skip(stations):
    from efm_ros.netns import LanUnavailableError, SimulatedLan

    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CAP_NET_ADMIN); this test runs as root in CI")
    lan = SimulatedLan(stations)
    try:
        return lan.__enter__()
    except LanUnavailableError as error:
        pytest.skip(f"cannot create network namespaces here: {error}")


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _logs(log_dir) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
                     for p in sorted(log_dir.glob("*.log")))


@pytest.mark.slow
def test_a_practice_round_across_machines_with_weights_over_the_network(
    ros_domain, tiny_checkpoint, tmp_path
):
    from efm_ros.bringup import Graph
    from efm_ros.node_set import load_params, practice_nodes

    run = tmp_path / "run"
    params = practice_yaml(tmp_path / "practice.yaml", tiny_checkpoint, run, STATIONS,
                           updates=2, batch=8, max_steps=6)
    data = yaml.safe_load(params.read_text())
    data["/learner"]["ros__parameters"]["weights.transport"] = "ros"
    data["/**/policy"]["ros__parameters"]["weights.cache_dir"] = str(run / "station_disk")
    params.write_text(yaml.safe_dump(data))

    lan = _lan_or_skip(STATIONS)
    names = [lan.hub, *lan.namespaces.values()]
    logs = tmp_path / "logs"
    try:
        graph = Graph(practice_nodes(load_params(params), sim=True), params, logs,
                      env=lan.environment(ros_domain), compose=True, prefix=lan.prefix)
        v1 = run / "learner" / "policy" / "v1" / "model.safetensors"
        fetched = [run / "station_disk" / s / "v1" / "model.safetensors" for s in STATIONS]
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not (v1.exists() and all(f.exists()
                                                                         for f in fetched)):
            assert not graph.poll(), (graph.poll(), _logs(logs))
            time.sleep(0.5)
        assert v1.exists(), "no learning round completed across the LAN\n" + _logs(logs)
        assert all(f.exists() for f in fetched), "v1 did not reach every station\n" + _logs(logs)
        # each station downloaded the learner's v1 byte for byte and acts with it
        assert {_sha(f) for f in fetched} == {_sha(v1)}
        for station in STATIONS:
            log = logs / f"{station}.log"
            deadline = time.monotonic() + 30
            while "now acting with policy version 1" not in log.read_text(errors="replace"):
                assert time.monotonic() < deadline, _logs(logs)
                time.sleep(0.5)
        # the round learned from episodes that crossed from the stations' namespaces
        ids = (run / "learner" / "seen_episode_ids.txt").read_text().split()
        assert ids and {i.split("-")[0] for i in ids} <= set(STATIONS)
        # the processes really ran in the namespaces: the hub has the learner's
        assert lan.pids(), "no process was running inside the namespaces"
        codes = graph.stop()
        assert not {n: c for n, c in codes.items() if c != 0}, (codes, _logs(logs))
    finally:
        lan.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names), listed  # torn down
