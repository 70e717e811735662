"""``steps_to_go``: the frozen Stage 1 reward model as a ROS service (paper Eq. 1-3, App. J.1).

* Service ``steps_to_go`` (efm_interfaces/StepsToGo): batched d(o, g) and ``d <= s`` for
  labelling whole episodes (rewards, Eq. 2).
* Continuous prediction: the latest ``observation`` is scored at ``predict.rate_hz`` and
  published on ``steps_to_go/prediction`` (StepsToGoPrediction) for episode termination,
  with rviz output on ``steps_to_go/markers`` (MarkerArray) and
  ``steps_to_go/distribution_image`` (Image: the distribution over steps as in Figure 3).
The model is loaded once from a verified checkpoint and never trained here.
"""

from __future__ import annotations

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from efm_interfaces.msg import Observation, StepsToGoPrediction
from efm_interfaces.srv import StepsToGo
from efm_learning.steps_to_go import expected_steps
from efm_learning.success_detector import SuccessDetector
from efm_ros.conversions import image_to_msg, observation_arrays
from efm_ros.diagnostics import Diagnostics
from efm_ros.model_host import declare_compute, load_verified, model_input
from efm_ros.params import Parameters
from efm_ros.qos import RELIABLE, SENSOR
from efm_ros.spin import NodeEntry, run_node
from efm_ros.visualization import distribution_image, steps_to_go_markers


