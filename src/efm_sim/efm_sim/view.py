"""Look at episodes: a PNG contact sheet and a GIF (issue 3, "look at it").

    python -m efm_sim.view --dataset DIR --episode K --out PREFIX
    python -m efm_sim.view --env pushtable --seed 3 --family block2block --out PREFIX

The first form reads episode file ``episode_<K>.h5`` (K is the file index); the second
rolls out a fresh scripted demonstration (PushTable), a PD demo (PointMass), or a naive
straight pusher (BananaTable has no demonstrator; it only shows the physics).
Writes ``PREFIX.png`` and ``PREFIX.gif``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from efm_sim import dataset as ds


def _font_draw(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    draw.rectangle([0, 0, pil.width, 11], fill=(0, 0, 0))
    draw.text((2, 0), text, fill=(255, 255, 255))
    return np.asarray(pil)


def episode_frames(episode: ds.Episode, size: int = 96) -> np.ndarray:
    """(T+1, H, W, 3) frames: the recorded images, or a PointMass sketch from states."""
    if episode.images is not None:
        return episode.images
    from efm_sim.pointmass import render_frame

    return np.stack([render_frame(s[0:2], s[4:6], size) for s in episode.states])


def contact_sheet(
    episode: ds.Episode, columns: int = 6, max_frames: int = 18, scale: int = 1
) -> np.ndarray:
    """A grid of evenly spaced frames (first and last included), labelled t=..."""
    frames = episode_frames(episode)
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int))
    tiles = []
    for i in idx:
        tile = frames[i]
        if scale > 1:
            tile = np.kron(tile, np.ones((scale, scale, 1), dtype=np.uint8))
        tiles.append(_font_draw(np.ascontiguousarray(tile), f"t={i}"))
    h, w, _ = tiles[0].shape
    rows = (len(tiles) + columns - 1) // columns
    pad = 2
    sheet = np.full((rows * (h + pad) + pad + 28, columns * (w + pad) + pad, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        y, x = 28 + pad + r * (h + pad), pad + c * (w + pad)
        sheet[y : y + h, x : x + w] = tile
    from PIL import Image, ImageDraw

    pil = Image.fromarray(sheet)
    draw = ImageDraw.Draw(pil)
    status = "success" if episode.success else "FAILURE"
    draw.text((4, 2), f'"{episode.instruction}"', fill=(0, 0, 0))
    draw.text(
        (4, 14),
        f"{episode.env_name} seed={episode.seed} family={episode.task_family} "
        f"T={episode.length} {status} (ground truth)",
        fill=(0, 0, 0) if episode.success else (200, 0, 0),
    )
    return np.asarray(pil)


def save_episode_media(
    episode: ds.Episode, prefix: str | Path, scale: int = 1, fps: int = 10
) -> tuple[Path, Path]:
    """Write ``PREFIX.png`` (contact sheet) and ``PREFIX.gif`` (all frames)."""
    import imageio.v3 as iio

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png, gif = prefix.with_suffix(".png"), prefix.with_suffix(".gif")
    iio.imwrite(png, contact_sheet(episode, scale=scale))
    frames = episode_frames(episode)
    if scale > 1:
        frames = np.kron(frames, np.ones((1, scale, scale, 1), dtype=np.uint8))
    iio.imwrite(gif, list(frames), duration=1000 // fps, loop=0)
    return png, gif


def fresh_episode(
    env_name: str, seed: int, family: str | None, image_size: int, suboptimality: float
) -> ds.Episode:
    """Roll out one new episode with the env's demonstrator (random for BananaTable)."""
    from efm_sim import make_env
    from efm_sim.rollout import record_episode

    if env_name == "pointmass":
        from efm_sim.pointmass import WaypointPDDemonstrator

        return record_episode(make_env("pointmass"), WaypointPDDemonstrator(), seed)
    env = make_env(env_name, image_size=image_size)
    options = {"task_family": family} if family else None
    if env_name == "pushtable":
        from efm_sim.demonstrators import PushTableDemonstrator

        demo = PushTableDemonstrator(suboptimality=suboptimality)
        return record_episode(env, demo, seed, options=options, attrs=demo.describe())
    return record_episode(env, NaiveBananaPusher(env), seed, options=options)


class NaiveBananaPusher:
    """Pushes the banana straight at the goal from a random, often off-centre, contact.

    For looking at BananaTable's physics only (off-centre pushes make the banana spin,
    paper Figure 9); it is not a demonstrator and never produces training data.
    """

    def __init__(self, env: object) -> None:
        self.env = env
        self._offset = 0.0
        self._pushing = False

    def reset(self, obs: object, rng: np.random.Generator) -> None:
        self._offset = float(rng.uniform(-0.06, 0.06))
        self._pushing = False

    def act(self, obs: object) -> np.ndarray:
        from efm_sim.tabletop import ACTION_LIMIT, location_xy

        env = self.env.unwrapped  # type: ignore[attr-defined]
        ee, pose = env.ee_xy(), env.banana_pose()
        to_goal = location_xy(env.task.location) - pose[:2]
        u = to_goal / max(float(np.linalg.norm(to_goal)), 1e-6)
        n = np.array([-u[1], u[0]])
        pre = pose[:2] - u * 0.04 + n * self._offset
        if not self._pushing:
            self._pushing = bool(np.linalg.norm(pre - ee) < 0.015)
            step = pre - ee
        else:
            step = u * 0.02
            if float((ee - pose[:2]) @ u) > 0.0 or abs(float((ee - pose[:2]) @ n)) > 0.09:
                self._pushing = False
        norm = max(float(np.linalg.norm(step)), 1e-9)
        return (step * min(1.0, 0.025 / norm)).clip(-ACTION_LIMIT, ACTION_LIMIT)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m efm_sim.view",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="dataset directory")
    src.add_argument(
        "--env",
        choices=("pointmass", "pushtable", "bananatable"),
        help="roll out a fresh episode instead",
    )
    p.add_argument("--episode", type=int, default=0, help="episode file index (--dataset)")
    p.add_argument("--seed", type=int, default=0, help="env seed (--env)")
    p.add_argument("--family", default=None, help="task family (--env)")
    p.add_argument("--image-size", type=int, default=96, help="camera resolution (--env)")
    p.add_argument("--suboptimality", type=float, default=0.5, help="demonstrator knob (--env)")
    p.add_argument("--scale", type=int, default=1, help="integer upscaling of frames")
    p.add_argument("--out", required=True, help="output prefix (writes PREFIX.png, PREFIX.gif)")
    args = p.parse_args(argv)
    if args.dataset is not None:
        path = ds.episode_path(args.dataset, args.episode)
        if not path.exists():
            raise SystemExit(f"{path} does not exist")
        episode = ds.read_episode(path)
    else:
        episode = fresh_episode(
            args.env, args.seed, args.family, args.image_size, args.suboptimality
        )
    png, gif = save_episode_media(episode, args.out, scale=args.scale)
    print(f"{png}\n{gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
