"""Stage 2 on images with the GT-free stopping rule, in-process: the shipped PushTable
Stage 1 (checkpoints/pushtable, the release `make demo` uses) practises for a few rounds
with rewards and success only from its frozen steps-to-go model, and the policy handed
over (``best``) is the version the plateau rule (efm_learning.stopping) picks from the
detector's success per version, not the last one and not one chosen by ground truth."""

from __future__ import annotations

from pathlib import Path

from efm_learning.checkpoint import install_release, load_checkpoint
from efm_learning.config import load_config
from efm_learning.stopping import PlateauRule

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 3


def test_pushtable_stage2_keeps_the_version_the_plateau_rule_picks(tmp_path):
    from efm_learning.self_improvement import self_improve

    install_release(REPO / "checkpoints" / "pushtable", tmp_path / "run" / "sft")
    cfg = load_config(REPO / "config" / "pushtable.yaml", [
        f"run_dir={tmp_path / 'run'}", "num_threads=2", "seed=0", f"improve.rounds={ROUNDS}",
        "improve.eval_episodes=0", "improve.selection_metric=detector", "improve.patience=0",
        "improve.updates_per_round=4",  # 4 x 64 samples a round: seconds, not minutes
    ])
    result = self_improve(cfg, progress=False)
    practice = [r for r in result.history if "practice/episodes" in r]
    # only full windows are judged: the first window - 1 versions carry no pooled rate
    window = cfg.improve.plateau_window
    assert len(practice) == ROUNDS and window <= ROUNDS
    assert [("practice/pooled_detector_success" in r) for r in practice] == [
        v >= window - 1 for v in range(ROUNDS)]
    # replay the rule on what was logged: the kept checkpoint is its pick
    rule = PlateauRule(patience=0, min_gain=cfg.improve.plateau_min_gain,
                       window=cfg.improve.plateau_window)
    for version, r in enumerate(practice):
        n = int(r["practice/episodes"])
        rule.observe(version, round(r["practice/detector_success_rate"] * n), n)
    _, meta = load_checkpoint(result.directory / "best")
    assert meta["round"] == rule.best_version == result.best_round
    assert "plateau" in meta["selection"]


#: Algorithm 1 rounds of the shortened image-domain run below
IMPROVE_ROUNDS = 12
#: tuning tasks it is measured on (never the report split; docs/EVALUATION.md)
TASKS = 200


def test_pushtable_stage2_raises_ground_truth_success(tmp_path):
    """A shortened image-domain Stage 2 that must raise GT success (issue 13): the shipped
    Stage 1 practises 12 rounds with the recipe of config/pushtable.yaml (lr 1e-4,
    in-range reward) at fixed seeds; the policy after the last round, measured by the
    simulator on 200 tuning tasks, succeeds more often than Stage 1 on the same tasks and
    sampling seed. With the previous recipe (lr 3e-4, full-expectation reward) the same
    run fell (docs/PUSHTABLE.md)."""
    from efm_learning.evaluation import Evaluator
    from efm_learning.self_improvement import self_improve

    install_release(REPO / "checkpoints" / "pushtable", tmp_path / "run" / "sft")
    cfg = load_config(REPO / "config" / "pushtable.yaml", [
        f"run_dir={tmp_path / 'run'}", "num_threads=2", "seed=1",
        f"improve.rounds={IMPROVE_ROUNDS}", "improve.eval_episodes=0", "improve.patience=0",
    ])
    result = self_improve(cfg, progress=False)
    stage1, _ = load_checkpoint(tmp_path / "run" / "sft" / "best_bc")
    last, _ = load_checkpoint(result.directory / "last")
    rates = {}
    for name, policy in (("stage1", stage1), ("last", last)):
        evaluator = Evaluator(cfg.env, policy, cfg.improve.max_episode_steps, TASKS,
                              seed=7, env_kwargs=cfg.env_kwargs, split="tuning")
        rates[name] = evaluator.evaluate().success_rate
    assert rates["last"] >= rates["stage1"] + 0.05, rates  # measured: 0.770 -> 0.865
