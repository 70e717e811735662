"""ONNX export of an EFM's two heads and an onnxruntime-backed EFM (issue 16, item 3).

The paper's EFM is one model prompted for actions or for steps-to-go (Section 2.1); on a
robot the policy node needs only the action head and the steps-to-go node only the other,
so each head is exported as its own graph: ``policy.onnx`` (masked action-token logits,
``(B, tokens_per_action, V)``) and ``steps_to_go.onnx`` (``(B, num_bins)`` logits).

What runs where: a graph starts from the backend's *prepared* batch (``prepare_observations``:
frames resized to the model's size, the instruction embedded by the frozen MiniLM, state
as float32), so that numpy / text preprocessing stays in Python (the instruction embedding
is the same for a whole episode) and the network runs in onnxruntime, on the CPU
execution provider or, with ``onnxruntime-gpu``, the CUDA one. For ``small_efm`` that
means the frozen EfficientNet encoder stays in torch (it is part of preprocessing there).

Autoregressive backends (``vlm``: PaliGemma, RT-2 style tokens decoded one at a time,
``p(a_k | o, g, a_<k)``): the policy graph is the *teacher-forced* one, taking the action
tokens as an input and returning the logits at every position (causal, so position k
reads only tokens before k). Decoding runs it once per action token, filling in the chosen
token each time; without a KV cache that costs K full forwards per action (K = 4 for
LanguageTable tokens; measured in docs/DEPLOY.md). The text is padded to the fixed width
the graph was traced at (``EFM.fixed_shape_batch``).

Nothing received is ever deserialised as code: a node exports its own graph from a
checkpoint it has verified (``efm_learning.checkpoint``), and checks torch / onnxruntime
parity on the example batch before using it.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from efm_learning.models.base import _MASKED, ACTION_TOKENS, EFM, Batch

#: the exported heads and their graph files
HEADS = ("policy", "steps_to_go")
OPSET = 18
#: largest |p_torch - p_onnxruntime| accepted at load (probabilities; issue 16: 1e-4)
PARITY_TOLERANCE = 1e-4
#: backends whose network is not exported (none today; kept for backends to come)
NOT_EXPORTED: dict[str, str] = {}
#: input name of the action tokens fed to an autoregressive policy graph
TOKENS_INPUT = "action_tokens"


def autoregressive(model: EFM) -> bool:
    """A backend that decodes action tokens one at a time (``vlm``)."""
    return hasattr(model, "teacher_forced_action_logits")


class ExportError(ValueError):
    """A model that cannot be exported or whose exported graph disagrees with torch."""


class _Head(nn.Module):
    """One head of ``model`` as a module of positional tensors (what ONNX export traces)."""

    def __init__(self, model: EFM, head: str, names: list[str]) -> None:
        super().__init__()
        self.model, self.head, self.names = model, head, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.head == "policy" and autoregressive(self.model):
            *inputs, tokens = inputs
            batch = dict(zip(self.names, inputs, strict=True))
            return self.model.teacher_forced_action_logits(batch, tokens)
        batch = dict(zip(self.names, inputs, strict=True))
        if self.head == "policy":
            return self.model.action_logits(batch)
        return self.model.steps_to_go_logits(batch)


def _tensors(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in sorted(batch) if torch.is_tensor(batch[k])}


def export_head(model: EFM, head: str) -> bytes:
    """The ONNX graph (bytes) of ``head`` ("policy" or "steps_to_go") of a CPU model in
    eval mode, batch axis dynamic, traced on ``model.example_observations``."""
    if head not in HEADS:
        raise ExportError(f"head {head!r}: use one of {HEADS}")
    if model.config.type in NOT_EXPORTED:
        raise ExportError(NOT_EXPORTED[model.config.type])
    if model.device.type != "cpu" or model.training:
        raise ExportError("export a CPU model in eval mode (model.cpu().eval())")
    batch = _tensors(model.fixed_shape_batch(
        model.prepare_observations(model.example_observations(2))))
    names = list(batch)
    inputs = tuple(batch.values())
    input_names = names
    if head == "policy" and autoregressive(model):
        n = next(iter(batch.values())).shape[0]
        inputs = (*inputs, torch.zeros(n, model.num_action_tokens, dtype=torch.long))
        input_names = [*names, TOKENS_INPUT]
    buffer = io.BytesIO()
    # Grad mode stays on: under no_grad, eval-mode nn.TransformerEncoder layers (small_efm)
    # take a fused fast path that has no ONNX symbol. The TorchScript-based exporter: the
    # dynamo one needs dynamic_shapes written per backend.
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Head(model, head, names).eval(), inputs, buffer,
            input_names=input_names, output_names=["logits"], opset_version=OPSET,
            dynamic_axes={name: {0: "batch"} for name in [*input_names, "logits"]},
            dynamo=False,
        )
    return buffer.getvalue()


def providers_for(device: str) -> list[str]:
    """onnxruntime execution providers for ``compute.device``; CUDA must be present
    (``onnxruntime-gpu``), never a silent fallback to the CPU."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if not device.startswith("cuda"):
        raise ExportError(f"device {device!r}: use cpu, cuda or cuda:N")
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ExportError(
            f"device {device!r} with onnxruntime needs the CUDA execution provider "
            f"(onnxruntime-gpu); this onnxruntime has {available}"
        )
    return ["CUDAExecutionProvider"]


