"""``efm-operator``: the practice operator's command line (paper Algorithm 1 and Appendix F:
one operator watches the fleet, resets stations and ends episodes).

    efm-operator status [--watch]          the coordinator's PracticeStatus, as a table
    efm-operator pause | resume | stop     collection (running episodes finish / are cancelled)
    efm-operator abort [STATION]           end STATION's running episode (all: none given)
    efm-operator reset-done [STATION]      STATION is reset (station.require_reset)
    efm-operator intervene STATION         take over STATION's episode (never learned)

Commands go to the coordinator's ``practice/command`` service (PracticeCommand) and
``intervene`` to ``/<station>/operator/intervention``; an aborted or intervened episode is
recorded, marked in its bag, and never sent to the learner. Exit status: 0 done, 1 the
coordinator refused (its message is printed), 2 no coordinator answered in time.
"""

from __future__ import annotations

import argparse
import sys
import time

COMMANDS = ("status", "pause", "resume", "stop", "abort", "reset-done", "intervene")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="efm-operator", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("station", nargs="?", default="", help="station name (abort, "
                        "reset-done: empty = every station; intervene: required)")
    parser.add_argument("--service", default="/practice/command",
                        help="the coordinator's PracticeCommand service")
    parser.add_argument("--status-topic", default="/practice/status",
                        help="the coordinator's PracticeStatus topic")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the coordinator")
    parser.add_argument("--watch", action="store_true", help="status: keep printing")
    args = parser.parse_args(argv)
    if args.command == "intervene" and not args.station:
        parser.error("intervene needs a STATION")
    if args.command in ("status", "pause", "resume", "stop") and args.station:
        parser.error(f"{args.command} takes no STATION")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def format_status(msg) -> str:
    """A PracticeStatus as the operator reads it."""
    best = "-" if msg.best_policy_version < 0 else f"v{msg.best_policy_version}"
    lines = [
        f"practice: {msg.state}" + (f" ({msg.stop_reason})" if msg.stop_reason else "")
        + f"   policy v{msg.policy_version}, round {msg.learning_round}, "
        f"{msg.episodes_total} episodes, buffer {msg.buffer_samples}/{msg.buffer_capacity}, "
        f"detector success {msg.success_rate:.2f}, kept {best}",
        f"{'station':<16} {'state':<15} {'episodes':>8} {'aborted':>7} {'success':>7} "
        f"{'length':>6} {'d(o0)':>6}",
    ]
    for st in msg.stations:
        lines.append(
            f"{st.station:<16} {st.state:<15} {st.episodes:>8} {st.aborted:>7} "
            f"{st.success_rate:>7.2f} {st.mean_length:>6.1f} {st.mean_steps_to_go:>6.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import rclpy
    from rclpy.node import Node

    from efm_interfaces.msg import PracticeStatus
    from efm_interfaces.srv import PracticeCommand
    from efm_ros.qos import LATCHED, RELIABLE

    rclpy.init(args=None)
    node = Node("efm_operator")
    try:
        if args.command == "status":
            return _status(node, args, PracticeStatus, LATCHED)
        if args.command == "intervene":
            return _intervene(node, args, RELIABLE)
        client = node.create_client(PracticeCommand, args.service)
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f"efm-operator: no coordinator at {args.service}", file=sys.stderr)
            return 2
        request = PracticeCommand.Request
        codes = {"pause": request.PAUSE, "resume": request.RESUME, "stop": request.STOP,
                 "abort": request.ABORT_EPISODE, "reset-done": request.RESET_DONE}
        future = client.call_async(request(command=codes[args.command], station=args.station,
                                           source="operator"))
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done() or future.result() is None:
            print("efm-operator: the coordinator did not answer", file=sys.stderr)
            return 2
        response = future.result()
        print(response.message, file=sys.stdout if response.ok else sys.stderr)
        return 0 if response.ok else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _status(node, args, status_type, qos) -> int:
    import rclpy

    latest = []
    node.create_subscription(status_type, args.status_topic, latest.append, qos)
    deadline = time.monotonic() + args.timeout
    printed = 0
    while True:
        rclpy.spin_once(node, timeout_sec=0.1)
        if latest and len(latest) > printed:
            print(format_status(latest[-1]), flush=True)
            printed = len(latest)
            if not args.watch:
                return 0
            print()
        elif not latest and time.monotonic() > deadline:
            print(f"efm-operator: no status on {args.status_topic}", file=sys.stderr)
            return 2


def _intervene(node, args, qos) -> int:
    import rclpy
    from std_msgs.msg import Bool

    topic = f"/{args.station.strip('/')}/operator/intervention"
    pub = node.create_publisher(Bool, topic, qos)
    deadline = time.monotonic() + args.timeout
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print(f"efm-operator: nothing listens on {topic} (is the actor up?)",
                  file=sys.stderr)
            return 2
        rclpy.spin_once(node, timeout_sec=0.05)
    pub.publish(Bool(data=True))
    rclpy.spin_once(node, timeout_sec=0.2)  # let the reliable sample go out
    print(f"intervention on {args.station}: its running episode ends, never learned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
