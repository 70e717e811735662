"""torchrun with 2 CPU processes (gloo) gives the same update as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


def test_two_process_ddp_update_matches_single_process(tmp_path):
    single, multi = tmp_path / "single.safetensors", tmp_path / "ddp.safetensors"
    _run([sys.executable, str(WORKER), str(single)], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
          "2", str(WORKER), str(multi)], tmp_path)
    a, b = load_file(str(single)), load_file(str(multi))
    assert a.keys() == b.keys()
    from efm_learning.testing import tiny_mlp

    initial = tiny_mlp(seed=0).state_dict()
    moved = [k for k in a if not torch.equal(a[k], initial[k])]
    assert len(moved) >= 6  # both trunks and heads were updated
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
