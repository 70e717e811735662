"""ONNX export + onnxruntime (issue 16, item 3): for every exported backend, identical
greedy tokens and probabilities within 1e-4 of torch at any batch size; a graph that
disagrees with its checkpoint is refused; ``efm export onnx`` writes verified files; and
devices that are not present fail loudly (item 4)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from efm_learning.checkpoint import save_checkpoint
from efm_learning.cli import main as efm_main
from efm_learning.devices import DeviceError, resolve_device
from efm_learning.models import make_model
from efm_learning.onnx_runtime import (
    ExportError,
    OnnxRuntimeEFM,
    export_head,
    load_exported,
    onnx_runtime_model,
    parity,
    providers_for,
)
from efm_learning.testing import random_image_observations, tiny_mlp

INSTRUCTIONS = ["push the red moon to the blue cube", "push the blue cube to the red moon"]
CONV = {"type": "conv_efm", "image_size": 32, "channels": [8, 16, 16], "num_keypoints": 8,
        "hidden_size": 64, "early_keypoints": 4, "steps_to_go": {"max_steps": 30, "num_bins": 31},
        "action_tokenizer": {"type": "language_table", "max_delta": 0.03}}
SMALL = {"type": "small_efm", "image_size": 64, "d_model": 64, "num_heads": 4,
         "action_tokenizer": {"low": -1.0, "high": 1.0, "bins": 64}}


def _model(kind: str):
    torch.manual_seed(0)
    if kind == "mlp":
        return tiny_mlp().eval()
    return make_model(CONV if kind == "conv_efm" else SMALL).eval()


def _observations(model, n: int, seed: int) -> dict:
    if not getattr(model, "needs_images", False):
        rng = np.random.default_rng(seed)
        return {"observation.state": rng.standard_normal((n, 6)).astype(np.float32)}
    size = model.config.image_size
    obs = random_image_observations(n, INSTRUCTIONS, size=size * 2, seed=seed)  # camera > model
    obs["observation.state"] = np.random.default_rng(seed).standard_normal((n, 2), np.float32)
    return obs


@pytest.mark.parametrize("kind", ["mlp", "conv_efm", "small_efm"])
def test_onnxruntime_matches_torch_for_every_exported_backend(kind):
    model = _model(kind)
    runtime = onnx_runtime_model(model)
    assert isinstance(runtime, OnnxRuntimeEFM) and set(runtime.sessions) == {"policy",
                                                                               "steps_to_go"}
    for n, seed in ((1, 3), (7, 4)):  # batch 1 (a robot) and a batch (the dynamic axis)
        obs = _observations(model, n, seed)
        check = parity(model, runtime, obs)
        assert check["greedy_tokens_equal"], check
        assert check["policy_max_abs_prob"] < 1e-4 and check["steps_to_go_max_abs_prob"] < 1e-4
        tokens, actions = runtime.act(obs, greedy=True)
        ref_tokens, ref_actions = model.act(obs, greedy=True)
        np.testing.assert_array_equal(tokens, ref_tokens)
        np.testing.assert_array_equal(actions, ref_actions)
        np.testing.assert_allclose(runtime.predict_steps_to_go(obs),
                                   model.predict_steps_to_go(obs), atol=1e-3)
    # the network really runs in onnxruntime: break the torch weights, the runtime is unmoved
    obs = _observations(model, 2, 5)
    before = runtime.steps_to_go_probs(runtime.prepare_observations(obs))
    with torch.no_grad():
        model.steps_head.weight.add_(1.0)
    after = runtime.steps_to_go_probs(runtime.prepare_observations(obs))
    torch.testing.assert_close(before, after)


def test_a_graph_that_disagrees_with_its_checkpoint_is_refused(monkeypatch):
    model, other = _model("conv_efm"), make_model(CONV).eval()  # other: fresh random weights
    import efm_learning.onnx_runtime as onnx_runtime

    monkeypatch.setattr(onnx_runtime, "export_head", lambda _m, head: export_head(other, head))
    with pytest.raises(ExportError, match="disagrees"):
        onnx_runtime.onnx_runtime_model(model)


def test_only_the_heads_a_node_needs_are_exported():
    runtime = onnx_runtime_model(_model("mlp"), heads=("steps_to_go",))
    obs = _observations(runtime, 2, 0)
    assert runtime.predict_steps_to_go(obs).shape == (2,)
    with pytest.raises(ExportError, match="without its policy head"):
        runtime.act(obs)


def test_backends_that_are_not_exported_say_so(monkeypatch):
    from efm_learning import onnx_runtime

    monkeypatch.setitem(onnx_runtime.NOT_EXPORTED, "future", "the future backend is not")
    fake = SimpleNamespace(config=SimpleNamespace(type="future"))
    with pytest.raises(ExportError, match="future backend"):
        export_head(fake, "policy")
    with pytest.raises(ExportError, match="head"):
        export_head(_model("mlp"), "value")


def test_the_autoregressive_vlm_matches_torch_token_by_token():
    """vlm (PaliGemma, tiny random config): the teacher-forced policy graph decoded one
    token at a time gives torch's greedy tokens, its sampled tokens under the same seed and
    its log-probabilities; instructions of other lengths than the traced one work."""
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = make_model({"type": "vlm", "tiny": {},
                        "steps_to_go": {"max_steps": 20, "num_bins": 21},
                        "action_tokenizer": {"type": "language_table",
                                             "max_delta": 0.03}}).eval()
    runtime = onnx_runtime_model(model)
    assert runtime.autoregressive and model.num_action_tokens == 4
    rng = np.random.default_rng(3)
    obs = {"observation.image": rng.integers(0, 255, (3, 40, 40, 3), dtype=np.uint8),
           "observation.previous_image": rng.integers(0, 255, (3, 40, 40, 3), dtype=np.uint8),
           "observation.state": rng.normal(size=(3, 2)).astype(np.float32),
           "instruction": ["up", "push the red block left", "push the blue cube to the left"]}
    check = parity(model, runtime, obs)
    assert check["greedy_tokens_equal"], check
    assert check["policy_max_abs_prob"] < 1e-4 and check["steps_to_go_max_abs_prob"] < 1e-4
    with torch.no_grad():
        batch, fixed = model.prepare_observations(obs), runtime.prepare_observations(obs)
        sampled = model.sample_action_tokens(batch, generator=torch.Generator().manual_seed(1))
        again = runtime.sample_action_tokens(fixed, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(again, sampled)
        torch.testing.assert_close(runtime.action_log_prob(fixed, sampled),
                                   model.action_log_prob(batch, sampled), atol=1e-4, rtol=0)
    # the network runs in onnxruntime: changing the torch weights leaves it unmoved
    before = runtime.steps_to_go_probs(fixed)
    with torch.no_grad():
        model.vlm.get_output_embeddings().weight.add_(1.0)
    torch.testing.assert_close(runtime.steps_to_go_probs(runtime.prepare_observations(obs)),
                               before)


def test_efm_export_onnx_writes_verified_graphs(tmp_path, capsys):
    model = _model("conv_efm")
    ckpt = save_checkpoint(tmp_path / "ckpt", model)
    assert efm_main(["export", "onnx", str(ckpt), "--out", str(tmp_path / "onnx")]) == 0
    out = tmp_path / "onnx"
    assert {p.name for p in out.iterdir()} == {"policy.onnx", "steps_to_go.onnx", "onnx.json",
                                               "SHA256SUMS"}
    import json

    meta = json.loads((out / "onnx.json").read_text())
    assert meta["source_model_sha256"] == hashlib.sha256(
        (ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert meta["parity"]["greedy_tokens_equal"] and meta["backend"] == "conv_efm"
    # the written graphs, loaded back, are the model
    graphs = {h: load_exported(out, h) for h in ("policy", "steps_to_go")}
    runtime = OnnxRuntimeEFM(model, graphs)
    assert parity(model, runtime, _observations(model, 3, 9))["greedy_tokens_equal"]
    # a changed byte is refused
    data = bytearray((out / "policy.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "policy.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="sha256"):
        load_exported(out, "policy")
    # a checkpoint whose sums do not verify is not exported
    (ckpt / "model.safetensors").write_bytes(b"x" + (ckpt / "model.safetensors").read_bytes())
    assert efm_main(["export", "onnx", str(ckpt), "--out", str(tmp_path / "o2")]) == 2
    assert "sha256" in capsys.readouterr().err.lower()


def test_devices_are_checked_never_a_silent_cpu_fallback():
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cpu:1", "cuda:x", ""):
        with pytest.raises(DeviceError, match="use cpu, cuda or cuda:N"):
            resolve_device(bad)
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the missing-GPU errors cannot be provoked")
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ExportError, match="onnxruntime-gpu"):
            providers_for("cuda")
