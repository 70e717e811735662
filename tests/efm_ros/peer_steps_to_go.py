"""A second ROS process for the interface tests.

It serves ``efm_interfaces/srv/StepsToGo`` with a transparent, hand-checkable model:
the distribution is one-hot at the steps-to-go bin of ``proprioception[0]`` (read as a
step count), so the caller can verify that observations crossed the process boundary
intact and that the response carries the real tokenizer's bins, d and ``d <= s``.
It also checks every LabelledEpisode it receives and acknowledges it on ``episode_ack``
with what it decoded, so the sender can compare.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import String

from efm_interfaces.msg import LabelledEpisode, StepsToGoPrediction
from efm_interfaces.srv import StepsToGo
from efm_learning.steps_to_go import language_table_steps_to_go
from efm_learning.success_detector import SuccessDetector
from efm_ros.conversions import observation_arrays
from efm_ros.qos import RELIABLE


class PeerNode(Node):
    def __init__(self) -> None:
        super().__init__("efm_test_peer")
        self.tokenizer = language_table_steps_to_go()
        self.detector = SuccessDetector(threshold=2.0)
        self.service = self.create_service(StepsToGo, "steps_to_go", self.on_steps_to_go)
        self.ack = self.create_publisher(String, "episode_ack", RELIABLE)
        self.sub = self.create_subscription(
            LabelledEpisode, "labelled_episodes", self.on_episode, RELIABLE
        )
        self.get_logger().info("peer ready")

    def on_steps_to_go(self, request: StepsToGo.Request, response: StepsToGo.Response):
        try:
            steps = []
            for obs in request.observations:
                arrays = observation_arrays(obs)
                steps.append(float(arrays["proprioception"][0]))
            bins = self.tokenizer.encode(steps)
        except ValueError as error:
            response.ok = False
            response.message = str(error)
            return response
        probs = np.eye(self.tokenizer.num_bins, dtype=np.float64)[bins]
        d = self.tokenizer.expected_steps(probs) if len(steps) else np.zeros(0)
        success = self.detector(d)
        response.ok = True
        response.bin_values = self.tokenizer.bin_values.astype(np.float32).tolist()
        response.predictions = [
            StepsToGoPrediction(
                probabilities=p.astype(np.float32).tolist(),
                expected_steps=float(v),
                success=bool(s),
            )
            for p, v, s in zip(probs, d, success, strict=True)
        ]
        response.success_threshold = float(self.detector.threshold)
        response.model_version = 7
        response.model_sha256 = "0" * 64
        return response

    def on_episode(self, msg: LabelledEpisode) -> None:
        images = [observation_arrays(o)["images"]["top"] for o in msg.observations]
        digest = hashlib.sha256(b"".join(img.tobytes() for img in images)).hexdigest()
        summary = {
            "episode_id": msg.episode_id,
            "length": msg.length,
            "tokens": np.asarray(msg.action_tokens).tolist(),
            "returns": np.asarray(msg.returns, dtype=np.float64).round(4).tolist(),
            "images_sha256": digest,
            "instruction": msg.instruction,
        }
        self.ack.publish(String(data=json.dumps(summary)))


def main() -> None:
    rclpy.init()
    node = PeerNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
