"""``coordinator``: drives the practice of any number of stations (paper Appendix J,
central coordinator; Section 6 on stopping before over-optimisation).

Sends RunEpisode goals to every idle station's actor (``/<station>/run_episode``), pauses
and resumes collection around learning rounds (the learner asks through ``practice/command``,
as an operator can), tracks per-station and overall detector success, episode length and
d at the start, and publishes PracticeStatus on ``practice/status``. Practice stops at a
budget of episodes or at a success plateau of the learned detector, the GT-free rule of
``efm_learning.stopping.PlateauRule`` (Section 6): no gain of ``plateau.min_gain`` in the
detector success rate pooled over ``plateau.window`` versions for ``plateau.patience``
versions. The version the rule keeps is published as ``best_policy_version``. A station whose actor
disappears is marked ``lost``, its episode written off, and practice goes on with the
others. The operator (``efm-operator``, Appendix F: one operator for the fleet) pauses,
resumes, stops, aborts a station's episode (never learned; not counted in the success
rate) and, with ``station.require_reset``, confirms each station's reset before its next
episode.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from rclpy.action import ActionClient
from rclpy.node import Node
from std_msgs.msg import UInt64

from efm_interfaces.action import RunEpisode
from efm_interfaces.msg import EpisodeAck, PracticeStatus, StationStatus, WeightsUpdate
from efm_interfaces.srv import PracticeCommand
from efm_learning.stopping import PlateauRule
from efm_ros.diagnostics import Diagnostics
from efm_ros.fleet_auth import declare_fleet_key, verify
from efm_ros.params import Parameters
from efm_ros.qos import LATCHED, RELIABLE
from efm_ros.spin import NodeEntry, run_node

Cmd = PracticeCommand.Request


@dataclass
class Station:
    """The coordinator's view of one station."""

    name: str
    client: ActionClient
    state: str = "idle"
    goal_handle: object = None
    pending: object = None
    last_seen: float = field(default_factory=time.monotonic)
    #: ROS time of the last time the actor was reachable (StationStatus.last_seen)
    last_seen_stamp: object = None
    episodes: int = 0
    aborted: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=50))
    first_d: float | None = None
    #: policy version the station reports on /<station>/policy/version (-1: unknown)
    version: int = -1