class StepsToGoNode(Node):
    """Serves and streams steps-to-go predictions of one frozen checkpoint."""

    def __init__(self, **kwargs) -> None:
        super().__init__("steps_to_go", **kwargs)
        p = Parameters(self)
        checkpoint = p.declare(
            "model.checkpoint",
            "",
            "Reward-model checkpoint directory.",
            read_only=True,
            validator=lambda v: None if v else "required",
        )
        sha = p.declare(
            "model.sha256",
            "",
            "Expected sha256 of model.safetensors ('' = the checkpoint's own SHA256SUMS only).",
            read_only=True,
        )
        version = p.declare(
            "model.version", 0, "Version reported with predictions.", read_only=True, min_value=0
        )
        threshold = p.declare(
            "success.threshold",
            2.0,
            "s of the success detector d <= s [steps].",
            min_value=0.0,
            on_change=lambda v: setattr(self, "detector", SuccessDetector(v)),
        )
        self.reward_d = p.declare(
            "reward.steps_to_go",
            "expected",
            "d published as expected_steps, the actors' reward r = d_t - d_t+1 (Eq. 2): "
            "'expected' (Eq. 1) or 'in_range' (every bin but the last; docs/PUSHTABLE.md). "
            "success always uses the full expectation.",
            read_only=True,
            choices=("expected", "in_range"),
        )
        self.max_batch = p.declare(
            "service.max_batch", 256, "Largest StepsToGo batch.", min_value=1, max_value=4096
        )
        self.every_observation = p.declare(
            "predict.every_observation",
            False,
            "Score every observation as it arrives (lockstep experiments) instead of the "
            "newest one at predict.rate_hz.",
            read_only=True,
        )
        rate = p.declare(
            "predict.rate_hz",
            10.0,
            "Continuous prediction rate (0 = off) [Hz].",
            read_only=True,
            min_value=0.0,
            max_value=200.0,
        )
        self.viz = p.declare("viz.enabled", True, "Publish markers and the distribution image.")
        self.frame_id = p.declare("viz.frame_id", "board", "Frame of the rviz markers.")

        compute = declare_compute(p, heads=("steps_to_go",))
        self.loaded = load_verified(checkpoint, version, sha, compute)
        self.model = self.loaded.model
        self.bin_values = np.asarray(self.model.steps_tokenizer.bin_values, dtype=np.float64)
        self.detector = SuccessDetector(threshold)
        self.diag = Diagnostics(self)
        self.create_service(StepsToGo, "steps_to_go", self.on_request)
        self.create_subscription(Observation, "observation", self.on_observation, SENSOR)
        self.prediction_pub = self.create_publisher(
            StepsToGoPrediction, "steps_to_go/prediction", RELIABLE
        )
        self.marker_pub = self.create_publisher(MarkerArray, "steps_to_go/markers", RELIABLE)
        self.image_pub = self.create_publisher(Image, "steps_to_go/distribution_image", SENSOR)
        self.latest: Observation | None = None
        if rate > 0 and not self.every_observation:
            self.create_timer(1.0 / rate, self.on_tick)
        self.get_logger().info(
            f"steps_to_go ready: {self.loaded.path} (v{version}, sha {self.loaded.sha256[:12]}), "
            f"s={threshold}, reward d: {self.reward_d}, {compute.backend} on {compute.device}"
        )

    def score(
        self, arrays: list[dict], instruction: str | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities (B, bins), reward d (B,), detector success (B,)) for validated
        observation arrays; the detector always reads the full expectation (Eq. 3)."""
        import torch

        batch = self.model.prepare_observations(model_input(arrays, instruction))
        with torch.no_grad():
            probs = self.model.steps_to_go_probs(batch).double().cpu().numpy()
        success = self.detector(expected_steps(probs, self.bin_values))
        d = expected_steps(probs, self.bin_values, in_range=self.reward_d == "in_range")
        return probs, d, success

    def on_request(self, request: StepsToGo.Request, response: StepsToGo.Response):
        response.bin_values = self.bin_values.astype(np.float32).tolist()
        response.success_threshold = float(self.detector.threshold)
        response.model_version = self.loaded.version
        response.model_sha256 = self.loaded.sha256
        if len(request.observations) > self.max_batch:
            response.ok = False
            response.message = f"batch of {len(request.observations)} > max {self.max_batch}"
            self.diag.reject("batch_size", response.message)
            return response
        try:
            arrays = [observation_arrays(obs) for obs in request.observations]
            if arrays:
                probs, d, success = self.score(arrays, request.instruction or None)
            else:
                probs, d = np.zeros((0, self.bin_values.size)), np.zeros(0)
                success = np.zeros(0, dtype=bool)
        except ValueError as error:
            response.ok, response.message = False, str(error)
            self.diag.reject("observation", str(error))
            return response
        response.ok = True
        response.predictions = [
            self.prediction(obs, p, v, s)
            for obs, p, v, s in zip(request.observations, probs, d, success, strict=True)
        ]
        self.diag.count("labelled", len(arrays))
        return response

    def prediction(self, obs: Observation, probs, d, success, with_bins=False):
        msg = StepsToGoPrediction(
            step=obs.step,
            probabilities=probs.astype(np.float32).tolist(),
            expected_steps=float(d),
            success=bool(success),
            model_version=self.loaded.version,
        )
        msg.header = obs.header
        if with_bins:
            msg.bin_values = self.bin_values.astype(np.float32).tolist()
        return msg

    def on_observation(self, msg: Observation) -> None:
        self.latest = msg  # scored on the next tick; older ones are simply replaced
        if self.every_observation:
            self.on_tick()

    def on_tick(self) -> None:
        obs, self.latest = self.latest, None
        if obs is None:
            return
        try:
            arrays = observation_arrays(obs)
            probs, d, fired = self.score([arrays], None)
        except ValueError as error:
            self.diag.reject("observation", str(error))
            return
        success = bool(fired[0])
        self.prediction_pub.publish(self.prediction(obs, probs[0], d[0], success, True))
        self.diag.count("predictions")
        if not self.viz:
            return
        # drawn only while somebody (rviz) listens: rendering the picture and its text
        # costs CPU on every tick (docs/ROS.md, throughput)
        stamp = obs.header.stamp
        if self.marker_pub.get_subscription_count():
            self.marker_pub.publish(
                steps_to_go_markers(
                    float(d[0]),
                    self.detector.threshold,
                    float(self.bin_values[-1]),
                    self.frame_id,
                    stamp,
                )
            )
        if self.image_pub.get_subscription_count():
            frame = next(iter(arrays["images"].values()), None)
            picture = distribution_image(
                frame, probs[0], self.bin_values, float(d[0]), self.detector.threshold
            )
            self.image_pub.publish(image_to_msg(picture, stamp=stamp, frame_id=self.frame_id))


ENTRY = NodeEntry(StepsToGoNode)


def main(args: list[str] | None = None) -> None:
    run_node(ENTRY, args)


if __name__ == "__main__":
    main()
