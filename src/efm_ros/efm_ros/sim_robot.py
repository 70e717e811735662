"""``sim_robot``: an efm_sim environment behind the interface of a real robot driver.

Publishes (relative to the station namespace):
  ``camera/<name>/image_raw`` (sensor_msgs/Image, rgb8) and ``camera/<name>/camera_info``,
  ``joint_states`` (sensor_msgs/JointState: the embodiment's proprioception);
  ``eval/success`` (std_msgs/Bool) and ``eval/info`` (std_msgs/String JSON): GROUND TRUTH,
  for evaluation only; no learner or actor subscribes to them.
Subscribes ``action_command`` (efm_interfaces/ActionCommand). Serves ``reset``
(efm_interfaces/ResetStation).

``control.realtime``: true runs a timer at ``control.rate_hz`` that applies the latest
fresh command (holds when none arrived within ``control.command_timeout_s``), like a real
driver; false steps the simulation once per received action as fast as the graph runs
(experiments). Nothing downstream can tell the two apart except by timing. In lockstep a
command stamped with an observation other than the newest published one (e.g. answering
an idle republication that has since been superseded) is dropped and counted: applying it
would leave every later action one observation behind. Unstamped commands (stamp 0,
e.g. from a teleop tool) are applied as they come.
"""

from __future__ import annotations

import json
import time
from collections import deque

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String

from efm_interfaces.msg import ActionCommand
from efm_interfaces.srv import ResetStation
from efm_ros.conversions import image_to_msg, stamp_ns
from efm_ros.diagnostics import Diagnostics
from efm_ros.embodiments import get_embodiment
from efm_ros.params import Parameters
from efm_ros.qos import LATCHED, RELIABLE, SENSOR
from efm_ros.spin import NodeEntry, run_node

ENVS = ("pushtable", "bananatable", "pointmass")