class CoordinatorNode(Node):
    """Runs practice across stations until stopped, out of budget or on a plateau."""

    def __init__(self, **kwargs) -> None:
        super().__init__("coordinator", **kwargs)
        p = Parameters(self)
        names = p.declare(
            "stations",
            ["station_0"],
            "Station namespaces to drive.",
            read_only=True,
            validator=lambda v: (
                None if v and len(set(v)) == len(v) else "need unique, non-empty station names"
            ),
        )
        self.max_steps = p.declare(
            "episode.max_steps",
            0,
            "Step limit sent with each goal (0 = the actor's default) [steps].",
            min_value=0,
        )
        self.task_family = p.declare("episode.task_family", "", "Task family for goals.")
        self.budget = p.declare(
            "budget.episodes", 0, "Stop after this many episodes (0 = no budget).", min_value=0
        )
        self.patience = p.declare(
            "plateau.patience",
            0,
            "Stop when success has not improved for this many policy versions (0 = never).",
            min_value=0,
        )
        min_gain = p.declare(
            "plateau.min_gain",
            0.02,
            "Gain in the pooled detector success rate that counts as improvement.",
            min_value=0.0,
            max_value=1.0,
            read_only=True,
        )
        window = p.declare(
            "plateau.window",
            3,
            "Policy versions pooled for each detector success rate.",
            min_value=1,
            read_only=True,
        )
        min_episodes = p.declare(
            "plateau.min_episodes",
            8,
            "A version with fewer finished episodes is not judged.",
            min_value=1,
            read_only=True,
        )
        self.lost_after = p.declare(
            "station.lost_after_s",
            5.0,
            "Mark a station lost when its actor is unreachable this long [s].",
            min_value=0.1,
        )
        rate = p.declare("status.rate_hz", 2.0, "PracticeStatus rate [Hz].", min_value=0.1)
        self.wait_for_learner = p.declare(
            "wait_for_learner",
            True,
            "Dispatch only after the learner has announced the policy version, and only to "
            "stations acting with it (episodes of an older version would be refused).",
            read_only=True,
        )
        self.require_reset = p.declare(
            "station.require_reset",
            False,
            "After each episode wait for the operator's RESET_DONE (efm-operator reset-done "
            "<station>) before the next: real stations, reset by hand (Appendix F).",
            read_only=True,
        )
        self.start_paused = p.declare(
            "start_paused", False, "Wait for a RESUME before collecting.", read_only=True
        )

        self.diag = Diagnostics(self)
        self.fleet_key = declare_fleet_key(p, self.get_logger())
        self.stations = {
            n: Station(n, ActionClient(self, RunEpisode, f"/{n.strip('/')}/run_episode"))
            for n in names
        }
        self.pauses: set[str] = {"operator"} if self.start_paused else set()
        self.stopped = ""
        self.episodes_total = 0
        self.policy_version = 0
        self.learner_seen = False
        self.learning_round = 0
        self.version_success: dict[int, list[bool]] = defaultdict(list)
        self.plateau = PlateauRule(self.patience, min_gain, window, min_episodes)
        self.best_rate = -1.0
        self.buffer_samples = self.buffer_capacity = 0
        self.status_pub = self.create_publisher(PracticeStatus, "practice/status", LATCHED)
        self.create_service(PracticeCommand, "practice/command", self.on_command)
        self.create_subscription(WeightsUpdate, "/learner/weights", self.on_weights, LATCHED)
        self.create_subscription(EpisodeAck, "/learner/acks", self.on_ack, RELIABLE)
        for st in self.stations.values():
            self.create_subscription(
                UInt64,
                f"/{st.name.strip('/')}/policy/version",
                lambda m, s=st: setattr(s, "version", int(m.data)),
                LATCHED,
            )
        self.create_timer(0.05, self.dispatch)
        self.create_timer(1.0 / rate, self.publish_status)
        self.get_logger().info(f"coordinator ready: stations {list(self.stations)}")

    # -- practice loop --------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self.stopped:
            return "stopped"
        if "learner" in self.pauses:
            return "learning"
        return "paused" if self.pauses else "collecting"

    def dispatch(self) -> None:
        now = time.monotonic()
        for st in self.stations.values():
            ready = st.client.server_is_ready()
            if ready:
                st.last_seen = now
                st.last_seen_stamp = self.get_clock().now().to_msg()
                if st.state == "lost":  # its scene is unknown: a real one is reset first
                    st.state = "awaiting_reset" if self.require_reset else "idle"
                    self.get_logger().info(f"{st.name} is back ({st.state})")
            elif st.state != "lost" and now - st.last_seen > self.lost_after:
                self.get_logger().error(f"{st.name}: actor unreachable, marking it lost")
                self.diag.count("stations.lost")
                st.state, st.goal_handle, st.pending = "lost", None, None
            if self.state != "collecting" or st.state != "idle" or not ready:
                continue
            if self.wait_for_learner and not (
                self.learner_seen and st.version == self.policy_version
            ):
                continue
            if self.budget and self.episodes_total + self.running() >= self.budget:
                continue
            goal = RunEpisode.Goal(
                station=st.name, max_steps=self.max_steps, task_family=self.task_family, seed=-1
            )
            st.state = "running"
            st.first_d = None
            st.pending = st.client.send_goal_async(
                goal, feedback_callback=lambda f, s=st: self.on_feedback(s, f)
            )
            st.pending.add_done_callback(lambda fut, s=st: self.on_accepted(s, fut))

    def running(self) -> int:
        return sum(st.state == "running" for st in self.stations.values())

    def on_feedback(self, st: Station, feedback) -> None:
        d = feedback.feedback.expected_steps_to_go
        if st.first_d is None and d >= 0:
            st.first_d = float(d)

    def on_accepted(self, st: Station, future) -> None:
        handle = future.result()
        if st.state != "running":
            return
        if handle is None or not handle.accepted:
            self.diag.reject("goal", f"{st.name} rejected the episode goal")
            st.state = "idle"
            return
        st.goal_handle = handle
        handle.get_result_async().add_done_callback(lambda f, s=st: self.on_result(s, f))

    def on_result(self, st: Station, future) -> None:
        if st.state == "lost":
            return  # written off already
        st.goal_handle = None
        st.state = "awaiting_reset" if self.require_reset else "idle"
        response = future.result()
        result = response.result
        if result.termination_reason == RunEpisode.Goal.TERMINATION_ERROR:
            self.diag.reject("episode", f"{st.name}: {result.termination_detail}")
            return
        if result.termination_reason == RunEpisode.Goal.TERMINATION_ABORTED:
            # ended by the operator: not the policy's outcome, so not in its success rate
            st.aborted += 1
            self.diag.count("episodes.aborted")
            self.get_logger().info(f"{st.name}: {result.termination_detail}")
            return
        st.episodes += 1
        self.episodes_total += 1
        st.recent.append((bool(result.success), int(result.length), st.first_d))
        self.version_success[int(result.policy_version)].append(bool(result.success))
        if self.budget and self.episodes_total >= self.budget:
            self.stop("budget")
        if st.state == "awaiting_reset":
            self.get_logger().info(f"{st.name}: waiting for the operator's reset")
        self.dispatch()  # the next episode now, not at the next dispatch tick

    def on_ack(self, msg: EpisodeAck) -> None:
        """The learner's buffer fill after each decision (PracticeStatus.buffer_*)."""
        if verify(msg, self.fleet_key):
            return
        if msg.learner_version >= self.policy_version:
            self.buffer_samples = int(msg.buffer_samples)
            self.buffer_capacity = int(msg.buffer_capacity)

    def on_weights(self, msg: WeightsUpdate) -> None:
        if problem := verify(msg, self.fleet_key):
            self.diag.reject("weights", problem)
            return
        self.learner_seen = True
        if msg.version <= self.policy_version:
            return
        self.buffer_samples = 0  # a round was learned: its buffer is cleared
        finished = self.version_success.get(self.policy_version, [])
        decision = self.plateau.observe(self.policy_version, sum(finished), len(finished))
        if decision is not None:
            self.best_rate = decision.best_rate
            self.get_logger().info(
                f"v{self.policy_version}: detector success {sum(finished)}/{len(finished)}, "
                f"pooled {decision.pooled_rate:.2f}; keeping v{decision.best_version} "
                f"({decision.best_rate:.2f}), {decision.stale} versions without a gain"
            )
            if decision.stop:
                self.stop("plateau")
        else:
            self.get_logger().info(
                f"v{self.policy_version}: detector success {sum(finished)}/{len(finished)}; "
                "not judged yet (too few episodes or no full window)"
            )
        self.policy_version = int(msg.version)
        self.learning_round = int(msg.learning_round)

    def stop(self, reason: str) -> None:
        if self.stopped:
            return
        self.stopped = reason
        self.get_logger().info(f"practice stopped: {reason}")
        self.abort("")
        self.publish_status()

    def abort(self, station: str) -> list[str]:
        aborted = []
        for st in self.stations.values():
            if station and st.name != station:
                continue
            if st.goal_handle is not None:
                st.goal_handle.cancel_goal_async()
                aborted.append(st.name)
        return aborted

    # -- operator interface -----------------------------------------------------------------
    def on_command(self, request: Cmd, response: PracticeCommand.Response):
        source = request.source or "operator"
        if source not in ("operator", "learner"):
            response.ok, response.message = False, f"unknown source {source!r}"
            return response
        response.ok = True
        if request.command == Cmd.PAUSE:
            self.pauses.add(source)
            response.message = f"paused by {source}"
        elif request.command == Cmd.RESUME:
            self.pauses.discard(source)
            response.message = f"{source} resumed; state {self.state}"
        elif request.command == Cmd.STOP:
            self.stop("operator")
            response.message = "stopped"
        elif request.command == Cmd.ABORT_EPISODE:
            if request.station and request.station not in self.stations:
                response.ok = False
                response.message = (
                    f"unknown station {request.station!r}; valid: {list(self.stations)}"
                )
            else:
                aborted = self.abort(request.station)
                response.message = f"aborting {aborted}" if aborted else "nothing running"
        elif request.command == Cmd.RESET_DONE:
            response.ok, response.message = self.reset_done(request.station)
        else:
            response.ok, response.message = False, f"unknown command {request.command}"
        self.get_logger().info(f"command {request.command} from {source}: {response.message}")
        self.publish_status()
        return response

    def reset_done(self, station: str) -> tuple[bool, str]:
        """The operator has reset ``station`` (''= every waiting one): it may run again."""
        if station and station not in self.stations:
            return False, f"unknown station {station!r}; valid: {list(self.stations)}"
        chosen = [self.stations[station]] if station else list(self.stations.values())
        waiting = [st for st in chosen if st.state == "awaiting_reset"]
        if not waiting:
            states = {st.name: st.state for st in chosen}
            return False, f"no station is waiting for a reset: {states}"
        for st in waiting:
            st.state = "idle"
        return True, f"reset done: {[st.name for st in waiting]}"

    def publish_status(self) -> None:
        msg = PracticeStatus(
            state=self.state,
            stop_reason=self.stopped,
            policy_version=self.policy_version,
            learning_round=self.learning_round,
            episodes_total=self.episodes_total,
            best_policy_version=self.plateau.best_version,
            best_success_rate=max(self.best_rate, 0.0),
            buffer_samples=self.buffer_samples,
            buffer_capacity=self.buffer_capacity,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        everything = []
        for st in self.stations.values():
            recent = list(st.recent)
            everything += recent
            msg.stations.append(self.station_status(st, recent))
        success, length, d0 = self.summarise(everything)
        msg.success_rate, msg.mean_length, msg.mean_steps_to_go = success, length, d0
        self.status_pub.publish(msg)

    def station_status(self, st: Station, recent: list) -> StationStatus:
        success, length, d0 = self.summarise(recent)
        status = StationStatus(
            station=st.name,
            state=st.state,
            episodes=st.episodes,
            aborted=st.aborted,
            success_rate=success,
            mean_length=length,
            mean_steps_to_go=d0,
        )
        if st.last_seen_stamp is not None:
            status.last_seen = st.last_seen_stamp
        return status

    @staticmethod
    def summarise(recent: list) -> tuple[float, float, float]:
        if not recent:
            return 0.0, 0.0, 0.0
        d0 = [d for _, _, d in recent if d is not None]
        return (
            sum(s for s, _, _ in recent) / len(recent),
            sum(n for _, n, _ in recent) / len(recent),
            sum(d0) / len(d0) if d0 else 0.0,
        )


ENTRY = NodeEntry(CoordinatorNode)


def main(args: list[str] | None = None) -> None:
    run_node(ENTRY, args)


if __name__ == "__main__":
    main()
