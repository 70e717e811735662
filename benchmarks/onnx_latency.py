"""torch vs onnxruntime at batch 1, side by side (issue 16, item 3).

    python -m benchmarks.onnx_latency [--policy checkpoints/pushtable/best_bc] \
        [--reward checkpoints/pushtable/best_steps_to_go] [--n 500] [--json OUT]
    python -m benchmarks.onnx_latency --vlm-tiny --n 100 [--json OUT]

``--vlm-tiny`` measures the ``vlm`` backend instead, a tiny random PaliGemma (the test
config; no download), whose onnxruntime policy decodes token by token through the
teacher-forced graph (efm_learning.onnx_runtime).

For each head, one call = what the node does per observation: ``model.act`` (policy,
sampled tokens) or ``steps_to_go_probs`` after ``prepare_observations`` (reward model),
on 64x64 camera frames + state + instruction. The two backends alternate call by call on
the same inputs, so machine noise hits both alike; medians and p99 in ms. Also the time
``load_verified`` takes per backend (the hot-swap cost: onnxruntime exports the graph
and checks parity on each load). One intra-op thread, as the nodes default to.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1e3
    return {"median_ms": round(float(np.median(a)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="checkpoints/pushtable/best_bc")
    parser.add_argument("--reward", default="checkpoints/pushtable/best_steps_to_go")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--image", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--vlm-tiny", action="store_true",
                        help="measure a tiny random vlm (PaliGemma) checkpoint instead")
    args = parser.parse_args(argv)

    import torch

    if args.vlm_tiny:
        import tempfile

        from efm_learning.checkpoint import save_checkpoint
        from efm_learning.models import make_model

        torch.manual_seed(0)
        vlm = make_model({"type": "vlm", "tiny": {},
                          "steps_to_go": {"max_steps": 20, "num_bins": 21},
                          "action_tokenizer": {"type": "language_table", "max_delta": 0.03}})
        path = str(save_checkpoint(Path(tempfile.mkdtemp()) / "vlm_tiny", vlm.eval()))
        args.policy = args.reward = path

    from efm_ros.model_host import Compute, load_verified
    from efm_sim import keys

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.n + 1, args.image, args.image, 3), dtype=np.uint8)

    def obs(i: int) -> dict:
        return {keys.OBS_IMAGE: frames[i + 1: i + 2], keys.OBS_PREV_IMAGE: frames[i: i + 1],
                keys.OBS_STATE: rng.uniform(-0.3, 0.3, (1, 2)).astype(np.float32),
                keys.INSTRUCTION: ["push the red moon to the blue cube"]}

    results: dict[str, dict] = {}
    for head, path in (("policy", args.policy), ("steps_to_go", args.reward)):
        load_s: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
        models = {}
        for _ in range(3):
            for backend in load_s:
                t0 = time.perf_counter()
                models[backend] = load_verified(path, compute=Compute(backend=backend,
                                                                      heads=(head,))).model
                load_s[backend].append(time.perf_counter() - t0)
        calls: dict[str, list[float]] = {"torch": [], "onnxruntime": []}

        def call(model, o, head=head):
            with torch.no_grad():
                if head == "policy":
                    model.act(o)
                else:
                    model.steps_to_go_probs(model.prepare_observations(o))

        for i in range(20):  # warm-up (caches, the instruction embedding)
            for model in models.values():
                call(model, obs(i))
        for i in range(args.n):
            o = obs(i)
            order = list(calls) if i % 2 == 0 else list(reversed(calls))
            for backend in order:
                t0 = time.perf_counter()
                call(models[backend], o)
                calls[backend].append(time.perf_counter() - t0)
        results[head] = {
            "checkpoint": path,
            **{b: {**_stats(v), "load_s": round(float(np.median(load_s[b])), 3)}
               for b, v in calls.items()},
        }
        results[head]["speedup_median"] = round(
            results[head]["torch"]["median_ms"] / results[head]["onnxruntime"]["median_ms"], 2)

    print("| head | torch median (p99) | onnxruntime median (p99) | torch / ort | load torch | "
          "load ort |")
    print("| --- | --- | --- | --- | --- | --- |")
    for head, r in results.items():
        t, o = r["torch"], r["onnxruntime"]
        print(f"| {head} | {t['median_ms']:.2f} ms ({t['p99_ms']:.2f}) | {o['median_ms']:.2f} ms "
              f"({o['p99_ms']:.2f}) | {r['speedup_median']:.2f}x | {t['load_s']:.2f} s | "
              f"{o['load_s']:.2f} s |")
    if args.json:
        import onnxruntime

        meta = {"n": args.n, "image": args.image, "batch": 1, "threads": 1,
                "model": "vlm tiny (random PaliGemma)" if args.vlm_tiny else "checkpoints",
                "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                "command": "python -m benchmarks.onnx_latency"}
        args.json.write_text(json.dumps({"meta": meta, **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
