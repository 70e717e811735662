"""The paper experiments (issue 7) in their ``--quick`` configurations, as subprocesses,
so the commands in docs/RESULTS.md cannot rot; plus the detector metrics on known data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "MPLBACKEND": "Agg"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def experiment(name: str, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=REPO,
                         env=ENV, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, f"stdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
    return out


def assert_png(path: str | Path) -> None:
    path = Path(path)
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is suspiciously small ({len(data)} bytes)"


def assert_rate(value: float | None) -> None:
    assert value is None or 0.0 <= value <= 1.0, value


def test_pointmass_experiment_quick_writes_results_and_resumes(tmp_path):
    out = tmp_path / "pm"
    args = ("--quick", "--seeds", "0", "1", "--out", str(out))
    first = experiment("pointmass", *args)
    assert "[stage 2] seed 1" in first.stdout and "[report]" in first.stdout

    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1] and results["quick"] is True
    assert [r["seed"] for r in results["stage2_per_seed"]] == [0, 1]
    demo, straight = results["dataset_demonstrator"], results["straight_pd_reference"]
    # the waypoint-PD demonstrator reaches the goal, but with detours: far longer than the
    # straight PD (~12.6 steps); that gap is what Stage 2 is supposed to close
    assert demo["success_rate"] >= 0.9 and straight["success_rate"] == 1.0
    assert demo["mean_length"] > 3 * straight["mean_length"] > 30
    policies = [results["stage1_policy"]] + [r[w] for r in results["stage2_per_seed"]
                                             for w in ("best", "last")]
    for p in policies:
        assert_rate(p["success_rate"])
        assert 1.0 <= p["mean_length"] <= 140.0
        assert p["num_episodes"] == results["test_tasks"]["evaluated"] > 0
    for which in ("stage2_best", "stage2_last"):
        agg = results[which]["success_rate"]
        assert len(agg["per_seed"]) == 2 and agg["min"] <= agg["mean"] <= agg["max"]
    for png in results["figures"].values():
        assert_png(png)
    assert (out / "improve_seed1" / "best").is_dir()

    # resumable: a second run skips the measured Stage 1 and both finished seeds
    stamps = {p: p.stat().st_mtime_ns for p in (out / "seeds").glob("seed*.json")}
    again = experiment("pointmass", *args)
    assert again.stdout.count("finished earlier") == 3, again.stdout  # Stage 1 + 2 seeds
    assert "SFT:" not in again.stdout
    assert "already in" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_reward_quality_quick_writes_sane_metrics(tmp_path):
    out = tmp_path / "rq"
    experiment("reward_quality", "--quick", "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    det = results["detector"]
    for name in ("held_out_demos", "stage1_rollouts"):
        rows = det[name]["per_observation"]
        assert [r["s"] for r in rows] == sorted(r["s"] for r in rows) and len(rows) >= 5
        for r in rows:
            assert_rate(r["precision"])
            assert_rate(r["recall"])
        # a larger s can only fire more often
        fired = [r["fired"] for r in rows]
        assert fired == sorted(fired)
    assert det["stage1_rollouts"]["episodes"] == results["rollouts"]["count"] == 8
    cal = results["calibration_held_out_demos"]
    assert cal["observations"] > 0 and cal["mae"] >= 0 and np.isfinite(cal["rmse"])
    assert sum(b["count"] for b in cal["by_true_steps"]) == cal["observations"]
    for png in results["figures"].values():
        assert_png(png)


def test_detector_metrics_on_a_hand_made_episode():
    from experiments.reward_quality import calibration, episode_pr, observation_pr

    # one 5-step rollout: d falls, the point enters the goal at t=2, stays at t=3, leaves
    d = np.array([[9.0, 3.0, 0.2, 0.1, 4.0]])
    gt = np.array([[False, False, True, True, False]])
    dist = np.array([[0.9, 0.3, 0.1, 0.05, 0.4]])
    tight, loose = episode_pr(d, gt, dist, [0.5, 3.5])
    assert tight["precision"] == 1.0 and tight["fired_before_goal_rate"] == 0.0
    assert tight["mean_delay_after_goal"] == 0.0 and tight["recall"] == 1.0
    assert loose["precision"] == 0.0 and loose["fired_before_goal_rate"] == 1.0
    assert loose["median_distance_at_wrong_first_firing"] == pytest.approx(0.3)
    # held on 2 observations in a row: the loose detector waits for t=2 (d 3.0, 0.2): right
    held = episode_pr(d, gt, dist, [3.5], consecutive=2)[0]
    assert held["precision"] == 1.0 and held["fired_before_goal_rate"] == 0.0
    assert held["consecutive"] == 2 and held["mean_delay_after_goal"] == 0.0
    rows = observation_pr(d.ravel(), gt.ravel(), [0.15, 0.5, 3.5])
    assert rows[0]["precision"] == 1.0 and rows[0]["recall"] == 0.5
    assert rows[1]["precision"] == 1.0 and rows[1]["recall"] == 1.0
    assert rows[2]["precision"] == pytest.approx(2 / 3)

    true = np.arange(40, dtype=float)
    perfect = calibration(true.copy(), true)
    assert perfect["mae"] == 0.0 and perfect["r2"] == pytest.approx(1.0)
    assert perfect["reliability_gap"] == pytest.approx(0.0)
    biased = calibration(true + 3.0, true)
    assert biased["bias_mean_d_minus_true"] == pytest.approx(3.0)
    assert biased["reliability_gap"] == pytest.approx(3.0)


def _assert_policy(record: dict, tasks: int) -> None:
    assert_rate(record["success_rate"])
    assert 1.0 <= record["mean_length"] <= 8.0  # --quick: 8-step episodes
    assert 0 < record["num_episodes"] <= tasks


def test_sample_efficiency_quick_counts_demos_and_practice_and_resumes(tmp_path):
    out = tmp_path / "se"
    args = ("--quick", "--seeds", "0", "--fractions", "0.2", "1.0", "--stage2-fractions", "0.2",
            "--stage2-seeds", "0", "1", "--out", str(out))
    experiment("sample_efficiency", *args)
    results = json.loads((out / "results.json").read_text())
    small, full = results["summary"]["f20"], results["summary"]["f100"]
    # 12 demos, 1 held out for validation: 20% of the 11 training episodes, and all of them
    assert small["demos"] == [2] and full["demos"] == [11]
    assert "stage2_best" not in full
    for which in ("best", "last"):
        s2 = small[f"stage2_{which}"]
        assert s2["runs"] == [{"stage1_seed": 0, "stage2_seed": 0},
                              {"stage1_seed": 0, "stage2_seed": 1}]
        assert s2["total_episodes"] == [2 + n for n in s2["practice_episodes"]]
    assert min(small["stage2_last"]["practice_episodes"]) > 0  # 2 rounds of practice
    for piece in results["pieces"]:
        _assert_policy(piece["stage1"], 4)
    assert_png(results["figures"]["sample_efficiency"])
    again = experiment("sample_efficiency", *args)
    assert again.stdout.count("finished earlier") == 4 and "SFT:" not in again.stdout
    assert json.loads((out / "results.json").read_text())["summary"] == results["summary"]


def test_sample_efficiency_refuses_a_stage2_fraction_without_stage1(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "experiments.sample_efficiency", "--quick", "--fractions", "0.2",
         "--stage2-fractions", "0.1", "--out", str(tmp_path)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "not among --fractions" in out.stderr


def test_pretraining_quick_compares_two_reward_models_from_one_policy(tmp_path):
    out = tmp_path / "pre"
    experiment("pretraining", "--quick", "--seeds", "0", "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    arms = results["arms"]
    assert set(arms) == {"pretrained", "scratch"}
    assert arms["pretrained"]["reward_checkpoint"] != arms["scratch"]["reward_checkpoint"]
    from efm_learning.checkpoint import read_checkpoint_config

    for arm, pretrained in (("pretrained", True), ("scratch", False)):
        model_cfg = read_checkpoint_config(arms[arm]["reward_checkpoint"])["model"]
        assert model_cfg["pretrained"] is pretrained
        for record in arms[arm]["per_seed"]:
            _assert_policy(record["best"], 4)
            assert record["practice_detector"]["detector_ended_episodes"] >= 0
    _assert_policy(results["stage1_policy"], 4)
    assert_png(results["figures"]["pretraining"])


def test_bananatable_quick_trains_on_pushtable_and_practises_on_bananas(tmp_path):
    out = tmp_path / "ban"
    experiment("bananatable", "--quick", "--seeds", "0", "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    assert results["stage1_families"] == ["block2block", "block2location"]
    assert "banana" in results["filmstrip"]["instruction"]
    _assert_policy(results["stage1_policy"], 4)
    for record in results["stage2_per_seed"]:
        _assert_policy(record["last"], 4)
    for png in results["figures"].values():
        assert_png(png)


def test_pushtable_robustness_diagnosis_and_privileged_bound_quick(tmp_path):
    """The issue-13 commands end to end on a tiny board: Stage 1 x Stage 2 seeds with the
    GT-free kept policy measured on report tasks, the Stage 1 diagnosis (policy GT and the
    detector on its own rollouts, false-positive sheet), and the privileged-state MLP."""
    from experiments.pushtable_common import QUICK_OVERRIDES

    quick = [a for o in QUICK_OVERRIDES for a in ("--set", o)]
    data = tmp_path / "data"
    out = tmp_path / "robust"
    experiment("pushtable_robustness", "--stage1-seeds", "1", "--stage2-seeds", "1",
               "--rounds", "2", "--patience", "1", "--test-tasks", "4", "--out", str(out),
               *quick, "--set", f"data.dir={data}")
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"] == {"split": "report", "count": 4}
    (run,) = results["runs"]
    assert_rate(run["stage1"])
    assert_rate(run["kept"])
    assert run["kept_round"] in (0, 1, 2)  # a version the plateau rule saw act
    assert "| 1 | 1 |" in (out / "robustness.md").read_text()

    diagnosis = tmp_path / "diagnosis"
    experiment("pushtable_diagnosis", "--stage1", str(out / "s1" / "sft"), "--tasks", "4",
               "--out", str(diagnosis), *quick, "--set", f"data.dir={data}")
    record = json.loads((diagnosis / "results.json").read_text())
    assert record["split"] == "tuning" and record["detector"]["episodes"] == 4
    assert_rate(record["policy_gt"]["success_rate"])
    assert {row["s"] for row in record["detector"]["per_episode"]} >= {2.0, 3.0}
    noise = record["reward_noise"]
    assert set(noise) == {"expected", "in_range"} and noise["expected"]["steps"] > 0
    assert all(v["std"] >= 0 and v["p01"] <= v["p99"] for v in noise.values())

    bound = tmp_path / "bound"
    experiment("pushtable_privileged", "--tasks", "4", "--steps", "20", "--out", str(bound),
               *quick, "--set", f"data.dir={data}")
    record = json.loads((bound / "results.json").read_text())
    assert record["tasks"] == 4 and record["relative_vectors"]
    assert_rate(record["success_rate"])
