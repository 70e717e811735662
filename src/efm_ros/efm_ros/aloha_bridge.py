"""aloha_bridge: efm's ALOHA station <-> the Interbotix xs_sdk of two follower arms, with
hardware safety (issue 15, item 1). Dry-run by default.

In: ``/<follower>/joint_states`` of both followers -> the station's ``joint_states`` (the
14 values of the paper's ALOHA state, Appendix D.3: 6 joints [rad] + gripper normalised
0 closed .. 1 open, per arm) for camera_ingest. Cameras go to camera_ingest directly
(``cameras.topics``: ``/cam_high/camera/color/image_rect_raw`` ...); the bridge only
watches their stamps when ``safety.camera_topics`` names them.

Out: each ``action_command`` chunk (ActionCommand: the ALOHA joint names, ``chunk_length``
steps of 14 values in the same units, ``period_s`` apart: 5 x 0.1 s from the 10 Hz
policy) is executed at 50 Hz on ``commands/joint_group`` (``arm``) and
``commands/joint_single`` (``gripper``, converted to the gripper motor's position),
interpolated linearly between chunk steps.

Safety, every 50 Hz tick, configured per joint (a deployment YAML is the robot's
calibration: ``config/aloha_station.yaml``):

* position limits: targets beyond ``joints.lower`` / ``joints.upper`` are clipped, counted;
* rate limits: at most ``joints.max_velocity`` x dt per tick and a change of that step of
  at most ``joints.max_acceleration`` x dt^2 per tick;
* hold on stale input: no joint_states from a follower (or camera frame) for
  ``safety.stale_s`` -> hold at the measured position, within one tick; the same when the
  e-stop / deadman heartbeat (``safety.heartbeat_topic``, std_msgs/Bool true) stops or
  turns false;
* refused, counted: chunks with the wrong names or length, NaN/inf, joint_states with
  unknown or missing joint names;
* ``safety.dry_run`` (default true): commands are computed, published on ``~/dry_run/...``
  and never sent to the arms; with motion enabled the bridge torques the arms on at start
  and moves them to the sleep pose the driver reports when it stops.

Teleoperation (issue 15, item 4; ALOHA's leader -> follower puppeteering): with
``teleop.leaders`` set, the leaders' ``joint_states`` (arms moved by hand, torque off)
become follower targets, the leader gripper joint mapped through its open / closed
calibration to the follower's. ``teleop.mode: always`` records demonstrations (policy
chunks are refused, counted); ``intervention`` hands the arms to the leaders while the
station's ``operator/intervention`` is true (the actor then ends the episode, which is
never learned) and back to the policy when it turns false. Leader targets pass the same
limits, rate bounds and stale-input holds as the policy's (a stale leader holds too).
Reset (ResetStation ``reset``, what the actor calls before each episode; a real station has
no simulator to reset): the followers move to ``reset.pose`` under the same limits and
rate bounds, policy chunks are refused meanwhile, and the call answers when every joint is
within ``reset.tolerance_rad`` (measured; in dry-run, commanded) or fails after
``reset.timeout_s``. The scene itself (peg, socket) is the operator's: with the
coordinator's ``station.require_reset`` the operator confirms it before the next episode.
In simulation ``reset.scene_service`` names a std_srvs/Trigger that draws a new scene
first (interbotix_sim's ``reset_scene``); the arms then start from where that left them.
Every tick's command is published on ``executed_action`` (JointState, the 14 ALOHA
values) for recording, with ``teleop/active`` (latched Bool) saying who drives.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import RobotInfo, TorqueEnable
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from efm_interfaces.msg import ActionCommand
from efm_interfaces.srv import ResetStation
from efm_ros.diagnostics import Diagnostics
from efm_ros.embodiments import ALOHA_JOINTS, get_embodiment
from efm_ros.interbotix_sim import (
    GRIPPER_MOTOR_CLOSE,
    GRIPPER_MOTOR_OPEN,
    LEADER_GRIPPER_CLOSE,
    LEADER_GRIPPER_OPEN,
)
from efm_ros.params import Parameters
from efm_ros.qos import LATCHED, RELIABLE, SENSOR
from efm_ros.spin import NodeEntry, run_node
from efm_sim.aloha_layout import ARM_HIGH, ARM_JOINTS, ARM_LOW, normalize_gripper

DT = 0.02  # the ALOHA driver's 50 Hz
#: episode start: each arm at ACT's start pose (waist .. wrist_rotate [rad]), gripper open
RESET_POSE = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 1.0) * 2
#: vx300s joint limits [rad], per arm: waist .. wrist_rotate (efm_sim.aloha_layout)
VX300S_LOWER, VX300S_UPPER = list(ARM_LOW), list(ARM_HIGH)


class AlohaBridgeNode(Node):
    """Executes 10 Hz action chunks at 50 Hz on two Interbotix followers, safely."""

    def __init__(self, **kwargs) -> None:
        super().__init__("aloha_bridge", **kwargs)
        p = Parameters(self)
        self.followers = p.declare("driver.followers", ["follower_left", "follower_right"],
                                   "Namespaces of the two follower arms (left, right).",
                                   read_only=True)
        lower = p.declare("joints.lower", VX300S_LOWER * 2, "Lower joint limits, 12 values "
                          "(left arm, right arm) [rad].", read_only=True)
        upper = p.declare("joints.upper", VX300S_UPPER * 2, "Upper joint limits [rad].",
                          read_only=True)
        velocity = p.declare("joints.max_velocity", [1.0] * 12, "Largest joint speed "
                             "[rad/s] (per tick: x 0.02 s).", read_only=True)
        accel = p.declare("joints.max_acceleration", [10.0] * 12, "Largest joint "
                          "acceleration [rad/s^2].", read_only=True)
        self.gripper_open = p.declare("gripper.motor_open", GRIPPER_MOTOR_OPEN,
                                      "Gripper motor position, fingers open [rad].",
                                      read_only=True)
        self.gripper_close = p.declare("gripper.motor_close", GRIPPER_MOTOR_CLOSE,
                                       "Gripper motor position, fingers closed [rad].",
                                       read_only=True)
        self.dry_run = p.declare("safety.dry_run", True, "Compute and publish commands on "
                                 "~/dry_run/* only; false sends them to the arms.",
                                 read_only=True)
        self.stale_s = p.declare("safety.stale_s", 0.03, "Hold when a follower's "
                                 "joint_states (or a watched camera) is older [s].",
                                 min_value=0.005, max_value=5.0)
        heartbeat = p.declare("safety.heartbeat_topic", "", "std_msgs/Bool e-stop/deadman "
                              "topic; must stay true and fresh ('' = none).", read_only=True)
        self.heartbeat_s = p.declare("safety.heartbeat_timeout_s", 0.2,
                                     "Hold when the heartbeat is older [s].", min_value=0.01)
        cameras = p.declare("safety.camera_topics", [""], "Camera topics whose frames must "
                            "stay fresh ([''] = none).", read_only=True)
        leaders = p.declare("teleop.leaders", [""], "Namespaces of the two leader arms "
                            "(left, right) ([''] = no teleoperation).", read_only=True)
        self.teleop_mode = p.declare(
            "teleop.mode", "intervention", "'always': the leaders drive (recording "
            "demonstrations); 'intervention': only while operator/intervention is true.",
            read_only=True,
            validator=lambda v: None if v in ("always", "intervention") else
            "teleop.mode must be 'always' or 'intervention'")
        self.leader_open = p.declare("teleop.leader_gripper_open", LEADER_GRIPPER_OPEN,
                                     "Leader gripper joint at open fingers [rad].",
                                     read_only=True)
        self.reset_pose = np.asarray(p.declare(
            "reset.pose", list(RESET_POSE), "Start pose of an episode: 14 values (6 joints "
            "[rad] + gripper 0 closed..1 open, left arm first).", read_only=True), float)
        self.reset_tolerance = p.declare("reset.tolerance_rad", 0.02, "A reset is done when "
                                         "every joint is this close [rad].", min_value=1e-4)
        self.reset_timeout = p.declare("reset.timeout_s", 20.0, "A reset not done after "
                                       "this long fails [s].", min_value=0.1)
        self.reset_instruction = p.declare("reset.instruction", "insert the peg into the "
                                           "socket", "Instruction when a reset names none.")
        self.reset_family = p.declare("reset.task_family", "insertion",
                                      "The station's one task family.", read_only=True)
        scene = p.declare("reset.scene_service", "", "std_srvs/Trigger called first on each "
                          "reset to draw a new scene (simulation: interbotix_sim's "
                          "reset_scene); '' = the operator resets the scene.", read_only=True)
        self.leader_close = p.declare("teleop.leader_gripper_close", LEADER_GRIPPER_CLOSE,
                                      "Leader gripper joint at closed fingers [rad].",
                                      read_only=True)
        for name, values in (("joints.lower", lower), ("joints.upper", upper),
                             ("joints.max_velocity", velocity),
                             ("joints.max_acceleration", accel)):
            if len(values) != 12:
                raise ValueError(f"{name} needs 12 values (6 per arm), got {len(values)}")
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        if np.any(self.lower >= self.upper):
            raise ValueError("joints.lower must be below joints.upper")
        self.max_step = np.asarray(velocity, float) * DT
        self.max_change = np.asarray(accel, float) * DT * DT
        self.embodiment = get_embodiment("aloha")
        self.diag = Diagnostics(self)
        self.lock = threading.Lock()
        self.measured: dict[str, np.ndarray] = {}  # 6 joints + normalised gripper
        self.seen: dict[str, float] = {}  # monotonic receipt times
        self.plan: deque[np.ndarray] = deque()  # per-tick 14-value targets
        self.sent: np.ndarray | None = None  # last commanded 14 values
        self.step: np.ndarray = np.zeros(12)  # last per-tick change of the arm joints
        self.hold_reason = "no joint_states yet"
        self.hold_since = time.monotonic()
        self.leaders = [name for name in leaders if name]
        if self.leaders and len(self.leaders) != len(self.followers):
            raise ValueError(f"teleop.leaders needs {len(self.followers)} names (left, "
                             f"right), got {self.leaders}")
        if self.leaders and self.leader_open == self.leader_close:
            raise ValueError("teleop.leader_gripper_open must differ from _close")
        self.leader: dict[str, np.ndarray] = {}  # 6 joints + normalised gripper
        self.intervening = False
        if self.reset_pose.shape != (14,) or not np.all(np.isfinite(self.reset_pose)):
            raise ValueError("reset.pose needs 14 finite values")
        self.resetting: tuple[Future, float] | None = None  # (done, deadline)

        self.station_pub = self.create_publisher(JointState, "joint_states", SENSOR)
        self.group_pubs, self.single_pubs = {}, {}
        for arm in self.followers:
            prefix = f"~/dry_run/{arm}" if self.dry_run else f"/{arm}"
            self.group_pubs[arm] = self.create_publisher(
                JointGroupCommand, f"{prefix}/commands/joint_group", RELIABLE)
            self.single_pubs[arm] = self.create_publisher(
                JointSingleCommand, f"{prefix}/commands/joint_single", RELIABLE)
            self.create_subscription(JointState, f"/{arm}/joint_states",
                                     lambda m, a=arm: self.on_joint_states(a, m), SENSOR)
        self.create_subscription(ActionCommand, "action_command", self.on_command, RELIABLE)
        self.executed_pub = self.create_publisher(JointState, "executed_action", RELIABLE)
        self.teleop_pub = self.create_publisher(Bool, "teleop/active", LATCHED)
        for arm in self.leaders:
            self.create_subscription(JointState, f"/{arm}/joint_states",
                                     lambda m, a=arm: self.on_leader(a, m), SENSOR)
        if self.leaders:
            self.create_subscription(Bool, "operator/intervention", self.on_intervention,
                                     RELIABLE)
        self.teleop_pub.publish(Bool(data=self.teleop_active))
        # its own group: the awaiting reset must not hold the 50 Hz timer's group; and the
        # scene client another one, as an awaiting coroutine holds its group until it ends
        self.create_service(ResetStation, "reset", self.on_reset,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.scene = self.create_client(Trigger, scene,
                                        callback_group=MutuallyExclusiveCallbackGroup()) \
            if scene else None
        self.heartbeat: tuple[float, bool] | None = None
        if heartbeat:
            self.create_subscription(Bool, heartbeat, self.on_heartbeat, RELIABLE)
        self.heartbeat_required = bool(heartbeat)
        self.cameras = [c for c in cameras if c]
        for topic in self.cameras:
            self.create_subscription(Image, topic, lambda _m, t=topic: self._saw(t), SENSOR)
        self.torque = {arm: self.create_client(TorqueEnable, f"/{arm}/torque_enable")
                       for arm in self.followers}
        self.info = {arm: self.create_client(RobotInfo, f"/{arm}/get_robot_info")
                     for arm in self.followers}
        self.sleep_pose: dict[str, np.ndarray] = {}
        self.timer = self.create_timer(DT, self.on_tick)
        if not self.dry_run:
            self.create_timer(0.5, self.prepare_arms)
        self.get_logger().info(
            f"aloha_bridge ready: followers {self.followers}, "
            + ("DRY RUN (nothing is sent to the arms)" if self.dry_run else "MOTION ENABLED"))

    # -- inputs ---------------------------------------------------------------------------
    def _saw(self, key: str) -> None:
        self.seen[key] = time.monotonic()

    def _arm_values(self, arm: str, msg: JointState, last: str, kind: str):
        """The 6 arm joints and ``last`` (finger or gripper joint) of a joint_states, or
        None (refused and counted under ``kind``) for missing names or NaN/inf."""
        names = list(msg.name)
        needed = [*ARM_JOINTS, last]
        if len(set(names)) != len(names) or any(n not in names for n in needed) or \
                len(msg.position) != len(names):
            self.diag.reject(kind, f"{arm}: names {names[:9]} lack {needed}")
            return None
        values = np.asarray(msg.position, dtype=np.float64)[[names.index(n) for n in needed]]
        if not np.all(np.isfinite(values)):
            self.diag.reject(kind, f"{arm}: NaN/inf position")
            return None
        return values

    def on_joint_states(self, arm: str, msg: JointState) -> None:
        values = self._arm_values(arm, msg, "left_finger", "joint_states")
        if values is None:
            return
        values[6] = float(normalize_gripper(values[6]))  # finger [m] -> 0..1
        with self.lock:
            self.measured[arm] = values
            self._saw(arm)
        if len(self.measured) == len(self.followers):
            out = JointState(name=list(ALOHA_JOINTS),
                             position=np.concatenate([self.measured[a] for a in
                                                      self.followers]).tolist())
            out.header.stamp = msg.header.stamp
            self.station_pub.publish(out)

    def on_leader(self, arm: str, msg: JointState) -> None:
        """A leader arm's pose -> 6 follower joint targets + normalised gripper."""
        values = self._arm_values(arm, msg, "gripper", "leader_joint_states")
        if values is None:
            return
        values[6] = np.clip((values[6] - self.leader_close)
                            / (self.leader_open - self.leader_close), 0.0, 1.0)
        with self.lock:
            self.leader[arm] = values
            self._saw(arm)

    @property
    def teleop_active(self) -> bool:
        return bool(self.leaders) and (self.teleop_mode == "always" or self.intervening)

    def on_intervention(self, msg: Bool) -> None:
        with self.lock:
            if bool(msg.data) == self.intervening:
                return
            self.intervening = bool(msg.data)
            self.plan.clear()  # neither source continues the other's motion
            self.step = np.zeros(12)
        self.get_logger().info("operator " + ("takes over: leaders drive" if msg.data
                                              else "hands back: the policy drives"))
        self.diag.count("interventions" if msg.data else "handbacks")
        self.teleop_pub.publish(Bool(data=self.teleop_active))

    def on_heartbeat(self, msg: Bool) -> None:
        self.heartbeat = (time.monotonic(), bool(msg.data))

    def on_command(self, msg: ActionCommand) -> None:
        try:
            chunk = self.embodiment.command_values(msg)
        except ValueError as error:
            self.diag.reject("command", str(error))
            return
        if self.teleop_active:
            self.diag.reject("command", "the leaders drive (teleop): policy chunk ignored")
            return
        if self.resetting is not None:
            self.diag.reject("command", "resetting: policy chunk ignored")
            return
        if msg.hold:
            with self.lock:
                self.plan.clear()
            return
        if not np.isfinite(msg.period_s) or msg.period_s < 0 or msg.period_s > 10:
            self.diag.reject("command", f"period_s {msg.period_s} is not in [0, 10]")
            return
        ticks = max(1, round(msg.period_s / DT))
        with self.lock:
            start = self.sent if self.sent is not None else self._measured14()
            if start is None:
                self.diag.reject("command", "no joint_states yet")
                return
            plan, previous = [], start
            for target in chunk:
                for k in range(1, ticks + 1):  # linear from the previous step to this one
                    plan.append(previous + (target - previous) * k / ticks)
                previous = target
            self.plan = deque(plan)
        self.diag.count("chunks")

    def _measured14(self) -> np.ndarray | None:
        if len(self.measured) < len(self.followers):
            return None
        return np.concatenate([self.measured[a] for a in self.followers])

    # -- the 50 Hz loop -------------------------------------------------------------------
    def why_hold(self, now: float) -> str:
        """'' when it is safe to move, else the reason to hold."""
        watched = (*self.followers, *self.cameras, *(self.leaders if self.teleop_active else ()))
        for key in watched:
            seen = self.seen.get(key)
            if seen is None or now - seen > self.stale_s:
                return f"stale {key}"
        if self.heartbeat_required:
            if self.heartbeat is None or now - self.heartbeat[0] > self.heartbeat_s:
                return "heartbeat lost"
            if not self.heartbeat[1]:
                return "e-stop pressed"
        return ""

    def on_tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            self._reset_timeout(now)
            reason = self.why_hold(now)
            if reason:
                if reason != self.hold_reason:
                    self.hold_reason, self.hold_since = reason, now
                    self.diag.count("holds")
                    self.get_logger().warning(f"holding: {reason}")
                    self.plan.clear()
                    measured = self._measured14()
                    if measured is not None and reason.startswith(("heartbeat", "e-stop")):
                        self._send(measured)  # stop where the arm is
                    self.sent = None
                return
            if self.hold_reason:
                self.get_logger().info(f"moving again (was holding: {self.hold_reason})")
                self.hold_reason = ""
                self.step = np.zeros(12)
            if self.resetting is not None and self._reset_progress(now):
                target = self.reset_pose
            elif self.teleop_active:
                target = np.concatenate([self.leader[a] for a in self.leaders])
            elif self.plan:
                target = self.plan.popleft()
            else:
                return
            current = self.sent if self.sent is not None else self._measured14()
            if current is None:
                return  # no pose measured since a scene reset yet
            self._send(self.limited(current, target))

    # -- reset ------------------------------------------------------------------------------
    async def on_reset(self, request: ResetStation.Request, response: ResetStation.Response):
        """Move to ``reset.pose`` (answered when reached; the executor is not blocked)."""
        response.ok = False
        if request.task_family and request.task_family != self.reset_family:
            response.message = (f"unknown task family {request.task_family!r}; this station "
                                f"has {self.reset_family!r}")
            return response
        with self.lock:
            if self.teleop_active:
                response.message = "the leaders drive (teleop): no reset"
                return response
            if self.resetting is not None:
                response.message = "a reset is already running"
                return response
        if self.scene is not None:
            problem = await self._reset_scene()
            if problem:
                self.diag.reject("reset", problem)
                response.message = problem
                return response
        with self.lock:
            done = Future()
            self.resetting = (done, time.monotonic() + self.reset_timeout)
            self.plan.clear()
        self.diag.count("resets")
        problem = await done
        response.ok, response.message = not problem, problem
        response.instruction = request.instruction or self.reset_instruction
        response.task_family = self.reset_family
        return response

    async def _reset_scene(self) -> str:
        """Call ``reset.scene_service``; '' when the new scene is set. The arms were moved
        by it: forget the last command and the measured pose until fresh joint_states."""
        if not self.scene.service_is_ready():
            return f"scene reset {self.scene.srv_name} is not available"
        answer = await self.scene.call_async(Trigger.Request())
        if answer is None or not answer.success:
            return f"scene reset failed: {answer.message if answer else 'no answer'}"
        with self.lock:
            self.plan.clear()
            self.sent, self.step = None, np.zeros(12)
            self.measured.clear()
        return ""

    def _reset_progress(self, now: float) -> bool:
        """Caller holds the lock. True while the reset must still move; resolves it when
        reached (measured, or commanded in dry-run) or timed out."""
        done, _ = self.resetting
        current = self.sent if self.dry_run else self._measured14()
        arm = np.r_[0:6, 7:13]
        if current is not None and np.max(np.abs(current[arm] - self.reset_pose[arm])) \
                <= self.reset_tolerance and (self.sent is not None and np.allclose(
                    self.sent[[6, 13]], np.clip(self.reset_pose[[6, 13]], 0, 1))):
            self.resetting = None
            done.set_result("")
            return False
        return True

    def _reset_timeout(self, now: float) -> None:
        """Caller holds the lock: fail a reset past its deadline (holding or not)."""
        if self.resetting is not None and now > self.resetting[1]:
            done, _ = self.resetting
            self.resetting = None
            message = f"timeout: not at reset.pose after {self.reset_timeout:.1f} s"
            if self.hold_reason:
                message += f" (holding: {self.hold_reason})"
            self.diag.reject("reset", message)
            done.set_result(message)

    def limited(self, current: np.ndarray, target: np.ndarray) -> np.ndarray:
        """``target`` within the joint limits and this tick's velocity / acceleration
        bounds from ``current`` (14 values; grippers only within [0, 1])."""
        out = target.copy()
        arm = np.r_[0:6, 7:13]
        clipped = np.clip(target[arm], self.lower, self.upper)
        if np.any(clipped != target[arm]):
            self.diag.count("clipped.position")
        step = clipped - current[arm]
        step_lo = np.maximum(-self.max_step, self.step - self.max_change)
        step_hi = np.minimum(self.max_step, self.step + self.max_change)
        bounded = np.clip(step, step_lo, step_hi)
        if np.any(bounded != step):
            self.diag.count("clipped.rate")
        self.step = bounded
        out[arm] = current[arm] + bounded
        out[[6, 13]] = np.clip(target[[6, 13]], 0.0, 1.0)
        return out

    def _send(self, values: np.ndarray) -> None:
        for i, arm in enumerate(self.followers):
            part = values[7 * i: 7 * i + 7]
            self.group_pubs[arm].publish(JointGroupCommand(name="arm",
                                                           cmd=part[:6].astype(float).tolist()))
            motor = self.gripper_close + float(part[6]) * (self.gripper_open - self.gripper_close)
            self.single_pubs[arm].publish(JointSingleCommand(name="gripper", cmd=motor))
        self.sent = values
        self.diag.count("commands.dry_run" if self.dry_run else "commands.sent")
        executed = JointState(name=list(ALOHA_JOINTS), position=values.astype(float).tolist())
        executed.header.stamp = self.get_clock().now().to_msg()
        self.executed_pub.publish(executed)

    # -- start and stop (motion enabled only) -------------------------------------------
    def prepare_arms(self) -> None:
        """Torque both arms on and learn their sleep pose (once each, retried)."""
        for arm in self.followers:
            if arm in self.sleep_pose:
                continue
            if not (self.torque[arm].service_is_ready() and self.info[arm].service_is_ready()):
                continue
            for name, cmd_type in (("arm", "group"), ("gripper", "single")):
                self.torque[arm].call_async(TorqueEnable.Request(cmd_type=cmd_type, name=name,
                                                                 enable=True))

            def got(future, arm=arm) -> None:
                info = future.result()
                if info is not None and len(info.joint_sleep_positions) == 6:
                    self.sleep_pose[arm] = np.asarray(info.joint_sleep_positions, float)

            self.info[arm].call_async(RobotInfo.Request(cmd_type="group", name="arm")
                                      ).add_done_callback(got)

    def go_to_sleep(self, seconds: float = 2.0) -> None:
        """On stop: move both arms to the driver's sleep pose, rate-limited, then stop."""
        if self.dry_run or len(self.sleep_pose) < len(self.followers):
            return
        with self.lock:
            current = self.sent if self.sent is not None else self._measured14()
            if current is None:
                return
            target = current.copy()
            for i, arm in enumerate(self.followers):
                target[7 * i: 7 * i + 6] = self.sleep_pose[arm]
            for _ in range(int(seconds / DT)):
                current = self.limited(current, target)
                self._send(current)
                time.sleep(DT)


def _stop(node: AlohaBridgeNode) -> None:
    node.go_to_sleep()


ENTRY = NodeEntry(AlohaBridgeNode, on_shutdown=_stop)


def main(args: list[str] | None = None) -> None:
    run_node(ENTRY, args)


if __name__ == "__main__":
    main()

