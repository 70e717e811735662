"""`make bench`: run every benchmark's quick form in turn and print their tables.

The long forms (and their --docs options) are documented in each script and in
docs/SIM.md, docs/LEARNING.md and docs/ROS.md.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    ["benchmarks.sim_env_steps"],
    ["benchmarks.sim_generation"],
    ["benchmarks.sim_demonstrator", "--quick"],
    ["benchmarks.learning_bench"],
    ["benchmarks.ros_camera_ingest", "--seconds", "5"],
    ["benchmarks.ros_recorder", "--seconds", "5"],
    ["benchmarks.onnx_latency", "--n", "100"],
]


def main() -> int:
    failed = []
    for args in BENCHMARKS:
        print(f"\n## python -m {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, "-m", *args]).returncode != 0:
            failed.append(args[0])
    if failed:
        print(f"\nfailed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
