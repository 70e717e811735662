"""The one ``main`` of every efm node: init, spin, clean shutdown on ^C / SIGTERM, destroy
(STYLE.md, ros2/demos)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

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


def spin_until(executor, stop: threading.Event, context: rclpy.Context | None = None) -> None:
    """Spin ``executor`` until ``stop`` is set or the context shuts down; checked between
    callbacks (every 0.1 s at the latest), so no callback is cut in half."""
    try:
        while not stop.is_set() and rclpy.ok(context=context):
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass


class StreamNode:
    """A hidden companion node, on its own single-threaded executor and thread, for a
    node's per-control-step subscriptions.

    rclpy's MultiThreadedExecutor rebuilds its wait set in Python and hands every callback
    to a thread pool: a node that must block in some callbacks (the actor's RunEpisode
    execution waits for the episode to end) paid that for every observation, action and
    prediction (docs/ROS.md, throughput). Those streams only append to a buffer, so they
    go to this node, spun by :func:`make_executor` (the EventsExecutor with
    ``EFM_EXECUTOR=events``). Topic names are resolved by the owner, so its namespace and
    remappings apply; the companion takes no process-wide arguments (a ``__node``
    remapping would give it the owner's name).
    """

    def __init__(self, owner: Node) -> None:
        self.owner = owner
        self.node = Node(
            f"_{owner.get_name()}_stream",
            namespace=owner.get_namespace(),
            context=owner.context,
            use_global_arguments=False,
            enable_rosout=False,
            start_parameter_services=False,
        )
        self.executor = make_executor(1, owner.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=self.node.get_name(), daemon=True)
        self._thread.start()

    def subscribe(self, msg_type, topic: str, callback, qos) -> None:
        """Subscribe ``topic`` as the owner would resolve it."""
        self.node.create_subscription(
            msg_type, self.owner.resolve_topic_name(topic), callback, qos
        )

    def _spin(self) -> None:
        spin_until(self.executor, self._stop, self.owner.context)

    def destroy(self) -> None:
        """Stop the thread, then destroy the companion (before its owner)."""
        self._stop.set()
        self.executor.wake()
        self._thread.join(timeout=1.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


@dataclass(frozen=True)
class NodeEntry:
    """How a node module's node runs (its ``main`` and :mod:`efm_ros.compose` share it).

    ``factory`` takes rclpy ``Node`` keyword arguments; ``threads`` > 1 gives it a
    multi-threaded executor, for nodes whose callbacks block on purpose (a callable decides
    from the configured node); ``on_shutdown`` closes what must survive a stop (bags)
    before the rmw teardown.
    """

    factory: Callable[..., Node]
    threads: int | Callable[[Node], int] = 1
    on_shutdown: Callable[[Node], None] | None = None


#: node constructors of a composed process run one at a time
_CONSTRUCTING = threading.Lock()


class _Served:
    """One node of this process and its executor."""

    def __init__(self, entry: NodeEntry, kwargs: dict) -> None:
        self.entry, self.kwargs = entry, kwargs
        self.node: Node | None = None
        self.executor = None
        self.error: BaseException | None = None

    def serve(self, stop: threading.Event) -> None:
        """Create, spin until ``stop``, then run ``on_shutdown``, all on the calling
        thread (an EGL context made current by a simulator stays on its thread)."""
        try:
            with _CONSTRUCTING:  # imports are not thread-safe (transformers' lazy modules)
                self.node = self.entry.factory(**self.kwargs)
            threads = self.entry.threads
            self.executor = make_executor(threads(self.node) if callable(threads) else threads)
            self.executor.add_node(self.node)
            spin_until(self.executor, stop)
        finally:
            if self.node is not None and self.entry.on_shutdown is not None:
                self.entry.on_shutdown(self.node)

    def serve_in_thread(self, stop: threading.Event) -> None:
        try:
            self.serve(stop)
        except BaseException as error:  # ends the whole process, as a crash would
            self.error = error
            print(f"[efm] node failed: {error!r}", file=sys.stderr)
        finally:
            stop.set()

    def destroy(self) -> None:
        if self.node is not None:
            self.node.destroy_node()
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=1.0)


def help_requested(args: list[str] | None) -> bool:
    """``-h`` / ``--help`` among a node's own arguments (those before ``--ros-args``)."""
    argv = sys.argv[1:] if args is None else list(args)
    own = argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv
    return any(a in ("-h", "--help") for a in own)


def node_help(entry: NodeEntry, prog: str) -> str:
    """What ``<node> --help`` prints: the node's summary and how ROS arguments reach it
    (its parameters, declared with descriptions, are listed by ``ros2 param describe``)."""
    doc = (entry.factory.__doc__ or "").strip().split("\n\n")[0]
    return (
        f"usage: {prog} [--ros-args [-p NAME:=VALUE] [--params-file FILE] "
        "[-r __ns:=/station_0] [--log-level LEVEL]]\n\n"
        f"{' '.join(doc.split())}\n\n"
        "Parameters are declared with descriptions and ranges: with the node running, "
        f"`ros2 param describe /{prog} <name>` shows each; config/*.yaml holds a deployment's.\n"
    )


def run_node(entry: NodeEntry, args: list[str] | None = None) -> None:
    """A node process: create the node, spin it, tear it down cleanly whatever ends it
    (``--help`` prints :func:`node_help` and exits without starting ROS)."""
    if help_requested(args):
        print(node_help(entry, os.path.basename(sys.argv[0]) or "node"))
        return
    run_nodes([(entry, {})], args)


def run_nodes(entries: list[tuple[NodeEntry, dict]], args: list[str] | None = None) -> None:
    """Run nodes in this process, each on its own executor: one node spins on the main
    thread; several (a composed station, :mod:`efm_ros.compose`) get a thread each and
    share one rclpy context, so Fast DDS hands their messages over within the process.

    Our own handlers, not rclpy's: SIGINT and SIGTERM only set a flag that the spin loops
    check between callbacks, so no callback is cut in half (a recorder opening a bag) and
    every ``on_shutdown`` runs (recorders close their bags) before exit. A node that fails
    stops the others; its error is raised once all are down.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    served = [_Served(entry, kwargs) for entry, kwargs in entries]
    try:
        if len(served) == 1:
            served[0].serve(stop)
        else:
            threads = [
                threading.Thread(target=s.serve_in_thread, args=(stop,), daemon=True)
                for s in served
            ]
            for thread in threads:
                thread.start()
            while not stop.is_set() and rclpy.ok():
                stop.wait(0.2)
            stop.set()
            for thread in threads:
                thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second ^C must not cut cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        guard = exit_if_stuck(TEARDOWN_S)
        for s in served:
            s.destroy()
        rclpy.try_shutdown()
        guard.cancel()
    failed = next((s.error for s in served if s.error is not None), None)
    if failed is not None:
        raise failed
