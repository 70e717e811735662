"""``actor``: one station's practice episodes as a RunEpisode action (paper Algorithm 1
inner loop, Appendix J.1 "actors and environment loop").

For each goal the actor
1. resets the station through its ``reset`` service (task family, instruction, seed),
2. publishes the instruction (LATCHED ``instruction``): the policy acts while it is set,
3. records every ``observation`` and the ``action_command`` answering it, streaming
   feedback, until the learned success detector fires (``steps_to_go/prediction``,
   d <= s, Eq. 3), the step limit is reached, or the operator ends it (the goal is
   cancelled, or ``operator/intervention`` turns true: the operator takes over); such an
   episode is recorded with its outcome and never sent to the learner (Appendix F),
4. clears the instruction (the policy holds),
5. labels o_0..o_T through the frozen model's ``steps_to_go`` service, computes rewards
   r_t = d_t - d_t+1 (Eq. 2) and returns (gamma 0.9), and sends a LabelledEpisode to the
   learner, re-sending it until the learner decides on it (EpisodeAck: accepted,
   duplicate, or refused with a reason that is counted); until then it is also kept in a
   spool folder, so an actor restart (even ``kill -9``) loses no unacknowledged episode,
6. tells the recorder where the episode starts and ends (``episode/events``).
Ground truth never enters the episode. If the steps_to_go service is down the actor waits
and retries; it never sends an unlabelled episode.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Bool, String

from efm_interfaces.action import RunEpisode
from efm_interfaces.msg import (
    ActionCommand,
    EpisodeAck,
    LabelledEpisode,
    Observation,
    StepsToGoPrediction,
)
from efm_interfaces.srv import ResetStation, StepsToGo
from efm_learning.returns import PAPER_GAMMA, discounted_returns
from efm_learning.reward import rewards_from_steps_to_go
from efm_learning.success_detector import held_for
from efm_ros.conversions import check_episode_id, parse_episode_event, stamp_ns
from efm_ros.diagnostics import Diagnostics
from efm_ros.fleet_auth import declare_fleet_key, sign, verify
from efm_ros.params import Parameters
from efm_ros.qos import LATCHED, RELIABLE, SENSOR
from efm_ros.spin import NodeEntry, StreamNode, run_node

Goal = RunEpisode.Goal


@dataclass
class EpisodeRecord:
    """What one episode collected so far (guarded by the actor's lock).

    Observations are keyed by their stamp, in arrival order; each ActionCommand carries the
    stamp of the observation it answers, so pairing never depends on step counters (which
    restart per episode) or on every best-effort observation arriving.
    """

    episode_id: str
    instruction: str
    started: float
    #: observations stamped before this ROS time belong to the previous episode
    start_ns: int
    observations: dict[int, Observation] = field(default_factory=dict)
    arrival: dict[int, int] = field(default_factory=dict)
    commands: list[ActionCommand] = field(default_factory=list)
    latest_d: float = float("nan")
    #: predictions in a row (as they arrived) on which the detector fired
    fired_in_a_row: int = 0
    success: bool = False
    #: monotonic time of the newest observation (the start until one arrives)
    last_observation: float = 0.0
    #: the operator took over (``operator/intervention``): ends it, never learned
    intervened: bool = False

    def add_observation(self, msg: Observation) -> None:
        key = stamp_ns(msg)
        if key < self.start_ns or key in self.arrival:
            return
        self.arrival[key] = len(self.arrival)
        self.observations[key] = msg
        self.last_observation = time.monotonic()

    def add_command(self, msg: ActionCommand) -> str:
        """Record an action; returns why it was refused ('' if recorded)."""
        key = stamp_ns(msg)
        if key not in self.arrival:
            return f"command answers an observation not seen in this episode (step {msg.step})"
        if self.commands and self.arrival[key] <= self.arrival[stamp_ns(self.commands[-1])]:
            return f"out-of-order command for step {msg.step}"
        self.commands.append(msg)
        return ""

    def commanded_observations(self) -> list[Observation]:
        return [self.observations[stamp_ns(c)] for c in self.commands]

    def observation_after_last_command(self) -> Observation | None:
        """The first observation that arrived after the one the last action answered."""
        last = self.arrival[stamp_ns(self.commands[-1])] if self.commands else -1
        later = [k for k, i in self.arrival.items() if i > last]
        return self.observations[min(later, key=self.arrival.__getitem__)] if later else None


class ActorNode(Node):
    """RunEpisode server for one station."""

    def __init__(self, **kwargs) -> None:
        super().__init__("actor", **kwargs)
        p = Parameters(self)
        self.station = p.declare("station", "station_0", "Station name.", read_only=True)
        self.default_family = p.declare(
            "episode.task_family",
            "",
            "Task family used when a goal names none ('' = the station's default).",
        )
        self.default_max_steps = p.declare(
            "episode.max_steps", 100, "Step limit when a goal gives 0 [steps].", min_value=1
        )
        self.min_steps = p.declare(
            "success.min_steps",
            1,
            "Ignore the success detector before this many actions [steps].",
            min_value=0,
        )
        self.consecutive = p.declare(
            "success.consecutive",
            1,
            "The detector ends an episode once d <= s held on this many observations in a "
            "row (1: Eq. 3; improve.success_consecutive in-process).",
            min_value=1,
        )
        self.gamma = p.declare(
            "labelling.gamma", PAPER_GAMMA, "Discount of the returns.", min_value=0.0, max_value=1.0
        )
        self.success_bonus = p.declare(
            "labelling.success_bonus",
            0.0,
            "Added to the last reward of an episode the detector ended (Section 4.1.3, "
            "Aloha); must equal the learner's improve.success_bonus.",
            min_value=0.0,
        )
        self.label_batch = p.declare(
            "labelling.max_batch", 64, "Observations per StepsToGo call.", min_value=1
        )
        self.retry_s = p.declare(
            "labelling.retry_s",
            1.0,
            "Wait between retries while the steps_to_go service is down [s].",
            min_value=0.01,
        )
        self.call_timeout = p.declare(
            "service.timeout_s", 10.0, "Timeout of one service call [s].", min_value=0.1
        )
        self.final_wait = p.declare(
            "episode.final_observation_timeout_s",
            2.0,
            "Wait for the observation after the last action [s].",
            min_value=0.0,
        )
        self.resend_s = p.declare(
            "learner.resend_s",
            2.0,
            "Re-send unacknowledged episodes this often [s].",
            min_value=0.1,
        )
        self.episode_timeout = p.declare(
            "episode.timeout_s",
            300.0,
            "End an episode with an error when it has not ended after this long (0 = never) [s].",
            min_value=0.0,
        )
        self.stall_timeout = p.declare(
            "episode.stall_timeout_s",
            10.0,
            "End an episode with an error when no observation arrived for this long, e.g. the "
            "robot driver restarted mid-episode (0 = never) [s].",
            min_value=0.0,
        )
        self.wait_for_nodes = p.declare(
            "episode.wait_for_nodes",
            ["episode_recorder", "camera_ingest"],
            "Nodes that must be listening on episode/events before an episode starts "
            "(so no bag misses its start); empty list: none.",
            read_only=True,
        )
        self.feedback_period = 1.0 / p.declare(
            "feedback.max_rate_hz",
            10.0,
            "Most RunEpisode feedback messages per second; a simulated station steps much "
            "faster than an operator reads [Hz].",
            min_value=0.1,
        )
        self.reset_service = p.declare(
            "reset.service", "reset", "Station reset service.", read_only=True
        )
        self.send_previous = p.declare(
            "episode.send_previous_images",
            True,
            "Keep each observation's previous frames in the episode sent to the learner. "
            "false halves an image episode (docs/ALOHA.md, episode transport); only for "
            "models that read the current frame alone (aloha_efm, conv_efm with "
            "previous_frame: false), since a missing previous frame reads as the current one.",
        )
        spool_dir = p.declare(
            "learner.spool_dir",
            "episodes/unacked",
            "Episodes sent but not yet acknowledged are kept in <spool_dir>/<station>/ "
            "until the learner decides on them, and re-sent after a restart ('' = memory "
            "only: a restart loses them).",
            read_only=True,
        )

        group = ReentrantCallbackGroup()
        self.diag = Diagnostics(self)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.record: EpisodeRecord | None = None
        self.busy = False
        self.shutting_down = False
        self.unacked: dict[str, LabelledEpisode] = {}
        self.fleet_key = declare_fleet_key(p, self.get_logger())
        self.spool = Path(spool_dir) / self.station if spool_dir else None
        self.counter = 0
        self.policy_version = 0

        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED)
        self.events_pub = self.create_publisher(String, "episode/events", RELIABLE)
        self.episode_pub = self.create_publisher(LabelledEpisode, "/learner/episodes", RELIABLE)
        self.create_subscription(
            EpisodeAck, "/learner/acks", self.on_ack, RELIABLE, callback_group=group
        )
        # one observation, action and prediction per control step: on a companion node,
        # off this node's multi-threaded executor (efm_ros.spin.StreamNode)
        self.stream = StreamNode(self)
        self.stream.subscribe(Observation, "observation", self.on_observation, SENSOR)
        self.stream.subscribe(ActionCommand, "action_command", self.on_command, RELIABLE)
        self.stream.subscribe(
            StepsToGoPrediction, "steps_to_go/prediction", self.on_prediction, RELIABLE
        )
        self.create_subscription(
            Bool, "operator/intervention", self.on_intervention, RELIABLE, callback_group=group
        )
        self.reset_client = self.create_client(
            ResetStation, self.reset_service, callback_group=group
        )
        self.label_client = self.create_client(StepsToGo, "steps_to_go", callback_group=group)
        self.create_timer(self.resend_s, self.resend_unacked, callback_group=group)
        self.server = ActionServer(
            self,
            RunEpisode,
            "run_episode",
            execute_callback=self.execute,
            goal_callback=self.on_goal,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=group,
        )
        self.instruction_pub.publish(String(data=""))
        restored = self.restore_unacked()
        self.get_logger().info(
            f"actor ready for {self.station}"
            + (f": {restored} unacknowledged episode(s) restored from {self.spool}" if restored
               else "")
        )

    # -- subscriptions --------------------------------------------------------------------
    def on_observation(self, msg: Observation) -> None:
        with self.changed:
            if self.record is not None:
                if len(self.record.observations) > 100_000:
                    self.diag.reject("observation", "episode too long to buffer")
                    return
                self.record.add_observation(msg)
                self.changed.notify_all()

    def on_command(self, msg: ActionCommand) -> None:
        with self.changed:
            if self.record is None or msg.hold:
                return
            problem = self.record.add_command(msg)
            if problem:
                self.diag.reject("command", problem)
                return
            self.policy_version = int(msg.policy_version)
            self.changed.notify_all()

    def on_prediction(self, msg: StepsToGoPrediction) -> None:
        with self.changed:
            record = self.record
            if record is None or stamp_ns(msg) not in record.observations:
                return  # a prediction for another episode's observation
            if not np.isfinite(msg.expected_steps):
                self.diag.reject("prediction", "non-finite d")
                return
            record.latest_d = float(msg.expected_steps)
            record.fired_in_a_row = record.fired_in_a_row + 1 if msg.success else 0
            if record.fired_in_a_row >= self.consecutive and len(record.commands) >= self.min_steps:
                record.success = True
            self.changed.notify_all()

    def on_intervention(self, msg: Bool) -> None:
        """The operator takes over (a leader arm, a pedal, ``efm-operator intervene``)."""
        if not msg.data:
            return
        with self.changed:
            if self.record is not None and not self.record.intervened:
                self.record.intervened = True
                self.get_logger().info(f"operator intervened in {self.record.episode_id}")
                self.changed.notify_all()

    def on_ack(self, msg: EpisodeAck) -> None:
        """The learner decided on an episode: stop re-sending it, count how it went."""
        if problem := verify(msg, self.fleet_key):
            self.diag.reject("ack", problem)  # a forged ack must not end the re-sending
            return
        with self.lock:
            if self.unacked.pop(msg.episode_id, None) is None:
                return  # another station's episode, or decided before
            self.unspool(msg.episode_id)
        if msg.outcome == EpisodeAck.ACCEPTED:
            self.diag.count("episodes.acknowledged")
        elif msg.outcome == EpisodeAck.DUPLICATE:
            self.diag.count("episodes.duplicate")
        else:  # not learned from: counted with the learner's reason, never silently
            kind = msg.reason.split(":", 1)[0] if msg.reason else "unknown"
            self.diag.reject(f"learner.{kind}", f"{msg.episode_id}: {msg.reason}")

    # -- the unacknowledged-episode spool ---------------------------------------------------
    def keep_until_acknowledged(self, episode: LabelledEpisode) -> None:
        """Hold an episode for re-sending, on disk first (fsynced) when a spool is set."""
        if self.spool is not None:
            self.spool.mkdir(parents=True, exist_ok=True)
            path = self.spool / f"{episode.episode_id}.cdr"
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as handle:
                handle.write(serialize_message(episode))
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(path)
        with self.lock:
            self.unacked[episode.episode_id] = episode

    def unspool(self, episode_id: str) -> None:
        if self.spool is not None:
            (self.spool / f"{episode_id}.cdr").unlink(missing_ok=True)

    def restore_unacked(self) -> int:
        """Episodes a previous run of this actor sent and never saw decided."""
        if self.spool is None or not self.spool.is_dir():
            return 0
        for path in sorted(self.spool.glob("*.cdr")):
            try:
                episode = deserialize_message(path.read_bytes(), LabelledEpisode)
                check_episode_id(episode.episode_id)
            except Exception as error:  # a torn or foreign file: set aside, never sent
                self.diag.reject("spool", f"{path.name}: {error}")
                path.replace(path.with_suffix(".bad"))
                continue
            self.unacked[episode.episode_id] = episode
            self.diag.count("episodes.restored")
        for tmp in self.spool.glob("*.tmp"):  # a write cut short: never acknowledged
            tmp.unlink()
        return len(self.unacked)

    def resend_unacked(self) -> None:
        with self.lock:
            pending = list(self.unacked.values())
        for episode in pending:
            self.episode_pub.publish(episode)
            self.diag.count("episodes.resent")

    # -- the action -----------------------------------------------------------------------
    def on_goal(self, goal: Goal) -> GoalResponse:
        with self.lock:
            if self.busy:
                self.diag.reject("goal", "an episode is already running on this station")
                return GoalResponse.REJECT
            if goal.station and goal.station != self.station:
                self.diag.reject(
                    "goal", f"goal for station {goal.station!r}, this is {self.station!r}"
                )
                return GoalResponse.REJECT
            self.busy = True
        return GoalResponse.ACCEPT

    def execute(self, handle) -> RunEpisode.Result:
        goal: Goal = handle.request
        result = RunEpisode.Result()
        try:
            self._run(handle, goal, result)
        except Exception as error:  # any failure ends this episode, never the node
            result.termination_reason = Goal.TERMINATION_ERROR
            result.termination_detail = str(error)
            with self.lock:
                self.record = None
            if not self.shutting_down:
                self.get_logger().error(f"episode failed: {error}")
                self.instruction_pub.publish(String(data=""))
                handle.abort()
        finally:
            with self.lock:
                self.busy = False
        return result

    def _run(self, handle, goal: Goal, result: RunEpisode.Result) -> None:
        max_steps = goal.max_steps or self.default_max_steps
        self._wait_for_listeners()
        self.instruction_pub.publish(String(data=""))  # policy holds during the reset
        reset = self.call(
            self.reset_client,
            ResetStation.Request(
                task_family=goal.task_family or self.default_family,
                instruction=goal.instruction,
                seed=goal.seed,
            ),
        )
        if not reset.ok:
            raise RuntimeError(f"reset refused: {reset.message}")
        self.counter += 1
        episode_id = f"{self.station}-{uuid.uuid4().hex[:8]}-{self.counter:06d}"
        start_ns = self.get_clock().now().nanoseconds
        with self.lock:
            self.record = EpisodeRecord(
                episode_id, reset.instruction, time.monotonic(), start_ns=start_ns
            )
        self.publish_event(
            event="start",
            episode_id=episode_id,
            instruction=reset.instruction,
            policy_version=self.policy_version,
            start_ns=start_ns,
        )
        self.instruction_pub.publish(String(data=reset.instruction))
        reason = self._wait_for_end(handle, max_steps)
        self.instruction_pub.publish(String(data=""))
        record = self._finish_record(max_steps)
        result.episode_id = episode_id
        result.instruction = record.instruction
        if reason == Goal.TERMINATION_ABORTED:
            # Appendix F: the operator ends or takes over an episode; what the robot did
            # then is not the policy's doing, so it is recorded (marked) and never learned
            outcome = "intervened" if record.intervened else "aborted"
            self.diag.count(f"episodes.{outcome}_not_learned")
            self.publish_event(
                event="stop", episode_id=episode_id, success=False,
                length=len(record.commands), outcome=outcome,
            )
            result.length = len(record.commands)
            result.termination_reason = reason
            result.policy_version = min(
                (c.policy_version for c in record.commands), default=self.policy_version
            )
            if record.intervened:
                result.termination_detail = "operator intervened: recorded, not learned"
                handle.succeed()
            else:
                result.termination_detail = "cancelled by the operator: recorded, not learned"
                handle.canceled()
            return
        episode = self._label(record, reason)
        reason = episode.termination_reason  # a success found while labelling ends it earlier
        if episode.length:
            sign(episode, self.fleet_key)
            self.keep_until_acknowledged(episode)
            self.episode_pub.publish(episode)
            self.diag.count("episodes.sent")
        else:
            self.diag.count("episodes.empty_not_sent")  # nothing to learn from
        self.publish_event(
            event="stop",
            episode_id=episode_id,
            success=bool(episode.success),
            length=int(episode.length),
            outcome="success" if episode.success else "max_steps",
        )
        result.success = episode.success
        result.length = episode.length
        result.episode_return = float(np.sum(episode.rewards))
        result.termination_reason = reason
        result.policy_version = episode.policy_version
        handle.succeed()

    def _wait_for_listeners(self) -> None:
        """Block until every node of ``episode.wait_for_nodes`` subscribes episode/events."""
        deadline = time.monotonic() + self.call_timeout
        topic = self.events_pub.topic_name
        while True:
            listening = {i.node_name for i in self.get_subscriptions_info_by_topic(topic)}
            missing = [n for n in self.wait_for_nodes if n and n not in listening]
            if not missing:
                return
            if time.monotonic() > deadline or self.shutting_down:
                raise RuntimeError(f"{missing} not listening on {topic}")
            time.sleep(0.05)

    def publish_event(self, **event) -> None:
        """An ``episode/events`` message, checked by the parser its readers use."""
        text = json.dumps(event)
        parse_episode_event(text)
        self.events_pub.publish(String(data=text))

    def _wait_for_end(self, handle, max_steps: int) -> int:
        """Block (on this worker thread) until success, the step limit or cancel."""
        sent, sent_at = -1, -float("inf")
        with self.changed:
            while True:
                record = self.record
                if self.shutting_down:
                    raise RuntimeError("actor shutting down")
                if handle.is_cancel_requested or record.intervened:
                    return Goal.TERMINATION_ABORTED
                if record.success:
                    return Goal.TERMINATION_SUCCESS
                if len(record.commands) >= max_steps:
                    return Goal.TERMINATION_MAX_STEPS
                quiet = time.monotonic() - max(record.started, record.last_observation)
                if self.stall_timeout and quiet > self.stall_timeout:
                    raise RuntimeError(
                        f"no observation for {quiet:.1f} s ({len(record.commands)} actions): "
                        "the station stalled; the episode is dropped, not learned from"
                    )
                if (
                    self.episode_timeout
                    and time.monotonic() - record.started > self.episode_timeout
                ):
                    raise RuntimeError(
                        f"no episode end after {self.episode_timeout:.0f} s "
                        f"({len(record.commands)} actions): is the policy acting?"
                    )
                now = time.monotonic()
                if len(record.commands) != sent and now - sent_at >= self.feedback_period:
                    sent, sent_at = len(record.commands), now
                    feedback = RunEpisode.Feedback(
                        step=sent,
                        expected_steps_to_go=(
                            record.latest_d if np.isfinite(record.latest_d) else -1.0
                        ),
                    )
                    if record.commands:
                        feedback.latest_action = list(record.commands[-1].values)
                    handle.publish_feedback(feedback)
                self.changed.wait(timeout=0.1)

    def _finish_record(self, max_steps: int) -> EpisodeRecord:
        """Stop recording once the observation after the last action has arrived.

        Actions the policy sent past the step limit (it acts until the instruction is
        cleared) are not part of the episode: an episode has at most ``max_steps``."""
        deadline = time.monotonic() + self.final_wait
        with self.changed:
            record = self.record
            while record.observation_after_last_command() is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.changed.wait(timeout=remaining)
            self.record = None  # no more actions are added (they arrive while waiting)
        if len(record.commands) > max_steps:
            # the observation after action max_steps is the one action max_steps+1 answered
            del record.commands[max_steps:]
            self.diag.count("episodes.actions_past_step_limit")
        if record.commands and record.observation_after_last_command() is None:
            # No fresh observation came: the last action's outcome is unknown, drop it.
            record.commands.pop()
            self.diag.count("episodes.final_observation_missing")
        return record

    def _label(self, record: EpisodeRecord, reason: int) -> LabelledEpisode:
        """Steps-to-go for o_0..o_T, rewards and returns (Eq. 2, Algorithm 1).

        The episode ends at the first observation (after ``success.min_steps`` actions)
        where the detector fires, d <= s (Eq. 3, Algorithm 1), held on
        ``success.consecutive`` observations in a row. The continuous predictions
        stop the robot early, but they are best effort: a reward model slower than the
        control loop skips observations and can miss a brief d <= s. So the service's
        labels of every observation decide, and the episode is cut where it should have
        ended (the later steps are not learned from, as in the in-process loop).
        """
        obs = record.commanded_observations()
        final = record.observation_after_last_command()
        if final is None and record.observations:
            final = next(reversed(record.observations.values()))
        if final is None:
            raise RuntimeError("no observation was received during the episode")
        scored = [*obs, final]
        for o in scored:
            o.instruction = record.instruction
        labels = [
            self._steps_to_go(scored[i : i + self.label_batch], record)
            for i in range(0, len(scored), self.label_batch)
        ]
        d = np.concatenate([x[0] for x in labels])
        fired = held_for(np.concatenate([x[1] for x in labels]), self.consecutive)
        fired[: max(1, self.min_steps)] = False
        if reason != Goal.TERMINATION_ABORTED and fired.any():
            end = int(np.argmax(fired))
            if end < len(obs) or reason != Goal.TERMINATION_SUCCESS:
                if end < len(obs):
                    self.diag.count("episodes.cut_at_labelled_success")
                reason = Goal.TERMINATION_SUCCESS
                obs, d = obs[:end], d[: end + 1]
                record.commands = record.commands[:end]
        succeeded = reason == Goal.TERMINATION_SUCCESS
        rewards = rewards_from_steps_to_go(d, self.success_bonus, succeeded)
        returns = discounted_returns(rewards, self.gamma)
        tokens = [list(c.action_tokens) for c in record.commands]
        tokens_per_action = len(tokens[0]) if tokens else 0
        if any(len(t) != tokens_per_action for t in tokens):
            raise RuntimeError("the policy changed its action tokenization mid-episode")
        values = [list(c.values) for c in record.commands]
        if not self.send_previous:  # labelled above with them; the learner's copy without
            for o in obs:
                o.previous_images = []
        episode = LabelledEpisode(
            episode_id=record.episode_id,
            station=self.station,
            policy_version=min((c.policy_version for c in record.commands), default=0),
            instruction=record.instruction,
            length=len(record.commands),
            observations=obs,
            tokens_per_action=tokens_per_action,
            action_tokens=[int(t) for row in tokens for t in row],
            action_dim=len(values[0]) if values else 0,
            actions=[float(v) for row in values for v in row],
            steps_to_go=d.astype(np.float32).tolist(),
            rewards=rewards.astype(np.float32).tolist(),
            returns=returns.astype(np.float32).tolist(),
            gamma=float(self.gamma),
            success=succeeded,
            termination_reason=reason,
        )
        episode.header.stamp = self.get_clock().now().to_msg()
        return episode

    def _steps_to_go(
        self, observations: list[Observation], record: EpisodeRecord
    ) -> tuple[np.ndarray, np.ndarray]:
        """(d, detector fired) for a batch, waiting and retrying while the service is down."""
        while rclpy.ok(context=self.context) and not self.shutting_down:
            try:
                response = self.call(
                    self.label_client,
                    StepsToGo.Request(observations=observations, instruction=record.instruction),
                )
            except TimeoutError as error:
                self.diag.reject("labelling", f"{error}; retrying")
                time.sleep(self.retry_s)
                continue
            if not response.ok:
                raise RuntimeError(f"steps_to_go refused the episode: {response.message}")
            d = np.array([p.expected_steps for p in response.predictions], dtype=np.float64)
            if d.shape != (len(observations),) or not np.all(np.isfinite(d)):
                raise RuntimeError("steps_to_go returned a malformed labelling")
            return d, np.array([bool(p.success) for p in response.predictions])
        raise RuntimeError("shutting down before the episode was labelled")

    def call(self, client, request):
        """Call a service from a worker thread; TimeoutError if it is down or slow."""
        if not client.wait_for_service(timeout_sec=self.call_timeout):
            raise TimeoutError(f"service {client.srv_name} is not available")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        deadline = time.monotonic() + self.call_timeout
        while not done.wait(0.1):  # in slices: a shutdown must not wait for the timeout
            if self.shutting_down or time.monotonic() > deadline:
                client.remove_pending_request(future)
                if self.shutting_down:
                    raise RuntimeError(f"shutting down while calling {client.srv_name}")
                raise TimeoutError(f"service {client.srv_name} did not answer")
        return future.result()


    def destroy_node(self) -> None:
        self.stream.destroy()
        super().destroy_node()


def _stop_episode(node: ActorNode) -> None:
    """End a running episode's wait loop before the node goes away."""
    node.shutting_down = True
    time.sleep(0.3)


ENTRY = NodeEntry(ActorNode, threads=4, on_shutdown=_stop_episode)


def main(args: list[str] | None = None) -> None:
    run_node(ENTRY, args)


if __name__ == "__main__":
    main()
