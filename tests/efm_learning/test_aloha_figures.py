"""The traced ALOHA episode behind make demo-aloha's Figures 2 and 3 (issue 14 item 5):
what is recorded at each 10 Hz observation, where the stage events and the filmstrip
window fall, and that both figures are drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from efm_learning.aloha_figures import (
    filmstrip_window,
    plot_steps_to_go_episode,
    plot_steps_to_go_filmstrip,
    stage_events,
)
from efm_learning.models import make_model

TINY = {"type": "aloha_efm", "image_size": 16, "band_px": 2, "channels": [8, 8],
        "hidden_size": 32, "joint_embed_dim": 4,
        "steps_to_go": {"max_steps": 100, "num_bins": 51}}


@pytest.fixture(scope="module")
def trace():
    from efm_learning.aloha_eval import trace_episode
    from efm_sim.aloha import AlohaInsertionEnv

    torch.manual_seed(0)
    policy = make_model(dict(TINY)).eval()
    reward = make_model(dict(TINY)).eval()
    env = AlohaInsertionEnv(image_size=(12, 16), max_episode_steps=12)
    out = trace_episode(env, policy, reward, seed=3)
    env.close()
    out["reward_model"] = reward
    return out


def test_trace_records_every_10hz_observation_with_the_reward_models_distribution(trace):
    # 12 driver steps = 3 chunks of 5 (the last cut at the limit): o_0 .. o_3
    assert trace["steps"] == 12 and len(trace["policy_latency_s"]) == 3
    assert trace["probs"].shape == (4, 51) and trace["frames"].shape == (4, 16, 16, 3)
    assert trace["stage"].shape == (4,) and trace["steps_to_go"].shape == (4,)
    np.testing.assert_allclose(trace["probs"].sum(axis=1), 1.0, atol=1e-5)
    # d is the expectation of the recorded distribution (Eq. 1), not another model's
    np.testing.assert_allclose(trace["steps_to_go"], trace["probs"] @ trace["bin_values"],
                               rtol=1e-4)
    assert trace["frames"].dtype == np.uint8 and trace["frames"].max() > 0
    assert np.all(trace["policy_latency_s"] > 0)


def test_stage_events_mark_every_gain_and_loss():
    assert stage_events(np.array([0, 0, 1, 1, 2, 1, 3])) == [
        (2, 0, 1), (4, 1, 2), (5, 2, 1), (6, 1, 3)]
    assert stage_events(np.zeros(5, int)) == []


def test_filmstrip_window_is_where_d_moves_most():
    d = np.array([30, 29, 28, 27, 26, 25, 24, 6, 23, 22, 21, 20.0])
    start = filmstrip_window(d)
    assert start <= 7 < start + 5  # the 5 frames include the sudden drop
    assert filmstrip_window(d[:4]) == 0


def test_both_figures_are_drawn(trace, tmp_path):
    trace = dict(trace, stage=np.array([0, 1, 2, 1]))
    for path in (plot_steps_to_go_episode(trace, tmp_path / "fig2.png"),
                 plot_steps_to_go_filmstrip(trace, tmp_path / "fig3.png")):
        with Image.open(path) as image:
            assert image.size[0] > 400 and image.size[1] > 200
