"""The GT-free stopping rule (paper Section 6): a plateau of the detector's success."""

from __future__ import annotations

import pytest

from efm_learning.stopping import PlateauRule


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
    assert all(not d.stop for d in _run(rule, [0.5, 0.1, 0.1, 0.1, 0.1]))
    assert rule.observe(10, 1, 3) is None
    with pytest.raises(ValueError, match="increase"):
        rule.observe(10, 1, 20)
    with pytest.raises(ValueError, match="successes"):
        rule.observe(11, 5, 4)
    with pytest.raises(ValueError, match="patience"):
        PlateauRule(patience=-1)
