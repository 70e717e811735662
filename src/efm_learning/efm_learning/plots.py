"""Figure-4-style PointMass trajectories: dataset, Stage 1 (BC) and Stage 2 policies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_pointmass_trajectories(
    panels: Sequence[tuple[str, Sequence[np.ndarray]]],
    out: str | Path,
    success_radius: float = 0.15,
) -> Path:
    """One panel per ``(title, [states (T+1, 6)])``: path from start (o) to goal (*)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 4.1), squeeze=False)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for ax, (title, trajectories) in zip(axes[0], panels, strict=False):
        for i, states in enumerate(trajectories):
            states = np.asarray(states)
            c = colors[i % 10]
            ax.plot(states[:, 0], states[:, 1], "-", color=c, lw=1.2, alpha=0.9)
            ax.plot(states[0, 0], states[0, 1], "o", color=c, ms=4)
            goal = states[0, 4:6]
            ax.add_patch(plt.Circle(goal, success_radius, color=c, alpha=0.18))
            ax.plot(goal[0], goal[1], "*", color=c, ms=9)
        ax.set_xlim(-1.25, 1.25)
        ax.set_ylim(-1.25, 1.25)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.25)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
