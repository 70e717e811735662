"""Experiment configuration: documented dataclasses loaded from YAML (LeRobot style).

One YAML file in ``config/`` describes an experiment: the environment and dataset, the
model backend (``model.type``, see :mod:`efm_learning.models`), Stage 1 (``sft``,
paper Section 2.1 / Appendix A.3) and Stage 2 (``improve``, Algorithm 1). Every key is
checked: an unknown key, a wrong type or a value outside the allowed set raises
:class:`ConfigError` naming the dotted key and what is allowed. Nothing falls back to a
default silently when a key is misspelt.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SCHEMA_VERSION = 1


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


# -- generic dataclass <-> dict ----------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` against annotation ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: got {value!r}; allowed values: {allowed}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys (named, with the
    allowed ones) and wrongly typed values. ``__post_init__`` errors get the key prefix."""
    where = prefix or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        dotted = ", ".join(f"{prefix + '.' if prefix else ''}{k}" for k in unknown)
        raise ConfigError(f"unknown key(s) {dotted}; allowed keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{error}") from None


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON-able) dict of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


# -- experiment sections -----------------------------------------------------------------
@dataclass
class DataConfig:
    """Stage 1 dataset: a directory of efm_sim episode files, streamed (Section 2.1)."""

    #: directory of ``episode_*.h5`` files (relative paths resolve against the CWD)
    dir: str = "data/pointmass"
    #: episodes to generate when the directory is empty (``efm demo`` / ``efm sft --generate``)
    generate_episodes: int = 10000
    #: base seed of the generated demonstrations (None: the experiment's ``seed``), so
    #: Stage 1 runs with different seeds can share one dataset
    seed: int | None = None
    #: fraction of episodes held out for validation (chosen by a seeded permutation)
    val_fraction: float = 0.05
    #: fraction of the training split used (a seeded subset; validation is unchanged):
    #: the sample-efficiency study trains Stage 1 on 10% / 20% / 80% (Section 4.1.1)
    train_fraction: float = 1.0
    #: most transitions kept in the in-memory pool; larger datasets are streamed through it
    pool_transitions: int = 2_000_000
    #: with a streamed dataset: replace this fraction of the pool every ``refresh_every`` steps
    refresh_fraction: float = 0.25
    refresh_every: int = 1000
    #: only successful episodes have a defined steps-to-go label (goal reached at the end)
    steps_to_go_successful_only: bool = True
    #: fraction of each steps-to-go batch that is goal-relabelled: a demo's final scene
    #: with another task's instruction, labelled "not done" (a departure from the paper
    #: that keeps the success detector from firing on the wrong task; docs/PUSHTABLE.md)
    steps_to_go_negatives: float = 0.0

    def __post_init__(self) -> None:
        _require(0.0 < self.val_fraction < 1.0, "val_fraction", "must be in (0, 1)")
        _require(0.0 < self.train_fraction <= 1.0, "train_fraction", "must be in (0, 1]")
        _require(self.pool_transitions > 0, "pool_transitions", "must be > 0")
        _require(0.0 < self.refresh_fraction <= 1.0, "refresh_fraction", "must be in (0, 1]")
        _require(self.refresh_every > 0, "refresh_every", "must be > 0")
        _require(self.generate_episodes >= 0, "generate_episodes", "must be >= 0")
        _require(0.0 <= self.steps_to_go_negatives < 1.0, "steps_to_go_negatives",
                 "must be in [0, 1)")


