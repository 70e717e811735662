"""One health summary per node on ``/diagnostics`` (STYLE.md, nav2): rates, drops and
rejected inputs as counters, published about once a second."""

from __future__ import annotations

from collections import Counter

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from efm_ros.qos import RELIABLE


class Diagnostics:
    """Counters for one node, published as a DiagnosticArray.

    ``reject(reason, detail)`` counts a refused input under ``rejected.<reason>`` and logs a
    throttled warning; the status turns WARN while any input was rejected in the last period.
    """

    def __init__(self, node: Node, period_s: float = 1.0) -> None:
        self._node = node
        self.counters: Counter[str] = Counter()
        self._rejected_at_last_publish = 0
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        self._timer = node.create_timer(period_s, self.publish)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def reject(self, reason: str, detail: str) -> None:
        """Count and log a refused input; never raises."""
        self.counters[f"rejected.{reason}"] += 1
        self._node.get_logger().warning(
            f"rejected input ({reason}): {detail}", throttle_duration_sec=1.0
        )

    @property
    def rejected(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith("rejected."))

    def publish(self) -> None:
        rejected = self.rejected
        fresh = rejected - self._rejected_at_last_publish
        self._rejected_at_last_publish = rejected
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if fresh else DiagnosticStatus.OK,
            name=f"{self._node.get_namespace().rstrip('/')}/{self._node.get_name()}",
            hardware_id=self._node.get_name(),
            message=f"{fresh} input(s) rejected in the last period" if fresh else "ok",
            values=[KeyValue(key=k, value=str(v)) for k, v in sorted(self.counters.items())],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(msg)
