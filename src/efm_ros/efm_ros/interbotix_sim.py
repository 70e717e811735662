"""A simulated Interbotix xs_sdk for ALOHA (issue 15, item 3): the efm_sim ALOHA MuJoCo
env behind exactly the topics and services of two vx300s follower arms, so the
aloha_bridge is tested against the interface the hardware has (../shared/ALOHA.md).

Per follower namespace (``/follower_left``, ``/follower_right``):

* ``commands/joint_group`` (interbotix_xs_msgs/JointGroupCommand, ``name: arm``, 6
  positions [rad]) and ``commands/joint_single`` (JointSingleCommand, ``name: gripper``,
  the gripper motor's position [rad], as in ``current_based_position`` mode);
* ``joint_states`` (sensor_msgs/JointState, 50 Hz): waist .. wrist_rotate, gripper (motor
  rad), left_finger, right_finger [m];
* services ``torque_enable``, ``reboot_motors``, ``set_operating_modes``,
  ``get_robot_info`` (limits from the MuJoCo model, the sleep pose).

Cameras (optional): ``/cam_*/camera/color/image_rect_raw`` as a realsense node names
them. Arms without torque do not follow commands (counted), as real motors would not.

Scene reset (simulation only; on a real station the operator places peg and socket):
``reset_scene`` (std_srvs/Trigger, in the node's namespace) draws a new scene (seed
``sim.seed`` + the number of resets so far, as gym-aloha randomises peg and socket) with
both arms at home; the bridge calls it on each episode reset when its
``reset.scene_service`` names it.

Leader arms (optional, ``leaders.source: demonstrator``): ``/leader_left/joint_states`` and
``/leader_right/joint_states`` at 50 Hz as the leaders' xs_sdk publishes them (6 joints
[rad], the leader gripper joint [rad], fingers). Leaders are moved by hand and carry no
torque, so what moves them here is the operator's stand-in: the scripted insertion
demonstrator (``efm_sim.aloha_demonstrator``), reading the scene as a person would look
at it. With the bridge's ``teleop.mode: always`` that is a teleoperated demonstration in
simulation (ALOHA's puppeteering). Knows nothing of efm's messages.
"""

from __future__ import annotations

import time

import numpy as np
from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand
from interbotix_xs_msgs.srv import OperatingModes, Reboot, RobotInfo, TorqueEnable
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from efm_ros.conversions import image_to_msg
from efm_ros.diagnostics import Diagnostics
from efm_ros.params import Parameters
from efm_ros.qos import RELIABLE, SENSOR
from efm_ros.spin import NodeEntry, run_node
from efm_sim.aloha_layout import ARM_JOINTS

JOINT_STATE_NAMES = (*ARM_JOINTS, "gripper", "left_finger", "right_finger")
#: the follower gripper motor's positions at open / closed fingers (ACT / ALOHA constants)
GRIPPER_MOTOR_OPEN = 1.4910
GRIPPER_MOTOR_CLOSE = -0.6213
FOLLOWERS = ("follower_left", "follower_right")
LEADERS = ("leader_left", "leader_right")
#: leader (wx250s) gripper joint at open / closed fingers [rad] (ACT's constants)
LEADER_GRIPPER_OPEN, LEADER_GRIPPER_CLOSE = 0.3083, -0.6842


def motor_to_normalized(motor: float) -> float:
    """Gripper motor position [rad] -> normalised gripper (0 closed, 1 open)."""
    return (motor - GRIPPER_MOTOR_CLOSE) / (GRIPPER_MOTOR_OPEN - GRIPPER_MOTOR_CLOSE)


def normalized_to_motor(value: float) -> float:
    return GRIPPER_MOTOR_CLOSE + value * (GRIPPER_MOTOR_OPEN - GRIPPER_MOTOR_CLOSE)


