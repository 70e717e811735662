"""Checkpoints: safetensors + JSON + SHA-256, verified on load, never pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from efm_learning.checkpoint import (
    ChecksumError,
    TrainerState,
    load_checkpoint,
    load_trainer_state,
    optimizer_from_state,
    optimizer_to_state,
    save_checkpoint,
)
from efm_learning.testing import tiny_mlp
from efm_sim import keys

OBS = {keys.OBS_STATE: np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)}


def test_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_mlp()
    model.set_state_normalization(np.arange(6), np.ones(6) * 2)
    save_checkpoint(tmp_path / "ck", model, {"step": 3})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert meta == {"step": 3}
    a, b = model.prepare_observations(OBS), loaded.prepare_observations(OBS)
    torch.testing.assert_close(model.action_logits(a), loaded.action_logits(b))
    torch.testing.assert_close(model.expected_steps_to_go(a), loaded.expected_steps_to_go(b))
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == ["SHA256SUMS", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["model"]["type"] == "mlp" and config["model"]["action_tokenizer"]["bins"] == 16


def test_tampered_weights_are_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", tiny_mlp())
    weights = tmp_path / "ck" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"sha256 of model\.safetensors"):
        load_checkpoint(tmp_path / "ck")


def test_tampered_config_and_missing_sums_are_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", tiny_mlp())
    cfg = tmp_path / "ck" / "config.json"
    cfg.write_text(cfg.read_text().replace('"hidden_size": 32', '"hidden_size": 64'))
    with pytest.raises(ChecksumError, match=r"config\.json"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "SHA256SUMS").unlink()
    with pytest.raises(ChecksumError, match="no SHA256SUMS"):
        load_checkpoint(tmp_path / "ck")


def test_overwrite_is_atomic_and_trainer_state_round_trips(tmp_path):
    model = tiny_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model.expected_steps_to_go(model.prepare_observations(OBS)).sum()
    loss.backward()
    opt.step()
    state = optimizer_to_state(opt)
    state.values["step"] = 11
    save_checkpoint(tmp_path / "ck", model, trainer_state=state)
    save_checkpoint(tmp_path / "ck", model, trainer_state=state)  # replace in place
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    restored = load_trainer_state(tmp_path / "ck")
    assert isinstance(restored, TrainerState) and restored.values["step"] == 11
    other = tiny_mlp()
    opt2 = torch.optim.AdamW(other.parameters(), lr=5.0)
    optimizer_from_state(opt2, restored)
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3)
    pairs = list(zip(model.parameters(), other.parameters(), strict=True))
    assert sum(p in opt.state for p, _ in pairs) == len(opt2.state) > 0
    for p1, p2 in pairs:
        if p1 in opt.state:
            torch.testing.assert_close(opt.state[p1]["exp_avg"], opt2.state[p2]["exp_avg"])
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))


def test_trainer_state_not_listed_in_the_sums_is_refused(tmp_path):
    """Trainer-state files dropped next to a verified checkpoint (or left out of its sums)
    are refused, never loaded (issue 17, defect 7)."""
    save_checkpoint(tmp_path / "ck", tiny_mlp())
    assert load_trainer_state(tmp_path / "ck") is None
    other = tmp_path / "other"
    save_checkpoint(other, tiny_mlp(), trainer_state=TrainerState(values={"step": 99}))
    for name in ("trainer_state.safetensors", "trainer_state.json"):
        (tmp_path / "ck" / name).write_bytes((other / name).read_bytes())
    with pytest.raises(ChecksumError, match="not listed"):
        load_trainer_state(tmp_path / "ck")
    load_checkpoint(tmp_path / "ck")  # the weights themselves are still fine


def test_weights_swapped_after_the_check_are_not_the_ones_loaded(tmp_path, monkeypatch):
    """Time of check = time of use: the file is replaced right after its digest was taken;
    the model loaded is still the verified one (before: verified, then read again)."""
    import efm_learning.checkpoint as checkpoint

    good, evil = tiny_mlp(), tiny_mlp()
    with torch.no_grad():
        for p in evil.parameters():
            p.add_(1.0)
    save_checkpoint(tmp_path / "ck", good)
    save_checkpoint(tmp_path / "evil", evil)
    weights = tmp_path / "ck" / "model.safetensors"
    original = weights.read_bytes()
    real_digest = checkpoint._digest

    def digest_then_swap(data: bytes) -> str:
        out = real_digest(data)
        if data == original:  # the weights were just checked: swap them on disk now
            weights.write_bytes((tmp_path / "evil" / "model.safetensors").read_bytes())
        return out

    monkeypatch.setattr(checkpoint, "_digest", digest_then_swap)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    a, b = good.prepare_observations(OBS), loaded.prepare_observations(OBS)
    torch.testing.assert_close(good.action_logits(a), loaded.action_logits(b))


def test_expected_model_digest_is_checked_on_the_loaded_bytes(tmp_path):
    save_checkpoint(tmp_path / "ck", tiny_mlp())
    with pytest.raises(ChecksumError, match="refusing it"):
        load_checkpoint(tmp_path / "ck", expected_model_sha256="0" * 64)