@dataclass
class SFTConfig:
    """Stage 1 supervised fine-tuning (Section 2.1, Appendix A.3)."""

    steps: int = 20000
    #: total batch, split uniformly across the objectives (paper: 128)
    batch_size: int = 128
    #: objectives sharing each batch; "instruction" is the optional auxiliary (fn. 2)
    objectives: list[Literal["bc", "steps_to_go", "instruction"]] = field(
        default_factory=lambda: ["bc", "steps_to_go"]
    )
    lr: float = 3e-4
    weight_decay: float = 1e-4
    #: global-norm gradient clipping (0 disables)
    grad_clip: float = 1.0
    warmup_steps: int = 0
    eval_every: int = 1000
    #: validation batches (fixed, never trained on) per evaluation
    val_batches: int = 8
    log_every: int = 100
    #: rolling "last" checkpoint for resuming, every this many steps
    checkpoint_every: int = 1000
    #: Stage 2 policy initialisation (Appendix B): "best_bc", the checkpoint at the best
    #: BC validation loss; "last", the final one, trained past that loss (the paper's
    #: ALOHA choice: best BC validation at ~5K-10K steps, a far better policy at
    #: ~100K-300K). The reward model is always ``best_steps_to_go``
    policy_checkpoint: Literal["best_bc", "last"] = "best_bc"
    #: Stage 1 speed (issue 13 item 6): ``torch.compile`` the backend's training forward
    #: (inductor; needs a C++ compiler, ~30-60 s to compile). Backends without a
    #: compilable trunk ignore it. Benchmarked in docs/LEARNING.md
    compile: bool = False
    #: seed-independent Stage 1 budget (issue 13): stop once neither validation loss (BC,
    #: steps-to-go) has improved by more than ``stop_min_rel_gain`` of itself for this
    #: many steps; ``steps`` is then the cap. 0 trains exactly ``steps``
    stop_patience_steps: int = 0
    stop_min_rel_gain: float = 0.01

    def __post_init__(self) -> None:
        _require(self.steps > 0, "steps", "must be > 0")
        _require(self.stop_patience_steps >= 0, "stop_patience_steps", "must be >= 0")
        _require(0.0 <= self.stop_min_rel_gain < 1.0, "stop_min_rel_gain", "must be in [0, 1)")
        _require(len(set(self.objectives)) == len(self.objectives), "objectives", "duplicates")
        _require(
            "bc" in self.objectives and "steps_to_go" in self.objectives,
            "objectives",
            "must include 'bc' and 'steps_to_go' (both are needed for Stage 2)",
        )
        _require(
            self.batch_size >= len(self.objectives),
            "batch_size",
            f"must be >= the number of objectives ({len(self.objectives)})",
        )
        _require(self.lr > 0, "lr", "must be > 0")
        _require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        for name in ("eval_every", "val_batches", "log_every", "checkpoint_every"):
            _require(getattr(self, name) > 0, name, "must be > 0")


