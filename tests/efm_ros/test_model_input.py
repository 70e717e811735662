"""``model_host.model_input``: every camera image of an Observation reaches the model
(issue 14 item 3), in declared order; the single-camera keys are as before. Also: the
ROS stacking (camera_ingest ``aloha_stacked``) matches the one the ALOHA model trains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efm_learning.models import make_model
from efm_ros.camera_ingest import resize, stack_pair
from efm_ros.model_host import model_input
from efm_sim import keys
from efm_sim.aloha_layout import OBS_IMAGES, OBS_PREV_IMAGES, stack_views


def _arrays(names, n=2, size=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        images = {c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in names}
        prev = {c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in names}
        out.append({"images": images, "previous_images": prev,
                    "proprioception": rng.standard_normal(14).astype(np.float32),
                    "instruction": f"task {i}"})
    return out


def test_single_camera_keys_are_unchanged():
    arrays = _arrays(["top"])
    batch = model_input(arrays)
    np.testing.assert_array_equal(batch[keys.OBS_IMAGE], [a["images"]["top"] for a in arrays])
    np.testing.assert_array_equal(batch[keys.OBS_PREV_IMAGE],
                                  [a["previous_images"]["top"] for a in arrays])
    assert batch[keys.INSTRUCTION] == ["task 0", "task 1"]
    assert model_input(arrays, "override")[keys.INSTRUCTION] == ["override"] * 2
    assert batch[OBS_IMAGES].shape == (2, 1, 16, 16, 3)
    without = model_input([{**a, "images": {}, "previous_images": {}} for a in arrays])
    assert keys.OBS_IMAGE not in without and OBS_IMAGES not in without


def test_every_camera_reaches_the_batch_in_declared_order():
    names = ["cam_high+cam_low", "cam_left_wrist+cam_right_wrist"]
    arrays = _arrays(names)
    batch = model_input(arrays)
    assert batch[OBS_IMAGES].shape == (2, 2, 16, 16, 3)
    for b, a in enumerate(arrays):
        for i, name in enumerate(names):
            np.testing.assert_array_equal(batch[OBS_IMAGES][b, i], a["images"][name])
            np.testing.assert_array_equal(batch[OBS_PREV_IMAGES][b, i],
                                          a["previous_images"][name])
    np.testing.assert_array_equal(batch[keys.OBS_IMAGE], batch[OBS_IMAGES][:, 0])
    broken = _arrays(names)
    broken[1]["images"][names[1]] = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="disagree"):
        model_input(broken)


def test_the_two_image_backend_sees_the_wrist_image_through_model_input():
    torch.manual_seed(0)
    model = make_model({"type": "aloha_efm", "image_size": 16, "band_px": 2,
                        "channels": [8, 8], "hidden_size": 32, "joint_embed_dim": 4}).eval()
    names = ["top+table", "left_wrist+right_wrist"]
    arrays = _arrays(names, n=1)
    other = _arrays(names, n=1, seed=1)
    other[0]["proprioception"] = arrays[0]["proprioception"]
    other[0]["images"][names[0]] = arrays[0]["images"][names[0]]  # only the wrists differ
    with torch.no_grad():
        a = model.action_logits(model.prepare_observations(model_input(arrays)))
        b = model.action_logits(model.prepare_observations(model_input(other)))
    assert not torch.allclose(a, b)


def test_camera_ingest_stacking_matches_the_training_stacking():
    """camera_ingest's aloha_stacked layout and efm_sim.aloha_layout (what Stage 1 data
    and inference use) put the views and the band in the same rows, same pixels +-1."""
    rng = np.random.default_rng(3)
    upper = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    lower = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ros = stack_pair(upper, lower, 32, 32, 4, lambda im, h, w: resize(im, h, w, "area"))
    ours = stack_views(upper, lower, 32, 4)
    assert ros.shape == ours.shape
    assert not ros[14:18].any() and not ours[14:18].any()
    assert np.abs(ros.astype(int) - ours.astype(int)).max() <= 1


def test_the_aloha_embodiment_passes_what_aloha_efm_decodes_unclipped():
    """The policy node clips every chunk to its embodiment's limits; for ALOHA those must
    be the joint ranges aloha_efm decodes to (rad, gripper 0..1), not +-1 (which cut every
    joint at 1 rad before)."""
    from efm_ros.embodiments import get_embodiment

    model = make_model({"type": "aloha_efm", "image_size": 16, "band_px": 2,
                        "channels": [8, 8], "hidden_size": 32, "joint_embed_dim": 4}).eval()
    embodiment = get_embodiment("aloha")
    for token in (0, model.action_vocab - 1):
        tokens = torch.full((1, model.num_action_tokens), token, dtype=torch.long)
        chunk = np.asarray(model.decode_actions(tokens)[0]).reshape(-1, embodiment.dof)
        assert np.abs(chunk).max() > 1.5  # the waist range is +-pi
        np.testing.assert_allclose(embodiment.clip(chunk), chunk, atol=1e-6)
