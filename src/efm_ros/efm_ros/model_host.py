"""Loads efm checkpoints for nodes and swaps them without stopping the control loop.

Checkpoints are safetensors + JSON config with a SHA256SUMS file, verified by
``efm_learning.checkpoint`` before anything is read; a WeightsUpdate additionally names the
sha256 of ``model.safetensors``, which must match too. Nothing is ever unpickled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from efm_learning.checkpoint import MODEL_FILE, load_checkpoint, read_verified
from efm_sim import keys


def checkpoint_path(uri: str) -> Path:
    """``file:///abs/dir`` or a plain path -> Path; other schemes are refused."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else uri)
        if not str(path):
            raise ValueError("empty checkpoint uri")
        return path
    raise ValueError(f"unsupported checkpoint uri scheme {parsed.scheme!r} (use file:// or a path)")


@dataclass(frozen=True)
class LoadedModel:
    """A verified model and where it came from."""

    model: Any
    version: int
    sha256: str
    path: Path
    metadata: dict[str, Any]


def set_torch_threads(threads: int) -> None:
    """CPU threads for inference. One per node by default: a robot computer runs several
    model nodes at once, and more intra-op threads than free cores only spin (docs/ROS.md)."""
    import torch

    if threads < 1:
        raise ValueError(f"compute.torch_threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


#: inference backends of the policy and steps-to-go nodes
BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Compute:
    """Where and with what a model node runs its network (issue 16, items 3-4).

    ``backend`` "onnxruntime" exports the verified checkpoint's ``heads`` to ONNX when it
    is loaded (every hot swap too) and runs them in onnxruntime
    (efm_learning.onnx_runtime); ``device`` "cuda" needs CUDA torch or, with onnxruntime,
    the CUDA execution provider of onnxruntime-gpu, and fails loudly where it is missing.
    """

    device: str = "cpu"
    backend: str = "torch"
    threads: int = 1
    heads: tuple[str, ...] = ("policy", "steps_to_go")

    def check(self) -> None:
        """Refuse a device or backend this machine does not have, at start-up."""
        from efm_learning.devices import resolve_device

        if self.backend not in BACKENDS:
            raise ValueError(f"compute.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "torch":
            resolve_device(self.device)
        else:
            from efm_learning.onnx_runtime import providers_for

            providers_for(self.device)


def declare_compute(params: Any, heads: tuple[str, ...]) -> Compute:
    """The ``compute.*`` parameters of a model node (``efm_ros.params.Parameters``),
    checked and applied at once."""
    threads = params.declare(
        "compute.torch_threads", 1, "CPU threads for inference (torch intra-op, or "
        "onnxruntime's intra-op pool).", read_only=True, min_value=1, max_value=64,
    )
    set_torch_threads(threads)
    compute = Compute(
        device=params.declare(
            "compute.device", "cpu", "cpu, cuda or cuda:N. A missing GPU is an error at "
            "start-up, never a silent CPU fallback.", read_only=True,
        ),
        backend=params.declare(
            "compute.backend", "torch", "torch, or onnxruntime (each checkpoint exported to "
            "ONNX when loaded, parity-checked against torch).", read_only=True, choices=BACKENDS,
        ),
        threads=threads,
        heads=heads,
    )
    compute.check()
    return compute


def load_verified(
    uri: str, version: int = 0, expected_sha256: str = "", compute: Compute | None = None
) -> LoadedModel:
    """Verify and load a checkpoint; refuse it if ``expected_sha256`` is given and differs.
    ``compute`` puts it on its device, or behind onnxruntime."""
    path = checkpoint_path(uri)
    # the bytes checked are the bytes loaded (efm_learning.checkpoint.read_verified); a
    # ChecksumError is a ValueError
    model, metadata = load_checkpoint(path, expected_model_sha256=expected_sha256)
    digest = expected_sha256.lower() or read_verified(path, [])[0][MODEL_FILE]  # for display
    model.eval()
    compute = compute or Compute()
    if compute.backend == "onnxruntime":
        from efm_learning.onnx_runtime import onnx_runtime_model

        model = onnx_runtime_model(model, compute.heads, compute.device, compute.threads)
    elif compute.device != "cpu":
        from efm_learning.devices import resolve_device

        model = model.to(resolve_device(compute.device))
    return LoadedModel(model, int(version), digest, path, metadata)


class ModelHost:
    """Holds the model in use; ``swap_async`` loads a new one on a worker thread and swaps
    it in atomically, so callers of ``current`` never wait for a load."""

    def __init__(self, initial: LoadedModel, compute: Compute | None = None,
                 fetch: Callable[[str, int, str, str], Path] | None = None) -> None:
        self._current = initial
        self.compute = compute or Compute()
        #: ``fetch(uri, version, sha256, config_sha256) -> local dir`` for ``ros://`` uris
        #: (efm_ros.weights_transfer.WeightsFetcher.fetch)
        self.fetch = fetch
        self._lock = threading.Lock()
        self._loading: threading.Thread | None = None

    def current(self) -> LoadedModel:
        with self._lock:
            return self._current

    @property
    def busy(self) -> bool:
        return self._loading is not None and self._loading.is_alive()

    def swap_async(
        self,
        uri: str,
        version: int,
        expected_sha256: str,
        on_done: Callable[[LoadedModel | None, str], None],
        expected_config_sha256: str = "",
    ) -> bool:
        """Start loading (a ``ros://`` uri is downloaded first, with ``fetch``);
        ``on_done(loaded or None, error text)`` runs on the worker thread.

        Returns False (and loads nothing) while a previous load is still running or when
        ``version`` is not newer than the one in use.
        """
        if self.busy or version <= self.current().version:
            return False

        def work() -> None:
            try:
                source = uri
                if urlparse(uri).scheme == "ros":
                    if self.fetch is None:
                        raise ValueError("ros:// weights need a fetcher (weights.cache_dir)")
                    source = str(self.fetch(uri, version, expected_sha256,
                                            expected_config_sha256))
                loaded = load_verified(source, version, expected_sha256, self.compute)
            except (OSError, ValueError) as error:
                on_done(None, str(error))
                return
            with self._lock:
                self._current = loaded
            on_done(loaded, "")

        self._loading = threading.Thread(target=work, name="efm-weights-loader", daemon=True)
        self._loading.start()
        return True

    def finish(self, timeout: float = 10.0) -> bool:
        """On shutdown: wait for a running load to end (True when none is left).

        A process torn down while this daemon thread is inside torch or the safetensors
        reader aborts (SIGABRT, exit -6: seen in CI when a weight update arrived just
        before the stop); the swap itself is harmless to finish."""
        loading = self._loading
        if loading is not None and loading.is_alive():
            loading.join(timeout)
        return not self.busy


def model_input(arrays: list[dict[str, Any]], instruction: str | None = None) -> dict[str, Any]:
    """Stack validated Observation arrays (``conversions.observation_arrays``) into the
    batch dict the EFM backends take (keys from ``efm_sim.keys``).

    Every camera image reaches the model: ``observation.images`` holds all of them in the
    order the Observation names them, ``(B, N, H, W, 3)`` (and
    ``observation.previous_images`` their previous frames); with the paper's ALOHA layout
    camera_ingest publishes the two stacked images of Appendix D.3 as two cameras, which
    the ``aloha_efm`` backend reads in that order. The first camera is also the
    single-image key ``observation.image`` (with ``observation.previous_image``), as the
    single-camera backends have always read it.
    """
    if not arrays:
        raise ValueError("no observations")
    batch: dict[str, Any] = {
        keys.OBS_STATE: np.stack([a["proprioception"] for a in arrays]).astype(np.float32),
        keys.INSTRUCTION: [instruction if instruction else a["instruction"] for a in arrays],
    }
    if arrays[0]["images"]:
        names = list(arrays[0]["images"])
        for name in names:
            shapes = {a["images"][name].shape for a in arrays if name in a["images"]}
            if len(shapes) != 1 or any(name not in a["images"] for a in arrays):
                raise ValueError(f"observations disagree on camera {name!r} or its image size")
        first = names[0]
        batch[keys.OBS_IMAGE] = np.stack([a["images"][first] for a in arrays])
        batch[keys.OBS_PREV_IMAGE] = np.stack([a["previous_images"][first] for a in arrays])
        if len({arrays[0]["images"][n].shape for n in names}) == 1:
            # all cameras, in the Observation's order (a backend that needs them and finds
            # cameras of different sizes, so no such key, fails loudly)
            batch[keys.OBS_IMAGES] = np.stack(
                [np.stack([a["images"][n] for n in names]) for a in arrays]
            )
            batch[keys.OBS_PREV_IMAGES] = np.stack(
                [np.stack([a["previous_images"][n] for n in names]) for a in arrays]
            )
    return batch
