"""The before/after statistics of the demo report (efm_learning.evaluation.success_change)."""

from __future__ import annotations

import math

import pytest

from efm_learning.evaluation import success_change


def test_known_two_proportion_z_test():
    # 12/200 vs 24/200: pooled 0.09, z = 0.06 / sqrt(0.09 * 0.91 * 2 / 200) = 2.097
    out = success_change(0.06, 0.12, 200, 200)
    assert out["difference"] == pytest.approx(0.06)
    assert out["p_value"] == pytest.approx(0.036, abs=1e-3)
    low, high = out["ci95"]
    half = 1.96 * math.sqrt(0.06 * 0.94 / 200 + 0.12 * 0.88 / 200)
    assert (low, high) == pytest.approx((0.06 - half, 0.06 + half))
    assert low > 0  # significant at 5%: the interval excludes no change


def test_no_change_and_more_tasks():
    assert success_change(0.3, 0.3, 100, 100)["p_value"] == pytest.approx(1.0)
    assert success_change(0.0, 0.0, 50, 50)["p_value"] == 1.0
    # the same rates are more convincing on more tasks
    few = success_change(0.06, 0.10, 200, 200)["p_value"]
    many = success_change(0.06, 0.10, 1000, 1000)["p_value"]
    assert many < 0.05 < few


@pytest.mark.parametrize("args", [(0.1, 1.2, 10, 10), (-0.1, 0.2, 10, 10), (0.1, 0.2, 0, 10)])
def test_bad_input_is_refused(args):
    with pytest.raises(ValueError):
        success_change(*args)
