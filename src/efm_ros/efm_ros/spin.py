"""The one ``main`` of every efm node: init, spin, clean shutdown on ^C / SIGTERM, destroy
(STYLE.md, ros2/demos)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def run_node(
    factory: Callable[[], Node],
    args: list[str] | None = None,
    *,
    threads: int = 1,
    on_shutdown: Callable[[Node], None] | None = None,
) -> None:
    """Create the node, spin it (``threads`` > 1: a multi-threaded executor, for nodes whose
    callbacks block on purpose), and tear it down cleanly whatever ends the spin.

    Our own handlers, not rclpy's: SIGINT and SIGTERM only set a flag that the spin loop
    checks between callbacks, so no callback is cut in half (a recorder opening a bag) and
    the ``finally`` block always runs (recorders close their bags) before exit.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = None
    executor = None
    try:
        node = factory()
        executor = (
            MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        )
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second ^C must not cut cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            if on_shutdown is not None:
                on_shutdown(node)
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
