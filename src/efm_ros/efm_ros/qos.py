"""The three QoS profiles every efm node uses (STYLE.md: state QoS at every endpoint).

* :data:`SENSOR` — camera streams and observations: best effort, keep last 5. A late
  frame is worthless; never block the driver.
* :data:`RELIABLE` — commands, episodes, weights, predictions: reliable, keep last 10.
* :data:`LATCHED` — "latest state" topics (current instruction, policy version, practice
  status): reliable, transient local, depth 1, so late joiners get the last value.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

SENSOR = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

RELIABLE = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
