"""Metric logging: TensorBoard scalars plus a JSON-lines file (CleanRL-style names:
``losses/``, ``charts/``, ``eval/``, keyed by global step), and PNG learning curves."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class MetricLogger:
    """Writes each ``log(step, metrics)`` to TensorBoard and ``metrics.jsonl``."""

    def __init__(self, directory: str | Path, tensorboard: bool = True, fresh: bool = True) -> None:
        """``fresh`` starts a new metrics.jsonl; otherwise (resuming) appends to it."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if fresh:
            (self.directory / "metrics.jsonl").unlink(missing_ok=True)
        self._jsonl = open(self.directory / "metrics.jsonl", "a")  # noqa: SIM115
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.directory / "tb"))

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._jsonl.flush()
        if self._writer is not None:
            for key, value in clean.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, int(step))

    def close(self) -> None:
        self._jsonl.close()
        if self._writer is not None:
            self._writer.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(
    records: Sequence[Mapping[str, Any]],
    panels: Sequence[tuple[str, Sequence[str]]],
    out: str | Path,
    x_key: str = "step",
    title: str = "",
) -> Path:
    """One subplot per ``(ylabel, [metric keys])`` panel, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (label, metric_keys) in zip(axes[0], panels, strict=False):
        for key in metric_keys:
            pts = [(r[x_key], r[key]) for r in records if r.get(key) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="." if len(pts) < 80 else None, label=key)
        ax.set_xlabel(x_key)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
