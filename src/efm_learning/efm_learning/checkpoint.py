"""Checkpoints: safetensors weights + JSON config + SHA-256 sums, never pickle.

A checkpoint is a directory::

    model.safetensors        model weights and persistent buffers
    config.json              {"format", "schema_version", "model": <backend config>,
                              "metadata": {...}}  (the resolved config, LeRobot style)
    trainer_state.safetensors, trainer_state.json   optional: optimizer moments, RNG
                              states, step counters (for resuming)
    SHA256SUMS               "<sha256>  <file>" for every file above

It is written to a temporary directory and renamed into place, so an interrupted save
never replaces the last good checkpoint. :func:`load_checkpoint` verifies every sum
first and refuses a mismatch with :class:`ChecksumError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from efm_learning.models import EFM, make_model, model_config_from_dict, model_config_to_dict

FORMAT = "efm_checkpoint"
SCHEMA_VERSION = 1
SUMS_FILE = "SHA256SUMS"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_TENSORS_FILE = "trainer_state.safetensors"
STATE_JSON_FILE = "trainer_state.json"


class ChecksumError(ValueError):
    """A checkpoint file is missing or its SHA-256 does not match SHA256SUMS."""


@dataclass
class TrainerState:
    """Everything besides the weights needed to resume: tensors and JSON-able values."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: EFM,
    metadata: dict[str, Any] | None = None,
    trainer_state: TrainerState | None = None,
) -> Path:
    """Write ``model`` (and optional resume state) to directory ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_model(model, str(tmp / MODEL_FILE))
        config = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "model": model_config_to_dict(model.config),
            "metadata": metadata or {},
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        if trainer_state is not None:
            tensors = {k: v.detach().cpu().contiguous() for k, v in trainer_state.tensors.items()}
            save_file(tensors, str(tmp / STATE_TENSORS_FILE))
            (tmp / STATE_JSON_FILE).write_text(json.dumps(trainer_state.values, sort_keys=True))
        files = sorted(p.name for p in tmp.iterdir())
        sums = "".join(f"{sha256_file(tmp / name)}  {name}\n" for name in files)
        (tmp / SUMS_FILE).write_text(sums)
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def verify_checkpoint(path: str | os.PathLike[str]) -> dict[str, str]:
    """Check every file listed in SHA256SUMS; raise ChecksumError on any mismatch."""
    path = Path(path)
    sums_path = path / SUMS_FILE
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if not sums_path.is_file():
        raise ChecksumError(f"{path}: no {SUMS_FILE}; refusing an unverifiable checkpoint")
    expected: dict[str, str] = {}
    for line in sums_path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        expected[name.strip()] = digest.strip()
    for required in (MODEL_FILE, CONFIG_FILE):
        if required not in expected:
            raise ChecksumError(f"{path}: {SUMS_FILE} does not list {required}")
    for name, digest in expected.items():
        file = path / name
        if not file.is_file():
            raise ChecksumError(f"{path}: {name} listed in {SUMS_FILE} is missing")
        actual = sha256_file(file)
        if actual != digest:
            raise ChecksumError(
                f"{path}: sha256 of {name} is {actual[:16]}..., expected {digest[:16]}...; "
                "the checkpoint is corrupt or was modified, refusing to load it"
            )
    return expected


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The verified config.json of a checkpoint."""
    path = Path(path)
    verify_checkpoint(path)
    config = json.loads((path / CONFIG_FILE).read_text())
    if config.get("format") != FORMAT or config.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: not an efm checkpoint of schema version {SCHEMA_VERSION} "
            f"(format={config.get('format')!r}, schema_version={config.get('schema_version')!r})"
        )
    return config


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[EFM, dict[str, Any]]:
    """Verify and load a checkpoint; returns ``(model, metadata)``."""
    path = Path(path)
    config = read_checkpoint_config(path)
    model = make_model(model_config_from_dict(config["model"]))
    missing, unexpected = load_model(model, str(path / MODEL_FILE), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the {config['model']['type']} model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    return model.to(device), config.get("metadata", {})


def load_trainer_state(path: str | os.PathLike[str]) -> TrainerState | None:
    """The verified resume state of a checkpoint, or None if it has none."""
    path = Path(path)
    verify_checkpoint(path)
    if not (path / STATE_TENSORS_FILE).is_file():
        return None
    return TrainerState(
        tensors=load_file(str(path / STATE_TENSORS_FILE)),
        values=json.loads((path / STATE_JSON_FILE).read_text()),
    )


# -- optimizer state <-> (tensors, JSON) ----------------------------------------------------
def optimizer_to_state(optimizer: torch.optim.Optimizer, prefix: str = "optimizer") -> TrainerState:
    """Split an optimizer state_dict into safetensors-able tensors and JSON values."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in sd["state"].items():
        for name, value in entries.items():
            key = f"{prefix}.state.{index}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value
            else:
                scalars[key] = value
    values = {f"{prefix}.param_groups": sd["param_groups"], f"{prefix}.scalars": scalars}
    return TrainerState(tensors=tensors, values=values)


def optimizer_from_state(
    optimizer: torch.optim.Optimizer, state: TrainerState, prefix: str = "optimizer"
) -> None:
    """Inverse of :func:`optimizer_to_state`."""
    entries: dict[int, dict[str, Any]] = {}
    marker = f"{prefix}.state."
    items = list(state.tensors.items()) + list(state.values.get(f"{prefix}.scalars", {}).items())
    for key, value in items:
        if not key.startswith(marker):
            continue
        index, name = key[len(marker) :].split(".", 1)
        entries.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(
        {"state": entries, "param_groups": state.values[f"{prefix}.param_groups"]}
    )


# -- Stage 1 releases: checkpoints shipped in the repository ------------------------------
RELEASE_FILE = "RELEASE.json"


def write_release(
    sft_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    names: tuple[str, ...],
    info: dict[str, Any],
) -> Path:
    """Copy the Stage 1 checkpoints ``names`` of ``sft_dir`` to ``dest`` (weights, config
    and sums only, no trainer state) and pin each one's SHA256SUMS digest in
    ``RELEASE.json`` with ``info`` (the command that made it, its validation numbers)."""
    src, dest = Path(sft_dir), Path(dest)
    pins = {}
    for name in names:
        verify_checkpoint(src / name)
        target = dest / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for file in (MODEL_FILE, CONFIG_FILE, SUMS_FILE):
            shutil.copy2(src / name / file, target / file)
        listed = {line.split("  ", 1)[1] for line in (target / SUMS_FILE).read_text().splitlines()}
        if listed != {MODEL_FILE, CONFIG_FILE}:
            raise ChecksumError(f"{src / name}: a release holds weights and config only, "
                                f"got {sorted(listed)} (save it without trainer state)")
        pins[name] = sha256_file(target / SUMS_FILE)
    (dest / RELEASE_FILE).write_text(json.dumps({**info, "checkpoints": pins}, indent=2) + "\n")
    return dest


def install_release(
    release: str | os.PathLike[str], sft_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Verify a release (each checkpoint's SHA256SUMS against the pinned digest, then every
    file against its SHA256SUMS) and copy its checkpoints into ``sft_dir``."""
    release, sft_dir = Path(release), Path(sft_dir)
    manifest = json.loads((release / RELEASE_FILE).read_text())
    pins = manifest.get("checkpoints")
    if not isinstance(pins, dict) or not pins:
        raise ChecksumError(f"{release / RELEASE_FILE} pins no checkpoints")
    for name, digest in pins.items():
        sums = release / name / SUMS_FILE
        if not sums.is_file() or sha256_file(sums) != digest:
            raise ChecksumError(f"{release / name}: {SUMS_FILE} does not match the digest pinned "
                                f"in {RELEASE_FILE}; refusing the release")
        verify_checkpoint(release / name)
    for name in pins:
        target = sft_dir / name
        tmp = sft_dir / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(release / name, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return manifest