@dataclass
class ImproveConfig:
    """Stage 2 Self-Improvement (Section 2.2, Algorithm 1, Appendices A.3, C)."""

    #: policy initialisation; default ``<run_dir>/sft/<sft.policy_checkpoint>`` (best_bc
    #: unless set, Appendix B)
    policy_checkpoint: str | None = None
    #: frozen reward model / success detector; default ``<run_dir>/sft/best_steps_to_go``
    reward_checkpoint: str | None = None
    rounds: int = 64
    #: N: policy updates per round (paper 16)
    updates_per_round: int = 16
    #: B: minibatch size (paper 64); each round collects >= N x B samples
    batch_size: int = 64
    gamma: float = 0.9
    #: c in -c R_t log pi (paper 5e-2)
    reinforce_c: float = 5e-2
    lr: float = 3e-4
    weight_decay: float = 1e-4
    #: global-norm gradient clipping (the public notebook diverged without it)
    grad_clip: float = 1.0
    #: s in success = 1[d <= s] (Eq. 3), in steps
    success_threshold: float = 2.0
    #: k: the detector fires once d <= s held on k observations in a row; 1 is Eq. 3,
    #: k > 1 a departure for precision on near misses (docs/PUSHTABLE.md section 3)
    success_consecutive: int = 1
    max_episode_steps: int = 140
    #: environments stepped in lock-step by the in-process actor (batched inference)
    num_envs: int = 16
    #: "sample" the policy (on-policy REINFORCE) or act greedily while practising
    practice_mode: Literal["sample"] = "sample"
    eval_episodes: int = 200
    eval_every: int = 1
    #: policy mode for the ground-truth evaluation rollouts
    eval_mode: Literal["sample", "greedy"] = "sample"
    #: model selection / plateau signal. "detector" (GT-free, what a real robot has; the
    #: rule of efm_learning.stopping, Section 6): the learned detector's success on the
    #: practice episodes of each version, pooled over ``plateau_window`` versions; the
    #: version ending the best window is kept. "ground_truth": mean evaluation episode
    #: length with failures counted as max_episode_steps, on the protocol's *tuning* tasks
    #: (for tuning only, never for a report; docs/EVALUATION.md)
    selection_metric: Literal["detector", "ground_truth"] = "ground_truth"
    #: d behind the reward r = d_t - d_t+1 (Eq. 2): "expected" (Eq. 1, all bins) or
    #: "in_range" (every bin but the last, renormalised: with goal-relabelled negatives the
    #: last bin's flickering mass dominates the reward noise; docs/PUSHTABLE.md). The
    #: success detector always uses the full expectation
    reward_steps_to_go: Literal["expected", "in_range"] = "expected"
    #: Section 4.1.3 (Aloha): added to the last reward of an episode the learned detector
    #: ended (the paper's simulator success condition; ground truth is never used here)
    success_bonus: float = 0.0
    #: stop after this many rounds without improvement (0 = never stop early;
    #: the paper stops at a success plateau, Section 6)
    patience: int = 0
    #: "ground_truth": an evaluation "improves" when the length drops by more than this
    min_delta: float = 0.25
    #: "detector": a pooled success rate must beat the best by more than this
    plateau_min_gain: float = 0.02
    #: "detector": versions pooled for each success rate
    plateau_window: int = 3
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        for name in ("rounds", "updates_per_round", "batch_size", "max_episode_steps"):
            _require(getattr(self, name) > 0, name, "must be > 0")
        _require(0.0 <= self.gamma <= 1.0, "gamma", "must be in [0, 1]")
        _require(self.reinforce_c > 0, "reinforce_c", "must be > 0")
        _require(self.lr > 0, "lr", "must be > 0")
        _require(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables)")
        _require(self.success_threshold >= 0, "success_threshold", "must be >= 0")
        _require(self.success_consecutive >= 1, "success_consecutive", "must be >= 1")
        _require(self.success_bonus >= 0, "success_bonus", "must be >= 0")
        _require(self.num_envs > 0, "num_envs", "must be > 0")
        _require(self.eval_episodes >= 0, "eval_episodes", "must be >= 0")
        _require(self.eval_every > 0, "eval_every", "must be > 0")
        _require(self.patience >= 0, "patience", "must be >= 0")
        _require(0.0 <= self.plateau_min_gain <= 1.0, "plateau_min_gain", "must be in [0, 1]")
        _require(self.plateau_window >= 1, "plateau_window", "must be >= 1")
        _require(self.checkpoint_every > 0, "checkpoint_every", "must be > 0")


ENV_NAMES = ("pointmass", "pushtable", "bananatable")


@dataclass
class ExperimentConfig:
    """One experiment: environment, dataset, model, Stage 1 and Stage 2 settings."""

    name: str = "experiment"
    schema_version: int = SCHEMA_VERSION
    #: "aloha_insertion": Stage 1 only (``efm sft``) on ALOHA recordings made with
    #: ``python -m efm_sim.aloha_generate`` (docs/ALOHA.md)
    env: Literal["pointmass", "pushtable", "bananatable", "aloha_insertion"] = "pointmass"
    #: keyword arguments for ``efm_sim.make_env`` (e.g. image_size)
    env_kwargs: dict = field(default_factory=dict)
    #: outputs (checkpoints, TensorBoard, plots) go under ``<run_dir>/``
    run_dir: str = "runs/experiment"
    seed: int = 0
    #: torch intra-op threads (the project machine has 2 cores shared by everyone)
    num_threads: int = 2
    device: Literal["cpu", "cuda"] = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    #: model backend config; ``model.type`` picks the backend (see efm_learning.models)
    model: dict = field(default_factory=lambda: {"type": "mlp"})
    sft: SFTConfig = field(default_factory=SFTConfig)
    improve: ImproveConfig = field(default_factory=ImproveConfig)

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ConfigError(
                f"schema_version: got {self.schema_version}; this efm reads {SCHEMA_VERSION}"
            )
        _require(self.num_threads > 0, "num_threads", "must be > 0")
        _require("type" in self.model, "model.type", "missing; name a model backend")

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML; ``overrides`` are ``dotted.key=value`` strings (YAML values)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides or []:
        apply_override(data, item)
    return from_dict(ExperimentConfig, data)


def apply_override(data: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` override (value parsed as YAML) to a nested dict."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    dotted, raw = item.split("=", 1)
    parts = dotted.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a mapping")
    node[parts[-1]] = yaml.safe_load(raw)
