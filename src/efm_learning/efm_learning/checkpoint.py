"""Checkpoints: safetensors weights + JSON config + SHA-256 sums, never pickle.

A checkpoint is a directory::

    model.safetensors        model weights and persistent buffers
    config.json              {"format", "schema_version", "model": <backend config>,
                              "metadata": {...}}  (the resolved config, LeRobot style)
    trainer_state.safetensors, trainer_state.json   optional: optimizer moments, RNG
                              states, step counters (for resuming)
    SHA256SUMS               "<sha256>  <file>" for every file above

It is written to a temporary directory and renamed into place, so an interrupted save
never replaces the last good checkpoint. :func:`load_checkpoint` reads each file once,
checks those bytes against SHA256SUMS and parses the same bytes; a mismatch, or a file
the sums do not list, is refused with :class:`ChecksumError`.
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
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file, save_model

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


def _listed_sums(path: Path) -> dict[str, str]:
    """SHA256SUMS of checkpoint ``path`` as {file: digest}; it must list weights and config."""
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
    return expected


def _mismatch(path: Path, name: str, actual: str, digest: str) -> ChecksumError:
    return ChecksumError(
        f"{path}: sha256 of {name} is {actual[:16]}..., expected {digest[:16]}...; "
        "the checkpoint is corrupt or was modified, refusing to load it"
    )


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(path: Path, names: list[str]) -> tuple[dict[str, str], dict[str, bytes]]:
    """``(sums, {name: bytes})``: each file read once, checked against SHA256SUMS, and the
    checked bytes are what the caller parses. No time-of-check / time-of-use gap: a file
    replaced after the check is never the one loaded (issue 17, defect 7). A file the sums
    do not list is refused."""
    expected = _listed_sums(path)
    out: dict[str, bytes] = {}
    for name in names:
        if name not in expected:
            raise ChecksumError(f"{path}: {name} is not listed in {SUMS_FILE}; refusing it")
        file = path / name
        if not file.is_file():
            raise ChecksumError(f"{path}: {name} listed in {SUMS_FILE} is missing")
        data = file.read_bytes()
        actual = _digest(data)
        if actual != expected[name]:
            raise _mismatch(path, name, actual, expected[name])
        out[name] = data
    return expected, out


def verify_checkpoint(path: str | os.PathLike[str]) -> dict[str, str]:
    """Check every file listed in SHA256SUMS; raise ChecksumError on any mismatch."""
    path = Path(path)
    expected = _listed_sums(path)
    for name, digest in expected.items():
        file = path / name
        if not file.is_file():
            raise ChecksumError(f"{path}: {name} listed in {SUMS_FILE} is missing")
        actual = sha256_file(file)
        if actual != digest:
            raise _mismatch(path, name, actual, digest)
    return expected


def _parse_config(path: Path, data: bytes) -> dict[str, Any]:
    config = json.loads(data)
    if config.get("format") != FORMAT or config.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: not an efm checkpoint of schema version {SCHEMA_VERSION} "
            f"(format={config.get('format')!r}, schema_version={config.get('schema_version')!r})"
        )
    return config


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The verified config.json of a checkpoint."""
    path = Path(path)
    _, data = read_verified(path, [CONFIG_FILE])
    return _parse_config(path, data[CONFIG_FILE])


def _load_weights(model: EFM, path: Path, data: bytes) -> None:
    """Load verified safetensors bytes into ``model``; names a tied tensor shares with a
    loaded one may be absent (safetensors stores each shared tensor once)."""
    state = safetensors_load(data)
    missing, unexpected = model.load_state_dict(state, strict=False)
    groups: dict[int, set[str]] = {}
    for name, tensor in model.state_dict().items():
        groups.setdefault(tensor.data_ptr(), set()).add(name)
    missing = [m for m in missing if not any(
        m in group and group & state.keys() for group in groups.values()
    )]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the {model.config.type} model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    expected_model_sha256: str = "",
) -> tuple[EFM, dict[str, Any]]:
    """Verify and load a checkpoint; returns ``(model, metadata)``. With
    ``expected_model_sha256`` the weights must also have that digest (a WeightsUpdate's)."""
    path = Path(path)
    sums, data = read_verified(path, [CONFIG_FILE, MODEL_FILE])
    if expected_model_sha256 and sums[MODEL_FILE] != expected_model_sha256.lower():
        raise ChecksumError(
            f"{path}: sha256 of {MODEL_FILE} is {sums[MODEL_FILE][:16]}..., expected "
            f"{expected_model_sha256[:16]}...; refusing it"
        )
    config = _parse_config(path, data[CONFIG_FILE])
    model = make_model(model_config_from_dict(config["model"]))
    _load_weights(model, path, data[MODEL_FILE])
    metadata = dict(config.get("metadata", {}))
    return model.to(device), metadata


def load_trainer_state(path: str | os.PathLike[str]) -> TrainerState | None:
    """The verified resume state of a checkpoint, or None if it has none. Trainer-state
    files that SHA256SUMS does not list are refused, not loaded (issue 17, defect 7)."""
    path = Path(path)
    on_disk = [n for n in (STATE_TENSORS_FILE, STATE_JSON_FILE) if (path / n).exists()]
    if not on_disk:
        _listed_sums(path)
        return None
    _, data = read_verified(path, [STATE_TENSORS_FILE, STATE_JSON_FILE])
    return TrainerState(
        tensors=safetensors_load(data[STATE_TENSORS_FILE]),
        values=json.loads(data[STATE_JSON_FILE]),
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
