"""The one ``main`` of every efm node: init, spin, clean shutdown on ^C / SIGTERM, destroy
(STYLE.md, ros2/demos)."""

from __future__ import annotations

import os
import signal
import sys
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

#: seconds the rmw teardown may take after ``on_shutdown`` before the process just exits
TEARDOWN_S = 5.0

#: ``EFM_EXECUTOR=events``: single-threaded nodes spin rclpy's (experimental, C++)
#: EventsExecutor instead of the SingleThreadedExecutor (docs/ROS.md, throughput)
EXECUTOR_ENV = "EFM_EXECUTOR"


def exit_if_stuck(seconds: float) -> threading.Timer:
    """Exit the process if teardown has not finished within ``seconds``.

    Destroying a node can block for good: seen here in FastDDS (a DataWriter's destructor
    waiting in ``ResourceEvent::unregister_timer``) and in a MultiThreadedExecutor joining
    a worker that waits on a service answer nobody will spin. It only runs after
    ``on_shutdown`` has closed what matters (bags; the learner spools episodes as they
    arrive), so leaving is safe; hanging
    would get the node SIGKILLed by bring-up and look like a crash."""

    def leave() -> None:
        print(f"[efm] teardown still blocked after {seconds:.0f} s; exiting", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.start()
    return timer


def make_executor(threads: int, context: rclpy.Context | None = None):
    """The executor of a node process: multi-threaded for ``threads`` > 1, else the
    SingleThreadedExecutor, or rclpy's EventsExecutor when ``EFM_EXECUTOR=events``."""
    choice = os.environ.get(EXECUTOR_ENV, "")
    if choice not in ("", "single", "events"):
        raise ValueError(f"{EXECUTOR_ENV}={choice!r}: use 'single' or 'events'")
    if threads > 1:
        return MultiThreadedExecutor(num_threads=threads, context=context)
    if choice == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


def run_node(
    factory: Callable[[], Node],
    args: list[str] | None = None,
    *,
    threads: int | Callable[[Node], int] = 1,
    on_shutdown: Callable[[Node], None] | None = None,
) -> None:
    """Create the node, spin it (``threads`` > 1: a multi-threaded executor, for nodes whose
    callbacks block on purpose; a callable decides from the configured node), and tear it
    down cleanly whatever ends the spin.

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
        executor = make_executor(threads(node) if callable(threads) else threads)
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second ^C must not cut cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None and on_shutdown is not None:
            on_shutdown(node)
        guard = exit_if_stuck(TEARDOWN_S)
        if node is not None:
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
        guard.cancel()
