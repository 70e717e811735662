"""The GT-free stopping rule (paper Section 6): a plateau of the detector's success."""

from __future__ import annotations

import json

import pytest

from efm_learning.stopping import PlateauRule, ValidationBudget


def _run(rule: PlateauRule, rates: list[float], episodes: int = 20):
    decisions = []
    for version, rate in enumerate(rates):
        decisions.append(rule.observe(version, round(rate * episodes), episodes))
        if decisions[-1] is not None and decisions[-1].stop:
            break
    return decisions


def test_keeps_the_best_pooled_version_and_stops_after_patience() -> None:
    rule = PlateauRule(patience=3, min_gain=0.02, window=2)
    decisions = _run(rule, [0.2, 0.3, 0.5, 0.6, 0.5, 0.3, 0.2, 0.1, 0.1, 0.1])
    last = decisions[-1]
    assert last.stop and len(decisions) == 7  # versions 4, 5, 6 brought no gain
    assert last.best_version == 3 and rule.best_version == 3
    assert last.best_rate == pytest.approx((0.5 + 0.6) / 2)
    assert decisions[5].pooled_rate == pytest.approx((0.5 + 0.3) / 2)


def test_pooling_damps_a_lucky_version() -> None:
    # one lucky version (0.8) between poor ones: alone it would be kept
    alone = PlateauRule(patience=0, window=1)
    pooled = PlateauRule(patience=0, window=3)
    rates = [0.3, 0.35, 0.8, 0.3, 0.45, 0.6, 0.7]
    _run(alone, rates)
    _run(pooled, rates)
    assert alone.best_version == 2
    assert pooled.best_version == 6


def test_patience_zero_never_stops_and_small_versions_are_not_judged() -> None:
    rule = PlateauRule(patience=0, min_episodes=8)
    assert all(d is None or not d.stop for d in _run(rule, [0.5, 0.1, 0.1, 0.1, 0.1]))
    assert rule.observe(10, 1, 3) is None
    with pytest.raises(ValueError, match="increase"):
        rule.observe(10, 1, 20)
    with pytest.raises(ValueError, match="successes"):
        rule.observe(11, 5, 4)
    with pytest.raises(ValueError, match="patience"):
        PlateauRule(patience=-1)


def test_only_full_windows_are_judged() -> None:
    # the fresh-clone demo of c939f2b (docs/DEMO.md): v0 alone (0.68 from 25 episodes) stood
    # as the best "window" and was kept although later full windows pooled higher
    rates = [0.68, 0.68, 0.577, 0.478, 0.74, 0.72, 0.6, 0.38, 0.478, 0.667, 0.56]
    rule = PlateauRule(patience=10, min_gain=0.02, window=3)
    decisions = [rule.observe(v, round(r * 25), 25) for v, r in enumerate(rates)]
    assert decisions[0] is None and decisions[1] is None  # no full window yet
    assert decisions[2].pooled_rate == pytest.approx((17 + 17 + 14) / 75)
    assert rule.best_version == 6  # v4-v6 pooled 0.69 beats v0-v2 (0.64) by > 0.02
    # a run too short for one full window judges nothing: the caller keeps Stage 1
    short = PlateauRule(patience=2, window=3)
    assert short.observe(0, 20, 20) is None and short.observe(1, 0, 20) is None
    assert short.best_version == -1


def test_validation_budget_stops_when_no_loss_improves() -> None:
    budget = ValidationBudget(patience_steps=1000, min_rel_gain=0.01)
    # steps-to-go keeps improving until 2000, BC until 1500; after that both are flat
    bc = {500: 6.0, 1000: 5.8, 1500: 5.5, 2000: 5.49, 2500: 5.48, 3000: 5.47, 3500: 5.47}
    stg = {500: 3.0, 1000: 2.9, 1500: 2.8, 2000: 2.7, 2500: 2.69, 3000: 2.695, 3500: 2.68}
    stops = {s: budget.observe(s, {"bc": bc[s], "steps_to_go": stg[s]}) for s in bc}
    # BC's last gain > 1% was at 1500, steps-to-go's at 2000: stop 1000 steps after 2000
    assert next(s for s, stop in stops.items() if stop) == 3000
    assert budget.stopped_at == 3000
    # the same curve, but one loss still improving: never stops
    going = ValidationBudget(patience_steps=1000)
    assert not any(going.observe(s, {"bc": bc[s], "steps_to_go": 3.0 - s / 1000})
                   for s in bc)
    # patience 0: train the whole cap
    off = ValidationBudget(patience_steps=0)
    assert not any(off.observe(s, {"bc": 5.0}) for s in range(500, 20000, 500))


def test_validation_budget_state_round_trips() -> None:
    budget = ValidationBudget(patience_steps=1000)
    budget.observe(500, {"bc": 5.0, "steps_to_go": 3.0})
    budget.observe(1000, {"bc": 4.0, "steps_to_go": 3.0})
    resumed = ValidationBudget(patience_steps=1000)
    resumed.restore(json.loads(json.dumps(budget.state())))
    # steps-to-go has not improved since 500, BC since 1000: 2000 stops, 1500 does not
    assert not resumed.observe(1500, {"bc": 4.0, "steps_to_go": 3.0})
    assert resumed.observe(2000, {"bc": 4.0, "steps_to_go": 3.0})
    with pytest.raises(ValueError, match="patience_steps"):
        ValidationBudget(patience_steps=-1)
