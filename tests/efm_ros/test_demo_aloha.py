"""make demo-aloha's pieces that do not need a trained model (issue 14 item 5): its
deployment is config/aloha_sim_practice.yaml with the run's own checkpoints and folders,
throughput from the watched diagnostics, and the report. The practice round itself runs
in test_aloha_practice.py on the same deployment file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from efm_ros import demo_aloha
from efm_ros.demo import deployment
from efm_ros.node_set import load_params, practice_nodes

REPO = Path(__file__).resolve().parents[2]


def test_the_deployment_is_the_sim_practice_file_with_the_runs_paths(tmp_path):
    ckpt = {"policy": tmp_path / "stage1" / "sft" / "last",
            "reward": tmp_path / "stage1" / "sft" / "best_steps_to_go"}
    params = load_params(deployment(REPO / "config" / "aloha_sim_practice.yaml", tmp_path, ckpt))
    assert params["/**/policy"]["ros__parameters"]["model.checkpoint"] == str(ckpt["policy"])
    assert params["/learner"]["ros__parameters"]["model.policy_checkpoint"] == str(ckpt["policy"])
    assert params["/**/steps_to_go"]["ros__parameters"]["model.checkpoint"] == str(ckpt["reward"])
    assert (tmp_path / "fleet.key").is_file()
    # the Section 4.1.3 bonus agrees between the actor's labels and the learner's check
    bonus = params["/**/actor"]["ros__parameters"]["labelling.success_bonus"]
    assert bonus > 0 and params["/learner"]["ros__parameters"]["improve.success_bonus"] == bonus
    names = [s.name for s in practice_nodes(params, sim=True)]
    assert names[:2] == ["interbotix_sim", "aloha_bridge"] and "sim_robot" not in names


def test_the_newest_version_is_the_last_published():
    assert demo_aloha.newest_version({"weights": []}) is None
    seen = {"weights": [(1, "file:///r/v1"), (3, "file:///r/v3"), (2, "file:///r/v2")]}
    assert demo_aloha.newest_version(seen) == (3, Path("/r/v3"))


def test_rates_come_from_the_first_and_last_diagnostics():
    seen = {"diagnostics": {
        demo_aloha.SIM_NODE: {"first": (10.0, {"control_steps": "100"}),
                              "last": (20.0, {"control_steps": "596"})},
        demo_aloha.POLICY_NODE: {"first": (11.0, {"actions": "3"}),
                                 "last": (11.0, {"actions": "3"})}}}  # one sample: no rate
    assert demo_aloha.rates(seen) == {"control_steps_per_s": pytest.approx(49.6)}


def _eval(rate: float, stages: list[float]) -> dict:
    return {"success_rate": rate, "episodes": 20, "mean_max_stage": 1.0,
            "closest_left_to_socket_m": 0.05, "closest_right_to_peg_m": 0.125,
            "reached_stage": {str(s + 1): v for s, v in enumerate(stages)},
            "results": [{"seed": 100_000}]}


def test_report_writes_the_table_the_curve_and_the_throughput(tmp_path):
    seen = {"episodes": [{"episode_id": f"e{i}", "policy_version": i // 3, "length": 80,
                          "success": i % 4 == 0} for i in range(9)],
            "diagnostics": {demo_aloha.SIM_NODE: {"first": (0.0, {"control_steps": "0"}),
                                                  "last": (10.0, {"control_steps": "480"})}}}
    traces = {"stage1": {"policy_latency_ms": {"median": 21.0, "p99": 40.0, "calls": 80}}}
    results = demo_aloha.report(tmp_path, _eval(0.0, [0.5, 0.2, 0.0, 0.0]),
                                _eval(0.05, [0.7, 0.3, 0.1, 0.05]), seen, traces, 2, 30.0,
                                newest=(3, _eval(0.0, [0.6, 0.0, 0.0, 0.0])))
    assert results["policy_versions"] == [0, 1, 2] and results["episodes"] == 9
    assert results["throughput"]["control_steps_per_s"] == pytest.approx(48.0)
    assert json.loads((tmp_path / "results.json").read_text())["kept_version"] == 2
    text = (tmp_path / "report.md").read_text()
    assert "| after Stage 2 (v2) | 0.050 | 0.70 | 0.30 | 0.10 | 0.05 | 5.0 | 12.5 |" in text
    assert "| newest (v3, not kept) | 0.000 | 0.60 |" in text
    assert results["newest_version"] == 3
    assert "48.0 control steps/s" in text and "median\n21.0 ms" in text
    assert (tmp_path / "learning_curve.png").stat().st_size > 10_000
