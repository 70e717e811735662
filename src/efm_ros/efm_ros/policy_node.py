"""``policy``: the EFM policy on a robot station (paper Appendix J).

Modes (``mode`` parameter):
* ``local`` — infrastructure v2 (J.2): inference on the robot computer. Subscribes
  ``observation``, publishes ``action_command`` through the embodiment adapter and the
  safety layer; hot-swaps weights on ``weights`` (WeightsUpdate) without missing a tick.
* ``remote_server`` — infrastructure v1 (J.1): serves ``get_action`` (GetAction) for
  stations; publishes nothing itself.
* ``remote_client`` — a station that asks a ``remote_server`` for each action, with the
  same safety layer and watchdog as ``local``.

Safety: actions are clipped to the embodiment's limits and to ``safety.max_change_per_tick``;
when the newest observation's *stamp* is older than ``safety.observation_timeout_s`` (or
that far in the future) the node publishes a hold command instead of motion, and it acts on
each observation at most once; ``safety.dry_run`` computes actions but never publishes.
``control.trigger``: ``timer`` acts at ``control.rate_hz`` on the newest fresh observation
(a real robot); ``observation`` acts once per new observation (lockstep experiments).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String, UInt64

from efm_interfaces.msg import ActionCommand, Observation, WeightsUpdate
from efm_interfaces.srv import GetAction
from efm_ros.conversions import observation_arrays, stamp_ns
from efm_ros.diagnostics import Diagnostics
from efm_ros.embodiments import EMBODIMENTS, get_embodiment
from efm_ros.fleet_auth import declare_fleet_key, verify
from efm_ros.model_host import (
    LoadedModel,
    ModelHost,
    checkpoint_path,
    declare_compute,
    load_verified,
    model_input,
)
from efm_ros.params import Parameters
from efm_ros.qos import LATCHED, RELIABLE, SENSOR
from efm_ros.safety import SafetyLimits, Watchdog
from efm_ros.spin import NodeEntry, run_node
from efm_ros.weights_transfer import WeightsFetcher, service_of

MODES = ("local", "remote_server", "remote_client")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PolicyNode(Node):
    """Turns observations into safe action commands with the current policy weights."""

    def __init__(self, **kwargs) -> None:
        super().__init__("policy", **kwargs)
        p = Parameters(self)
        self.mode = p.declare(
            "mode", "local", "local | remote_server | remote_client.", read_only=True, choices=MODES
        )
        self.embodiment = get_embodiment(
            p.declare(
                "embodiment",
                "pushtable",
                "Embodiment adapter.",
                read_only=True,
                choices=tuple(sorted(EMBODIMENTS)),
            )
        )
        checkpoint = p.declare(
            "model.checkpoint",
            "",
            "Policy checkpoint directory (local, remote_server).",
            read_only=True,
        )
        compute = declare_compute(p, heads=("policy",))
        sha = p.declare("model.sha256", "", "Expected sha256 of model.safetensors.", read_only=True)
        version = p.declare(
            "model.version", 0, "Version of model.checkpoint.", read_only=True, min_value=0
        )
        self.greedy = p.declare("policy.greedy", False, "Most likely action instead of sampling.")
        self.default_instruction = p.declare(
            "policy.instruction",
            "",
            "Instruction used when neither the observation nor the "
            "instruction topic gives one ('' = hold until one arrives).",
        )
        self.trigger = p.declare(
            "control.trigger",
            "timer",
            "timer | observation.",
            read_only=True,
            choices=("timer", "observation"),
        )
        rate = p.declare(
            "control.rate_hz",
            5.0,
            "Control rate for trigger=timer [Hz].",
            read_only=True,
            min_value=0.1,
            max_value=1000.0,
        )
        max_change = p.declare(
            "safety.max_change_per_tick",
            0.0,
            "Largest change of any dof between consecutive actions (0 = off) [command units].",
            min_value=0.0,
            on_change=self._set_max_change,
        )
        timeout = p.declare(
            "safety.observation_timeout_s",
            0.5,
            "Hold when the newest observation's stamp is older (or newer) than this by more [s].",
            min_value=0.0,
            on_change=lambda v: setattr(self.watchdog, "timeout_s", v),
        )
        self.dry_run = p.declare("safety.dry_run", False, "Compute actions, never publish.")
        service = p.declare(
            "remote.service",
            "get_action",
            "GetAction service of the remote policy (remote_client).",
            read_only=True,
        )

        allowed = p.declare(
            "weights.allowed_dir",
            "",
            "Weight updates may only load checkpoints inside this directory (the learner's "
            "policy/ folder; '' = anywhere, with a warning).",
            read_only=True,
        )
        self.allowed_dir = Path(allowed).resolve() if allowed else None
        cache = p.declare(
            "weights.cache_dir",
            "~/.cache/efm/weights",
            "Where checkpoints served by the learner over ROS 2 (ros:// uris) are downloaded "
            "to, one folder per station namespace and version.",
            read_only=True,
        )
        station = self.get_namespace().strip("/").replace("/", "_") or "default"
        self.fetcher = WeightsFetcher(self, Path(cache).expanduser() / station)
        self.fleet_key = declare_fleet_key(p, self.get_logger())
        if self.allowed_dir is None and self.mode != "remote_client":
            self.get_logger().warning(
                "weights.allowed_dir is empty: a weight update may name any local checkpoint"
            )

        self.diag = Diagnostics(self)
        self.safety = SafetyLimits(self.embodiment, max_change)
        self.watchdog = Watchdog(timeout)
        self.host: ModelHost | None = None
        if self.mode != "remote_client":
            if not checkpoint:
                raise ValueError(f"model.checkpoint is required in mode {self.mode}")
            self.host = ModelHost(load_verified(checkpoint, version, sha, compute), compute,
                                  fetch=self.fetcher.fetch)
        self.latest: Observation | None = None
        self.acted_on_step: tuple[str, int, int] | None = None
        self.topic_instruction = ""
        self.holding = False
        self.pending_remote = None

        self.command_pub = self.create_publisher(ActionCommand, "action_command", RELIABLE)
        self.version_pub = self.create_publisher(UInt64, "policy/version", LATCHED)
        self.create_subscription(Observation, "observation", self.on_observation, SENSOR)
        self.create_subscription(String, "instruction", self.on_instruction, LATCHED)
        self.create_subscription(WeightsUpdate, "weights", self.on_weights, LATCHED)
        if self.mode == "remote_server":
            self.create_service(
                GetAction,
                "get_action",
                self.on_get_action,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        else:
            if self.mode == "remote_client":
                self.remote = self.create_client(GetAction, service)
            self.control_period = 1.0 / rate
            if self.trigger == "timer":
                self.create_timer(self.control_period, self.on_tick)
            else:  # lockstep: act on each new observation, watchdog still on a timer
                self.create_timer(max(timeout, 0.05), self.on_watchdog)
        self._publish_version()
        self.get_logger().info(
            f"policy ready: mode={self.mode} embodiment={self.embodiment.name} "
            f"version={self.version} dry_run={self.dry_run}"
        )

    # -- inputs ---------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.host.current().version if self.host else -1

    def _set_max_change(self, value: float) -> None:
        self.safety.max_change_per_tick = value

    def on_instruction(self, msg: String) -> None:
        self.topic_instruction = msg.data.strip()

    def now_s(self) -> float:
        """ROS time [s]: the clock observation stamps are compared with."""
        return self.get_clock().now().nanoseconds * 1e-9

    def on_observation(self, msg: Observation) -> None:
        if self.mode == "remote_server":
            return  # a server answers GetAction requests, not this station topic
        stamp = stamp_ns(msg) * 1e-9
        if stamp - self.now_s() > self.watchdog.timeout_s:
            # not kept as the newest: it would make every true frame look out of order
            self.diag.reject("observation", "stamp in the future (clocks not synchronised?)")
            self.hold("observation stamped in the future")
            return
        if self.watchdog.last_stamp is not None and stamp < self.watchdog.last_stamp:
            self.diag.reject("observation", "stamp older than the newest observation")
            return
        self.latest = msg
        self.watchdog.feed(stamp)
        if self.trigger == "observation":
            self.on_tick()

    def on_weights(self, msg: WeightsUpdate) -> None:
        if self.host is None:
            return  # remote_client: the server owns the weights
        problem = verify(msg, self.fleet_key)
        if not problem and not SHA256.match(msg.sha256):
            problem = f"sha256 {msg.sha256!r} is not 64 lowercase hex digits"
        elif not problem and not msg.uri:
            problem = "empty uri"
        if not problem and msg.version <= self.version:
            self.diag.count("weights.stale_ignored")
            return
        problem = problem or self.outside_allowed_dir(msg.uri)
        if problem:
            self.diag.reject("weights", problem)
            return

        def done(loaded: LoadedModel | None, error: str) -> None:
            if loaded is None:
                self.diag.reject("weights", f"version {msg.version}: {error}")
                return
            self.diag.count("weights.swapped")
            self.get_logger().info(f"now acting with policy version {loaded.version}")
            self._publish_version()

        if not self.host.swap_async(msg.uri, int(msg.version), msg.sha256, done,
                                    msg.config_sha256):
            self.diag.count("weights.deferred_busy")

    def outside_allowed_dir(self, uri: str) -> str:
        """Why ``uri`` may not be loaded ('' if it may). A ``ros://`` checkpoint is fetched
        into this node's own cache and checked against the message's digests."""
        try:
            if service_of(uri) is not None:
                return ""
        except ValueError as error:
            return str(error)
        if self.allowed_dir is None:
            return ""
        try:
            path = checkpoint_path(uri).resolve()
        except ValueError as error:
            return str(error)
        if not path.is_relative_to(self.allowed_dir):
            return f"{path} is outside weights.allowed_dir {self.allowed_dir}"
        return ""

    def _publish_version(self) -> None:
        self.version_pub.publish(UInt64(data=max(self.version, 0)))

    # -- acting ---------------------------------------------------------------------------
    def instruction_for(self, msg: Observation) -> str:
        return msg.instruction.strip() or self.topic_instruction or self.default_instruction

    def infer(self, msg: Observation, greedy: bool) -> tuple[np.ndarray, np.ndarray, int]:
        """(tokens (K,), chunk (n, dof), version) for one observation; raises ValueError."""
        instruction = self.instruction_for(msg)
        if not instruction:
            raise ValueError(
                "no instruction (observation, instruction topic and "
                "policy.instruction are all empty)"
            )
        loaded = self.host.current()
        arrays = observation_arrays(msg)
        tokens, actions = loaded.model.act(model_input([arrays], instruction), greedy=greedy)
        chunk = np.asarray(actions[0], dtype=np.float64).reshape(-1, self.embodiment.dof)
        return tokens[0], chunk, loaded.version

    def on_tick(self) -> None:
        msg = self.latest
        if msg is None or not self.watchdog.fresh(self.now_s()):
            self.hold(self.stale_reason())
            return
        key = (msg.station, msg.step, stamp_ns(msg))
        if key == self.acted_on_step:
            # Each observation is answered once, in both triggers: re-acting on one frame
            # (a timer faster than the camera, a frozen camera) would move the robot on
            # input the actor cannot pair with an action (issue 17, defect 3).
            self.diag.count("ticks.no_new_observation")
            return
        self.acted_on_step = key
        if not self.instruction_for(msg):
            self.hold("no instruction: no task to act on")  # between episodes, not an error
            return
        if self.mode == "remote_client":
            self.ask_remote(msg)
            return
        try:
            tokens, chunk, version = self.infer(msg, self.greedy)
        except ValueError as error:
            self.diag.reject("observation", str(error))
            self.hold("cannot act")
            return
        self.send(msg, chunk, version, list(np.asarray(tokens).ravel()))

    def on_watchdog(self) -> None:
        if not self.watchdog.fresh(self.now_s()):
            self.hold(self.stale_reason())

    def stale_reason(self) -> str:
        if self.latest is None:
            return "no observation yet"
        return f"stale observation (stamp {self.watchdog.age(self.now_s()):+.3f} s old)"

    def send(
        self,
        msg: Observation,
        chunk: np.ndarray,
        version: int,
        sampled: list[int] | None = None,
    ) -> None:
        """Limit, tokenize and publish one action with the tokens the learner will credit.

        ``sampled``: the policy's own tokens (local) or the server's (remote_client,
        Appendix J.1; issue 17, defect 1). When the safety layer let the action through
        unchanged they are sent as sampled: re-encoding the executed values is not the
        identity (LanguageTable's (sign, magnitude 0) decodes to 0 whatever the sign, and
        0 encodes to one sign only), and REINFORCE on re-encoded tokens pushed every sign
        token one way, which made practice over ROS worse while the same run in-process
        improved. When the safety layer changed the action, local mode encodes the executed
        values (``actions.retokenized``); remote_client has no tokenizer and sends the
        server's (``remote.limited_after_tokenizing``)."""
        try:
            safe = self.safety.limit(chunk)
        except ValueError as error:
            self.diag.reject("action", str(error))
            self.hold("unsafe action")
            return
        command = ActionCommand(
            station=msg.station,
            step=msg.step,
            policy_version=max(version, 0),
            names=list(self.embodiment.action_names),
            chunk_length=safe.shape[0],
            values=safe.astype(np.float32).ravel().tolist(),
            period_s=self.embodiment.period_s,
        )
        unchanged = np.allclose(safe, chunk, atol=1e-6)
        if sampled is not None and (unchanged or self.host is None):
            command.action_tokens = [int(t) for t in sampled]
            if not unchanged:
                self.diag.count("remote.limited_after_tokenizing")
        elif self.host is not None:
            tokens = self.host.current().model.encode_actions(
                safe.reshape(1, *self._action_shape()).astype(np.float32)
            )
            command.action_tokens = np.asarray(tokens).ravel().astype(np.uint16).tolist()
            self.diag.count("actions.retokenized")
        command.header.stamp = msg.header.stamp  # pairs the action with its observation
        command.header.frame_id = msg.header.frame_id
        self.holding = False
        self.diag.count("actions")
        if self.dry_run:
            self.diag.count("dry_run.suppressed")
            return
        self.command_pub.publish(command)

    def _action_shape(self) -> tuple[int, ...]:
        return tuple(self.host.current().model.action_tokenizer.action_shape)

    def hold(self, reason: str) -> None:
        """Publish a hold command (once per stale period) and forget rate-limit history."""
        self.safety.reset()
        if self.holding:
            return
        self.holding = True
        self.diag.count("watchdog.holds")
        self.get_logger().warning(f"holding: {reason}", throttle_duration_sec=2.0)
        if self.dry_run:
            return
        command = ActionCommand(
            hold=True, names=list(self.embodiment.action_names), policy_version=max(self.version, 0)
        )
        command.header.stamp = self.get_clock().now().to_msg()
        self.command_pub.publish(command)

    # -- remote policy (Appendix J.1) -----------------------------------------------------
    def ask_remote(self, msg: Observation) -> None:
        if self.pending_remote is not None and not self.pending_remote.done():
            self.diag.count("remote.busy_skipped")
            return
        if not self.remote.service_is_ready():
            self.diag.reject("remote", "policy service not available")
            self.hold("remote policy unavailable")
            return
        instruction = self.instruction_for(msg)
        if not instruction:
            self.diag.reject("observation", "no instruction to send to the remote policy")
            self.hold("no instruction")
            return
        msg.instruction = instruction  # the station's goal travels with its observation
        future = self.remote.call_async(GetAction.Request(observation=msg, greedy=self.greedy))
        future.add_done_callback(lambda f: self.on_remote_answer(msg, f))
        self.pending_remote = future

    def on_remote_answer(self, msg: Observation, future) -> None:
        response = future.result()
        if response is None or not response.ok:
            self.diag.reject("remote", response.message if response else "no response")
            self.hold("remote policy refused")
            return
        if not self.watchdog.fresh(self.now_s()):
            self.hold("answer arrived after the observation went stale")
            return
        try:
            chunk = self.embodiment.command_values(response.command)
        except ValueError as error:
            self.diag.reject("remote", str(error))
            self.hold("bad remote command")
            return
        if not response.action_tokens:
            self.diag.reject("remote", "answer without action_tokens: nothing to learn from")
            self.hold("remote answer without action tokens")
            return
        self.send(msg, chunk, int(response.command.policy_version), list(response.action_tokens))

    def on_get_action(self, request: GetAction.Request, response: GetAction.Response):
        try:
            tokens, chunk, version = self.infer(request.observation, request.greedy)
            safe = self.embodiment.clip(chunk)
        except ValueError as error:
            self.diag.reject("observation", str(error))
            response.ok, response.message = False, str(error)
            return response
        response.ok = True
        response.action_tokens = np.asarray(tokens).astype(np.uint16).tolist()
        response.command = ActionCommand(
            station=request.observation.station,
            step=request.observation.step,
            policy_version=version,
            names=list(self.embodiment.action_names),
            chunk_length=safe.shape[0],
            values=safe.astype(np.float32).ravel().tolist(),
            period_s=self.embodiment.period_s,
        )
        self.diag.count("served")
        return response


def _finish_weight_load(node: PolicyNode) -> None:
    """Let a weight update being loaded finish before the teardown (ModelHost.finish)."""
    if node.host is not None and not node.host.finish():
        node.get_logger().warning("a weight update was still loading at shutdown")


#: two threads only as a remote_server (GetAction in its own callback group); acting on
#: local observations needs one, which spins far cheaper (docs/ROS.md, throughput)
ENTRY = NodeEntry(PolicyNode, threads=lambda node: 2 if node.mode == "remote_server" else 1,
                  on_shutdown=_finish_weight_load)


def main(args: list[str] | None = None) -> None:
    run_node(ENTRY, args)


if __name__ == "__main__":
    main()