class SimRobotNode(Node):
    """Wraps one efm_sim env as a robot station driver."""

    def __init__(self, **kwargs) -> None:
        super().__init__("sim_robot", **kwargs)
        p = Parameters(self)
        self.station = p.declare("station", "station_0", "Station name.", read_only=True)
        env_name = p.declare(
            "sim.env", "pushtable", "efm_sim environment.", read_only=True, choices=ENVS
        )
        image_size = p.declare(
            "sim.image_size",
            96,
            "Camera image side [px].",
            read_only=True,
            min_value=8,
            max_value=1024,
        )
        max_steps = p.declare(
            "sim.max_episode_steps",
            1000,
            "Env step limit (the actor enforces the practice limit).",
            read_only=True,
            min_value=1,
        )
        self.default_family = p.declare(
            "sim.task_family", "", "Default task family for resets ('' = env default)."
        )
        blocks = p.declare(
            "sim.blocks",
            "",
            "PushTable blocks on the board, comma-separated ('' = all eight).",
            read_only=True,
        )
        self.rate_hz = p.declare(
            "control.rate_hz",
            5.0,
            "Control rate in realtime mode [Hz].",
            min_value=0.1,
            max_value=1000.0,
        )
        self.realtime = p.declare(
            "control.realtime",
            True,
            "true: timer at control.rate_hz; false: one step per command.",
            read_only=True,
        )
        self.command_timeout = p.declare(
            "control.command_timeout_s",
            1.0,
            "Hold when no command is fresher than this [s].",
            min_value=0.0,
        )
        idle_hz = p.declare(
            "control.idle_publish_hz",
            5.0,
            "Lockstep mode: republish the unchanged scene at this rate when no command "
            "arrives, like a camera that keeps streaming (0 = off) [Hz].",
            read_only=True,
            min_value=0.0,
            max_value=1000.0,
        )
        self.frame_id = p.declare(
            "frame_id", "board", "Frame of images and states.", read_only=True
        )
        self.embodiment = get_embodiment(env_name)

        import efm_sim  # heavy (MuJoCo); imported once the parameters are valid

        # A robot does not know when its task succeeded: never end on ground truth.
        kwargs_env = {"max_episode_steps": max_steps, "terminate_on_success": False}
        if env_name != "pointmass":
            kwargs_env["image_size"] = image_size
        if blocks.strip():
            if env_name != "pushtable":
                raise ValueError(f"sim.blocks: only the pushtable env has blocks, not {env_name}")
            kwargs_env["blocks"] = [b.strip() for b in blocks.split(",") if b.strip()]
        self.env = efm_sim.make_env(env_name, **kwargs_env)
        self.diag = Diagnostics(self)
        self.camera_pubs = {
            name: (
                self.create_publisher(Image, f"camera/{name}/image_raw", SENSOR),
                self.create_publisher(CameraInfo, f"camera/{name}/camera_info", SENSOR),
            )
            for name in self.embodiment.camera_names
        }
        self.joint_pub = self.create_publisher(JointState, "joint_states", SENSOR)
        self.eval_success_pub = self.create_publisher(Bool, "eval/success", RELIABLE)
        self.eval_info_pub = self.create_publisher(String, "eval/info", RELIABLE)
        self.create_subscription(ActionCommand, "action_command", self.on_command, RELIABLE)
        self.create_service(ResetStation, "reset", self.on_reset)
        if not self.realtime:
            self.create_subscription(String, "instruction", self.on_instruction, LATCHED)

        self.pending: deque[np.ndarray] = deque()
        self.last_command_time = None
        self.obs, self.info = None, {}
        self.episode_done = True
        self.last_publish = 0.0
        self.published_ns = 0  # stamp of the newest published observation
        if self.realtime:
            self.timer = self.create_timer(1.0 / self.rate_hz, self.on_tick)
        elif idle_hz > 0:
            self.idle_period = 1.0 / idle_hz
            self.timer = self.create_timer(self.idle_period, self.on_idle)
        self.get_logger().info(
            f"sim_robot ready: env={env_name} station={self.station} "
            + (f"realtime at {self.rate_hz:.1f} Hz" if self.realtime else "as fast as possible")
        )

    # -- robot interface ------------------------------------------------------------------
    def on_reset(self, request: ResetStation.Request, response: ResetStation.Response):
        options = {}
        family = request.task_family or self.default_family
        if family:
            options["task_family"] = family
        if request.instruction:
            options["instruction"] = request.instruction
        seed = None if request.seed < 0 else int(request.seed)
        try:
            self.obs, self.info = self.env.reset(seed=seed, options=options)
        except ValueError as error:
            self.diag.reject("reset", str(error))
            response.ok, response.message = False, str(error)
            return response
        self.pending.clear()
        self.episode_done = False
        self.diag.count("resets")
        response.ok = True
        response.instruction = self.info.get("instruction", "")
        response.task_family = self.info.get("task_family", "")
        self.publish_state()
        return response

    def on_command(self, msg: ActionCommand) -> None:
        try:
            chunk = self.embodiment.command_values(msg)
        except ValueError as error:
            self.diag.reject("command", str(error))
            return
        self.diag.count("commands")
        answered = stamp_ns(msg)
        if not self.realtime and answered and answered != self.published_ns:
            self.diag.count("commands.superseded")
            return
        if msg.hold:
            self.pending.clear()
            self.diag.count("holds")
            return
        self.pending.extend(self.embodiment.clip(chunk))
        self.last_command_time = self.get_clock().now()
        if not self.realtime:
            while self.pending:
                self.apply(self.pending.popleft())

    def on_tick(self) -> None:
        stale = self.last_command_time is None or (
            (self.get_clock().now() - self.last_command_time).nanoseconds * 1e-9
            > self.command_timeout
        )
        if self.pending and not stale:
            self.apply(self.pending.popleft())
        else:
            self.pending.clear()
            self.publish_state()  # hold: no motion, the cameras keep streaming

    def apply(self, action: np.ndarray) -> None:
        if self.episode_done:
            self.diag.reject("command", "no episode running: call reset first")
            return
        self.obs, _, terminated, truncated, self.info = self.env.step(action.astype(np.float32))
        self.diag.count("steps")
        # Only the env's own step limit ends an episode here; success is the actor's
        # call (learned detector), the step limit of practice too.
        self.episode_done = bool(terminated or truncated)
        self.publish_state()

    def on_instruction(self, msg: String) -> None:
        """Lockstep: a task was set (the actor starts an episode after the reset) - show
        the scene now, as a streaming camera would, instead of at the next idle tick. The
        observation reset published came before the episode began and is not part of it
        (the actor ignores it, camera_ingest had not restarted its step count)."""
        if msg.data.strip() and not self.episode_done:
            self.publish_state()
            self.diag.count("published_on_instruction")

    def on_idle(self) -> None:
        if time.monotonic() - self.last_publish >= self.idle_period:
            self.publish_state()

    # -- publishing -----------------------------------------------------------------------
    def publish_state(self) -> None:
        if self.obs is None:
            return
        self.last_publish = time.monotonic()
        stamp = self.get_clock().now().to_msg()
        self.published_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        if isinstance(self.obs, dict):
            for image_pub, info_pub in self.camera_pubs.values():
                image = self.obs["image"]
                image_pub.publish(image_to_msg(image, stamp=stamp, frame_id=self.frame_id))
                info_pub.publish(self.camera_info(image.shape, stamp))
            state = np.asarray(self.obs["proprio"], dtype=np.float64)
        else:
            state = np.asarray(self.obs, dtype=np.float64)
        joints = JointState(name=list(self.embodiment.proprio_names), position=state.tolist())
        joints.header.stamp = stamp
        joints.header.frame_id = self.frame_id
        self.joint_pub.publish(joints)
        success = bool(self.info.get("success", False))
        self.eval_success_pub.publish(Bool(data=success))
        self.eval_info_pub.publish(
            String(
                data=json.dumps(
                    {
                        "success": success,
                        "instruction": self.info.get("instruction", ""),
                        "task_family": self.info.get("task_family", ""),
                        "step": int(getattr(self.env.unwrapped, "elapsed_steps", 0)),
                    }
                )
            )
        )

    def camera_info(self, shape: tuple[int, ...], stamp) -> CameraInfo:
        info = CameraInfo(height=int(shape[0]), width=int(shape[1]), distortion_model="plumb_bob")
        info.header.stamp = stamp
        info.header.frame_id = self.frame_id
        return info


ENTRY = NodeEntry(SimRobotNode, on_shutdown=lambda node: node.env.close())


def main(args: list[str] | None = None) -> None:
    run_node(ENTRY, args)


if __name__ == "__main__":
    main()
