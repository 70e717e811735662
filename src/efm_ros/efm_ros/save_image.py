"""Save frames of an Image topic as PNGs (like image_view's image_saver, which is not
installable here): ``python -m efm_ros.save_image --topic /station_0/steps_to_go/
distribution_image --out docs/images/steps_to_go.png [--count 1] [--skip 10]``.

Waits for ``--skip`` frames first (let a stream settle), then writes ``--count`` frames
(``out``, or ``out`` with ``_<k>`` before the suffix when more than one)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    import rclpy
    from PIL import Image as PILImage
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from efm_ros.conversions import msg_to_image
    from efm_ros.qos import SENSOR

    rclpy.init()
    node = Node("efm_save_image")
    frames: list = []
    node.create_subscription(Image, args.topic, frames.append, SENSOR)
    deadline = time.monotonic() + args.timeout
    try:
        while len(frames) < args.skip + args.count and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    kept = frames[args.skip : args.skip + args.count]
    if not kept:
        print(f"no image on {args.topic} within {args.timeout} s", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for k, msg in enumerate(kept):
        path = args.out if len(kept) == 1 else args.out.with_stem(f"{args.out.stem}_{k}")
        PILImage.fromarray(msg_to_image(msg)).save(path)
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