class _Arm:
    """One follower's state: the last targets and whether its motors hold torque."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, home: np.ndarray) -> None:
        self.lower, self.upper = lower, upper
        self.target = home.copy()  # 6 joints + normalised gripper
        self.torque = False
        self.commands = 0


class InterbotixSimNode(Node):
    """Two simulated vx300s followers with the xs_sdk interface, stepping at 50 Hz."""

    def __init__(self, **kwargs) -> None:
        super().__init__("interbotix_sim", **kwargs)
        p = Parameters(self)
        size = p.declare("sim.image_size", [48, 64], "Camera frame [height, width].",
                         read_only=True)
        cameras = p.declare("cameras.enabled", True, "Publish the four realsense topics.",
                            read_only=True)
        camera_hz = p.declare("cameras.rate_hz", 10.0, "Camera frame rate [Hz].",
                              read_only=True, min_value=0.1, max_value=60.0)
        seed = p.declare("sim.seed", 0, "Scene seed of the first reset.", read_only=True)
        self.max_catch_up = p.declare(
            "sim.max_catch_up_steps", 1, "Physics steps one late tick may run to keep sim "
            "time with the wall clock, as real arms keep moving while the computer is busy "
            "(1: one step per tick, the sim slows down instead; more needs spare CPU: on 2 "
            "loaded cores 5 kept the timer always due and starved the reset_scene service).",
            read_only=True, min_value=1, max_value=50)
        leader_source = p.declare(
            "leaders.source", "", "What moves the two simulated leader arms: '' (no leaders) "
            "or 'demonstrator' (the scripted insertion demonstrator as the operator's hands).",
            read_only=True)
        suboptimality = p.declare(
            "leaders.suboptimality", 0.5, "The demonstrator's suboptimality (0 clean, 1 "
            "slow and shaky).", read_only=True, min_value=0.0, max_value=1.0)
        if leader_source not in ("", "demonstrator"):
            raise ValueError(f"leaders.source must be '' or 'demonstrator', got {leader_source!r}")
        self.publishing = True  # tests pause joint_states to make them stale
        from efm_sim import aloha

        self.aloha = aloha
        self.env = aloha.AlohaInsertionEnv(
            image_size=tuple(size), cameras=aloha.CAMERAS if cameras else (),
            max_episode_steps=10**9, terminate_on_success=False)
        obs, _ = self.env.reset(seed=int(seed))
        self.seed, self.scene_resets = int(seed), 0
        self.operator = None
        if leader_source == "demonstrator":
            from efm_sim.aloha_demonstrator import AlohaInsertionDemonstrator

            self.operator = AlohaInsertionDemonstrator(suboptimality, env=self.env)
            self.operator.reset(obs, np.random.default_rng(int(seed)))
        lo, hi = self.env.action_space.low, self.env.action_space.high
        home = self.env.qpos()
        self.home = {name: home[7 * i: 7 * i + 6].copy() for i, name in enumerate(FOLLOWERS)}
        self.arms = {name: _Arm(lo[7 * i: 7 * i + 6], hi[7 * i: 7 * i + 6], home[7 * i: 7 * i + 7])
                     for i, name in enumerate(FOLLOWERS)}
        self.diag = Diagnostics(self)
        self.state_pubs = {}
        for name in FOLLOWERS:
            ns = f"/{name}"
            self.state_pubs[name] = self.create_publisher(JointState, f"{ns}/joint_states",
                                                          SENSOR)
            self.create_subscription(JointGroupCommand, f"{ns}/commands/joint_group",
                                     lambda m, n=name: self.on_group(n, m), RELIABLE)
            self.create_subscription(JointSingleCommand, f"{ns}/commands/joint_single",
                                     lambda m, n=name: self.on_single(n, m), RELIABLE)
            self.create_service(TorqueEnable, f"{ns}/torque_enable",
                                lambda q, r, n=name: self.on_torque(n, q, r))
            self.create_service(Reboot, f"{ns}/reboot_motors", lambda q, r: r)
            self.create_service(OperatingModes, f"{ns}/set_operating_modes", lambda q, r: r)
            self.create_service(RobotInfo, f"{ns}/get_robot_info",
                                lambda q, r, n=name: self.on_info(n, q, r))
        self.create_service(Trigger, "reset_scene", self.on_reset_scene)
        self.leader_pubs = [self.create_publisher(JointState, f"/{name}/joint_states", SENSOR)
                            for name in LEADERS] if self.operator is not None else []
        self.camera_pubs = {cam: self.create_publisher(
            Image, f"/{cam}/camera/color/image_rect_raw", SENSOR) for cam in self.env.cameras}
        self.clock0, self.physics_steps = time.monotonic(), 0
        self.create_timer(aloha.DT, self.on_tick)
        if self.camera_pubs:
            self.create_timer(1.0 / camera_hz, self.on_camera)
        self.get_logger().info("interbotix_sim ready: followers " + ", ".join(FOLLOWERS) + (
            "; leaders " + ", ".join(LEADERS) + " moved by the demonstrator"
            if self.operator is not None else ""))

    # -- the xs_sdk interface -------------------------------------------------------------
    def on_group(self, arm: str, msg: JointGroupCommand) -> None:
        state = self.arms[arm]
        cmd = np.asarray(msg.cmd, dtype=np.float64)
        if msg.name != "arm" or cmd.shape != (6,) or not np.all(np.isfinite(cmd)):
            self.diag.reject("joint_group", f"{arm}: group {msg.name!r} with {cmd.size} values")
            return
        if not state.torque:
            self.diag.count("commands.without_torque")
            return
        state.target[:6] = np.clip(cmd, state.lower, state.upper)  # the motors' own limits
        state.commands += 1

    def on_single(self, arm: str, msg: JointSingleCommand) -> None:
        state = self.arms[arm]
        if msg.name != "gripper" or not np.isfinite(msg.cmd):
            self.diag.reject("joint_single", f"{arm}: joint {msg.name!r}")
            return
        if not state.torque:
            self.diag.count("commands.without_torque")
            return
        state.target[6] = float(np.clip(motor_to_normalized(msg.cmd), 0.0, 1.0))
        state.commands += 1

    def on_torque(self, arm: str, request: TorqueEnable.Request, response):
        if request.cmd_type in ("group", "single") and request.name in ("arm", "all", "gripper"):
            self.arms[arm].torque = bool(request.enable)
        return response

    def on_info(self, arm: str, request: RobotInfo.Request, response: RobotInfo.Response):
        state = self.arms[arm]
        response.mode, response.profile_type = "position", "time"
        response.joint_names = list(ARM_JOINTS)
        response.joint_lower_limits = state.lower.astype(float).tolist()
        response.joint_upper_limits = state.upper.astype(float).tolist()
        response.joint_velocity_limits = [np.pi] * 6
        # the simulated arm sleeps where the model's home keyframe put it at start-up
        response.joint_sleep_positions = self.home[arm].astype(float).tolist()
        response.joint_state_indices = list(range(6))
        response.num_joints = 6
        response.name = [request.name]
        return response

    # -- simulation -----------------------------------------------------------------------
    def on_reset_scene(self, request: Trigger.Request, response: Trigger.Response):
        """A new scene, both arms at home: what the operator does between real episodes."""
        self.scene_resets += 1
        seed = self.seed + self.scene_resets
        obs, _ = self.env.reset(seed=seed)
        self.clock0, self.physics_steps = time.monotonic(), 0
        home = self.env.qpos()
        for i, name in enumerate(FOLLOWERS):
            self.arms[name].target = home[7 * i: 7 * i + 7].copy()
        if self.operator is not None:
            self.operator.reset(obs, np.random.default_rng(seed))
        self.diag.count("scene_resets")
        response.success, response.message = True, f"scene seed {seed}"
        return response

    def on_tick(self) -> None:
        """Advance physics to the wall clock (50 Hz steps; at most ``sim.max_catch_up_steps``
        per tick, beyond that the sim falls behind), then publish the joint states."""
        action = np.concatenate([self.arms[n].target for n in FOLLOWERS]).astype(np.float32)
        due = int((time.monotonic() - self.clock0) / self.aloha.DT) + 1 - self.physics_steps
        steps = min(max(due, 1), self.max_catch_up)
        if due > steps:  # too far behind: let sim time slip rather than jump
            self.clock0 += (due - steps) * self.aloha.DT
            self.diag.count("control_steps.slipped", due - steps)
        for _ in range(steps):
            self.env.step(action)  # one 50 Hz control step of physics
        self.physics_steps += steps
        self.diag.count("control_steps", steps)  # the station's control rate
        self.diag.count("ticks")
        if not self.publishing:
            return
        q = self.env.qpos()
        now = self.get_clock().now().to_msg()
        if self.operator is not None:
            self.publish_leaders(self.operator.act(None), now)
        for i, name in enumerate(FOLLOWERS):
            arm = q[7 * i: 7 * i + 7]
            finger = float(self.aloha.unnormalize_gripper(arm[6]))
            msg = JointState(name=list(JOINT_STATE_NAMES),
                             position=[*arm[:6].astype(float), normalized_to_motor(arm[6]),
                                       finger, -finger])
            msg.header.stamp = now
            self.state_pubs[name].publish(msg)

    def publish_leaders(self, pose: np.ndarray, stamp) -> None:
        """The leaders' joint_states for a 14-value pose (6 joints, normalised gripper per
        arm): the gripper as the leader's joint angle, fingers at the matching opening."""
        for i, pub in enumerate(self.leader_pubs):
            arm = pose[7 * i: 7 * i + 7]
            grip = float(np.clip(arm[6], 0.0, 1.0))
            joint = LEADER_GRIPPER_CLOSE + grip * (LEADER_GRIPPER_OPEN - LEADER_GRIPPER_CLOSE)
            finger = float(self.aloha.unnormalize_gripper(grip))
            msg = JointState(name=list(JOINT_STATE_NAMES),
                             position=[*arm[:6].astype(float), joint, finger, -finger])
            msg.header.stamp = stamp
            pub.publish(msg)

    def on_camera(self) -> None:
        now = self.get_clock().now().to_msg()
        for cam, pub in self.camera_pubs.items():
            msg = image_to_msg(self.env.render_camera(cam), frame_id=cam)
            msg.header.stamp = now
            pub.publish(msg)


ENTRY = NodeEntry(InterbotixSimNode, on_shutdown=lambda node: node.env.close())


def main(args: list[str] | None = None) -> None:
    run_node(ENTRY, args)


if __name__ == "__main__":
    main()
