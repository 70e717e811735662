"""The paper's Figures 2 and 3 for an ALOHA episode traced by
:func:`efm_learning.aloha_eval.trace_episode`.

* Figure 2: ``d(o, g)`` (expected steps-to-go, Eq. 1) along the episode, with the moments
  the simulator's contact stage changes marked (both grippers touch, both lifted, peg
  touches socket, peg touches pin; ground truth, drawn only to read the curve against).
* Figure 3: a filmstrip of 5 consecutive observations (cam_high over cam_low, as the
  model sees them) with the steps-to-go distribution under each frame. The window is
  chosen without ground truth: where d changes most within 5 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: names of the simulator's contact stages (efm_sim.aloha, gym-aloha's reward)
STAGE_NAMES = {1: "both grippers touch", 2: "both lifted", 3: "peg touches socket",
               4: "peg touches pin"}


def stage_events(stage: np.ndarray) -> list[tuple[int, int, int]]:
    """``(step, old_stage, new_stage)`` wherever the stage changes."""
    stage = np.asarray(stage)
    changes = np.flatnonzero(np.diff(stage)) + 1
    return [(int(t), int(stage[t - 1]), int(stage[t])) for t in changes]


def filmstrip_window(steps_to_go: np.ndarray, length: int = 5) -> int:
    """First index of the ``length`` consecutive observations over which d moves most
    (max - min), the moments the model changed its mind; 0 for a short episode."""
    d = np.asarray(steps_to_go, dtype=np.float64)
    if len(d) <= length:
        return 0
    spans = [np.ptp(d[i: i + length]) for i in range(len(d) - length + 1)]
    return int(np.argmax(spans))


def plot_steps_to_go_episode(trace: dict[str, Any], out: str | Path, title: str = "") -> Path:
    """Figure 2 style: d(o_t, g) over the episode's 10 Hz steps with stage events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.asarray(trace["steps_to_go"])
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    ax.plot(np.arange(len(d)), d, "-", color="C0", lw=1.6, label="d(o_t, g) (Stage 1 model)")
    for t, old, new in stage_events(trace["stage"]):
        color = "C2" if new > old else "C3"
        ax.axvline(t, color=color, ls="--", lw=1)
        name = STAGE_NAMES.get(new, "no contact") if new > old else \
            f"lost: {STAGE_NAMES.get(old, old)}"
        ax.text(t + 0.3, ax.get_ylim()[1] * 0.97, name, rotation=90, va="top", fontsize=7,
                color=color)
    ax.set_xlabel("policy step t (10 Hz; 5 driver steps each)")
    ax.set_ylabel("expected steps-to-go")
    outcome = "success" if trace["success"] else f"failure (reached stage {trace['max_stage']})"
    ax.set_title(title or f"ALOHA insertion, env seed {trace['seed']}: {outcome}", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, out)


def plot_steps_to_go_filmstrip(
    trace: dict[str, Any], out: str | Path, length: int = 5, start: int | None = None
) -> Path:
    """Figure 3 style: ``length`` consecutive frames, the steps-to-go distribution under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames, probs = trace["frames"], trace["probs"]
    values = np.asarray(trace["bin_values"])
    start = filmstrip_window(trace["steps_to_go"], length) if start is None else start
    picks = list(range(start, min(start + length, len(frames))))
    fig, axes = plt.subplots(2, len(picks), figsize=(2.3 * len(picks), 4.4), squeeze=False,
                             gridspec_kw={"height_ratios": [1.2, 1]})
    top = max(float(probs[t].max()) for t in picks)
    used = np.flatnonzero(np.max(np.stack([probs[t] for t in picks]), axis=0) > 2e-3)
    right = float(values[used[-1]]) + 5 if used.size else float(values[-1])
    for col, t in enumerate(picks):
        axes[0, col].imshow(frames[t])
        axes[0, col].set_title(f"t = {t}, d = {trace['steps_to_go'][t]:.1f}", fontsize=8)
        axes[0, col].axis("off")
        axes[1, col].bar(values, probs[t], width=1.0, color="C0")
        axes[1, col].set_ylim(0, top * 1.05)
        axes[1, col].set_xlim(-2, right)
        axes[1, col].set_xlabel("steps-to-go", fontsize=8)
        axes[1, col].tick_params(labelsize=7)
    axes[1, 0].set_ylabel("probability", fontsize=8)
    fig.suptitle(f"Steps-to-go distribution over 5 consecutive steps (env seed "
                 f"{trace['seed']}; cf. paper Figure 3)", fontsize=9)
    return _save(fig, out)


def _save(fig: Any, out: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
