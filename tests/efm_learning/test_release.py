"""Stage 1 releases (checkpoints shipped in the repo): pinned, verified, tamper-evident."""

from __future__ import annotations

import json

import pytest
import torch

from efm_learning.checkpoint import (
    RELEASE_FILE,
    ChecksumError,
    install_release,
    load_checkpoint,
    save_checkpoint,
    write_release,
)
from efm_learning.models import make_model

MLP = {"type": "mlp", "state_dim": 3, "hidden_size": 8, "num_layers": 1,
       "action_tokenizer": {"type": "uniform", "action_dim": 2, "bins": 5, "low": -1, "high": 1},
       "steps_to_go": {"max_steps": 10, "num_bins": 5}}
NAMES = ("best_bc", "best_steps_to_go")


@pytest.fixture()
def run(tmp_path):
    torch.manual_seed(0)
    sft = tmp_path / "run" / "sft"
    for name in NAMES:
        save_checkpoint(sft / name, make_model(MLP), {"step": 7})
    return sft


def test_release_round_trip(run, tmp_path):
    release = write_release(run, tmp_path / "release", NAMES, {"made_by": "make x"})
    manifest = json.loads((release / RELEASE_FILE).read_text())
    assert set(manifest["checkpoints"]) == set(NAMES) and manifest["made_by"] == "make x"
    target = tmp_path / "demo" / "sft"
    install_release(release, target)
    original, _ = load_checkpoint(run / "best_bc")
    installed, _ = load_checkpoint(target / "best_bc")
    for a, b in zip(original.state_dict().values(), installed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_tampered_release_is_refused(run, tmp_path):
    release = write_release(run, tmp_path / "release", NAMES, {})
    target = tmp_path / "demo" / "sft"
    # re-signing a changed checkpoint's own SHA256SUMS does not pass the pinned digest
    save_checkpoint(release / "best_bc", make_model(MLP), {"step": 8})
    with pytest.raises(ChecksumError, match="pinned"):
        install_release(release, target)
    assert not (target / "best_bc").exists()


def test_release_refuses_trainer_state(run, tmp_path):
    from efm_learning.checkpoint import TrainerState

    save_checkpoint(run / "best_bc", make_model(MLP), {}, TrainerState(values={"step": 1}))
    with pytest.raises(ChecksumError, match="weights and config only"):
        write_release(run, tmp_path / "release", NAMES, {})