def _session(graph: bytes, device: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = providers_for(device)
    if device.startswith("cuda:"):
        providers = [("CUDAExecutionProvider", {"device_id": int(device.split(":")[1])})]
    return ort.InferenceSession(graph, options, providers=providers)


class OnnxRuntimeEFM(EFM):
    """An EFM whose heads run in onnxruntime; tokenizers, preprocessing and everything
    derived from the two distributions (sampling, d(o, g), Eq. 1) are the base class's,
    so callers cannot tell it from the torch model except by speed.

    ``model`` is the verified torch model the graphs were exported from; it stays on the
    CPU for :meth:`prepare_observations`.
    """

    def __init__(self, model: EFM, graphs: Mapping[str, bytes], device: str = "cpu",
                 threads: int = 1) -> None:
        super().__init__(model.config)
        self._source = (model,)  # a tuple: not registered as a submodule
        self.needs_images = getattr(model, "needs_images", False)
        self.sessions = {head: _session(graph, device, threads) for head, graph in graphs.items()}
        self.graph_sha256 = {h: hashlib.sha256(g).hexdigest() for h, g in graphs.items()}
        self.execution_device = device
        self.autoregressive = autoregressive(model)
        self.eval()

    def prepare_observations(self, observations: Mapping[str, Any]) -> dict[str, Any]:
        source = self._source[0]
        return source.fixed_shape_batch(source.prepare_observations(observations))

    def _run(self, head: str, batch: Batch) -> torch.Tensor:
        session = self.sessions.get(head)
        if session is None:
            raise ExportError(f"this model was exported without its {head} head")
        feeds = {}
        for spec in session.get_inputs():
            value = batch[spec.name]
            feeds[spec.name] = value.detach().cpu().numpy() if torch.is_tensor(value) else value
        return torch.from_numpy(session.run(None, feeds)[0])

    def _action_logits(self, batch: Batch) -> torch.Tensor:
        if not self.autoregressive:
            return self._run("policy", batch)
        if ACTION_TOKENS in batch:  # teacher forced, as the torch backend does
            return self._run("policy", {**batch, TOKENS_INPUT: batch[ACTION_TOKENS]})
        return self._decode(batch, greedy=True)[1]

    def _decode(self, batch: Batch, greedy: bool, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, K), masked logits (B, K, V)) decoded one token at a time through
        the teacher-forced graph; position k of each run depends on tokens < k only."""
        n = next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
        tokens = torch.zeros(n, self.num_action_tokens, dtype=torch.long)
        logits = torch.empty(0)
        for k in range(self.num_action_tokens):
            logits = self._run("policy", {**batch, TOKENS_INPUT: tokens})
            logits = logits.masked_fill(self._invalid_action_tokens, _MASKED)
            if greedy:
                tokens[:, k] = logits[:, k].argmax(-1)
            else:
                probs = torch.softmax(logits[:, k], -1)
                tokens[:, k] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return tokens, logits

    def action_log_prob(self, batch: Batch, tokens: torch.Tensor) -> torch.Tensor:
        if not self.autoregressive:
            return super().action_log_prob(batch, tokens)
        return super().action_log_prob({**batch, ACTION_TOKENS: tokens.long()}, tokens)

    @torch.no_grad()
    def sample_action_tokens(self, batch: Batch, greedy: bool = False,
                             generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.autoregressive:
            return super().sample_action_tokens(batch, greedy, generator)
        return self._decode(batch, greedy, generator)[0]

    def steps_to_go_logits(self, batch: Batch) -> torch.Tensor:
        return self._run("steps_to_go", batch)


def parity(model: EFM, runtime: EFM, observations: Mapping[str, Any] | None = None
           ) -> dict[str, float | bool]:
    """torch vs onnxruntime on the same observations: the largest probability difference
    per head and whether the greedy action tokens agree."""
    obs = observations if observations is not None else model.example_observations(8, seed=1)
    out: dict[str, float | bool] = {}
    with torch.no_grad():
        batch, fixed = model.prepare_observations(obs), runtime.prepare_observations(obs)
        if "policy" in getattr(runtime, "sessions", HEADS):
            p_ref = torch.softmax(model.action_logits(batch), -1)
            p_run = torch.softmax(runtime.action_logits(fixed), -1)
            out["policy_max_abs_prob"] = float((p_ref - p_run).abs().max())
            out["greedy_tokens_equal"] = bool(torch.equal(p_ref.argmax(-1), p_run.argmax(-1)))
        if "steps_to_go" in getattr(runtime, "sessions", HEADS):
            q_ref, q_run = model.steps_to_go_probs(batch), runtime.steps_to_go_probs(fixed)
            out["steps_to_go_max_abs_prob"] = float((q_ref - q_run).abs().max())
    return out


def onnx_runtime_model(model: EFM, heads: tuple[str, ...] = HEADS, device: str = "cpu",
                       threads: int = 1) -> OnnxRuntimeEFM:
    """Export ``heads`` of a verified CPU model and run them in onnxruntime; refused when
    the two disagree on the example batch (probabilities beyond 1e-4, or greedy tokens)."""
    model = model.cpu().eval()
    runtime = OnnxRuntimeEFM(model, {h: export_head(model, h) for h in heads}, device, threads)
    check = parity(model, runtime)
    bad = {k: v for k, v in check.items()
           if (isinstance(v, bool) and not v) or (not isinstance(v, bool) and v > PARITY_TOLERANCE)}
    if bad:
        raise ExportError(f"onnxruntime disagrees with torch on the example batch: {bad}")
    return runtime


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None,
                      heads: tuple[str, ...] = HEADS) -> Path:
    """``efm export onnx CHECKPOINT``: write ``policy.onnx`` / ``steps_to_go.onnx``, an
    ``onnx.json`` (source model sha256, inputs, opset, parity) and their SHA256SUMS into
    ``out`` (default ``CHECKPOINT/onnx``)."""
    from efm_learning.checkpoint import MODEL_FILE, load_checkpoint, read_verified

    checkpoint = Path(checkpoint)
    model, _ = load_checkpoint(checkpoint)
    source_sha = read_verified(checkpoint, [])[0][MODEL_FILE]
    model.eval()
    graphs = {h: export_head(model, h) for h in heads}
    runtime = OnnxRuntimeEFM(model, graphs)
    check = parity(model, runtime)
    out = Path(out) if out is not None else checkpoint / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    sums = {}
    for head, graph in graphs.items():
        (out / f"{head}.onnx").write_bytes(graph)
        sums[f"{head}.onnx"] = hashlib.sha256(graph).hexdigest()
    meta = {
        "source_checkpoint": str(checkpoint), "source_model_sha256": source_sha,
        "backend": model.config.type, "opset": OPSET, "parity": check,
        "inputs": {h: [{"name": i.name, "type": i.type, "shape": [str(d) for d in i.shape]}
                       for i in runtime.sessions[h].get_inputs()] for h in heads},
        "preprocessing": "the backend's prepare_observations (efm_learning.onnx_runtime)",
    }
    (out / "onnx.json").write_text(json.dumps(meta, indent=2) + "\n")
    sums["onnx.json"] = hashlib.sha256((out / "onnx.json").read_bytes()).hexdigest()
    (out / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))
    return out


def load_exported(directory: str | Path, head: str) -> bytes:
    """The bytes of an exported head, checked against the directory's SHA256SUMS."""
    directory = Path(directory)
    lines = (directory / "SHA256SUMS").read_text().splitlines()
    listed = {name: digest for digest, name in (line.split(None, 1) for line in lines if line)}
    name = f"{head}.onnx"
    data = (directory / name).read_bytes()
    if listed.get(name) != hashlib.sha256(data).hexdigest():
        raise ExportError(f"{directory / name}: sha256 does not match SHA256SUMS")
    return data
