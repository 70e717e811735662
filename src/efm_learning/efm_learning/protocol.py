"""The evaluation protocol: which simulator tasks ground truth may be measured on.

Ground truth is never a learning signal (paper Sec. 2.2); it is also never used to pick
anything on the tasks a result is reported on. Two disjoint splits of env seeds
(docs/EVALUATION.md):

* ``tuning``: the only tasks on which a round, budget, threshold or hyperparameter may
  be chosen, and where Stage 2's optional per-round evaluation runs;
* ``report``: measured only once every choice is made (``make demo``'s before/after,
  docs/RESULTS.md tables).

Demonstrations use seeds 0..~1e5; practice draws random seeds below 2**31, so a practice
task lands on one of a split's few hundred tasks with negligible probability. This module
imports nothing heavy, so experiments and the ROS demo can share it.
"""

from __future__ import annotations

TUNING_SEED_BASE = 1_000_000_000
REPORT_SEED_BASE = 2_000_000_000
SPLITS = {"tuning": TUNING_SEED_BASE, "report": REPORT_SEED_BASE}


def task_seeds(split: str, count: int, offset: int = 0) -> list[int]:
    """``count`` env seeds of the ``split`` ("tuning" or "report") tasks."""
    if split not in SPLITS:
        raise ValueError(f"unknown task split {split!r}; valid: {sorted(SPLITS)}")
    if count < 0 or offset < 0 or offset + count > 500_000_000:
        raise ValueError(f"count and offset must keep within the split, got {count}, {offset}")
    base = SPLITS[split] + offset
    return list(range(base, base + count))
