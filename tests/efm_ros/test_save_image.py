"""efm_ros.save_image writes the frames of an Image topic as PNGs (subprocess smoke run)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image as PILImage
from ros_harness import ros_environment


def test_save_image_writes_the_published_frame(ros_context, ros_domain, tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from efm_ros.conversions import image_to_msg
    from efm_ros.qos import SENSOR

    frame = np.zeros((12, 16, 3), np.uint8)
    frame[:, :8] = (10, 200, 30)
    node = Node("frames", context=ros_context)
    pub = node.create_publisher(Image, "/test/image", SENSOR)
    node.create_timer(0.05, lambda: pub.publish(image_to_msg(frame)))
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    out = tmp_path / "frame.png"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "efm_ros.save_image",
            "--topic",
            "/test/image",
            "--out",
            str(out),
            "--skip",
            "2",
            "--timeout",
            "30",
        ],
        env=ros_environment(ros_domain),
    )
    try:
        while proc.poll() is None:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
    assert proc.returncode == 0
    np.testing.assert_array_equal(np.asarray(PILImage.open(out)), frame)
