"""PointMass: the 2-D goal-reaching domain of the paper's public pointmass notebook.

Faithful to the notebook (facts in shared/seeds/README.md):

* start position uniform in [-1, 1]^2, goal uniform in [-0.95, 0.95]^2 (5% border);
* observation ``[pos(2), vel(2), goal(2)]``; action = 2-D acceleration;
* one env step = 10 substeps of ``vel += a; pos += vel`` (no friction, no walls);
* ground-truth success ``|pos - goal| < 0.15``; at most 140 steps (then truncation);
* the episode terminates on ground-truth success (``terminate_on_success=True``), as in
  the notebook; learners use their own steps-to-go success detector (paper Section 3).

Demonstrations (paper Stage 1 data): a PD controller, ``a = Kp (target - pos) - Kd vel``
with ``Kp = 2e-4`` and ``Kd = 1.25e-2`` evaluated once per env step and held for the 10
substeps (per-substep units: position per substep^2 and velocity per substep), drives
through 5 random waypoints (switching when within 0.15) and then to the goal. The
episode still ends as soon as the point passes within 0.15 of the goal, so demos are
deliberately sub-optimal (mean ~77 steps) yet ~100% successful. Episodes shorter than
10 steps are dropped. The same PD straight to the goal (``StraightPDController``) takes
~12.6 steps: the reference a good Stage 2 policy should approach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from efm_sim._validation import validate_action
from efm_sim.dataset import Episode

ENV_NAME = "pointmass"
TASK_FAMILY = "reach_goal"
INSTRUCTION = "go to the goal"
START_LOW, START_HIGH = -1.0, 1.0
GOAL_BORDER = 0.05
GOAL_LOW, GOAL_HIGH = -1.0 + GOAL_BORDER, 1.0 - GOAL_BORDER
SUBSTEPS = 10
SUCCESS_RADIUS = 0.15
MAX_EPISODE_STEPS = 140
ACTION_LIMIT = 1e-3
"""Per-component acceleration limit; demos never exceed ~5e-4 (about 2x headroom)."""
KP = 2e-4
KD = 1.25e-2
NUM_WAYPOINTS = 5
WAYPOINT_RADIUS = 0.15
MIN_DEMO_LENGTH = 10
OBS_DIM = 6
ACTION_DIM = 2


def integrate(
    pos: np.ndarray, vel: np.ndarray, accel: np.ndarray, substeps: int = SUBSTEPS
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one env step (``substeps`` x ``vel += a; pos += vel``); works on batches."""
    pos = np.array(pos, dtype=np.float64)
    vel = np.array(vel, dtype=np.float64)
    for _ in range(substeps):
        vel = vel + accel
        pos = pos + vel
    return pos, vel


def pd_action(
    pos: np.ndarray, vel: np.ndarray, target: np.ndarray, kp: float = KP, kd: float = KD
) -> np.ndarray:
    """PD acceleration towards ``target`` (per-substep units), rounded to float32.

    Rounding to float32 makes a recorded float32 action replay bit-exactly in the env.
    """
    accel = kp * (np.asarray(target) - np.asarray(pos)) - kd * np.asarray(vel)
    return np.clip(accel, -ACTION_LIMIT, ACTION_LIMIT).astype(np.float32)


def sample_task(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``(start, goal)`` exactly as ``PointMassEnv.reset`` does from ``rng``."""
    start = rng.uniform(START_LOW, START_HIGH, size=2)
    goal = rng.uniform(GOAL_LOW, GOAL_HIGH, size=2)
    return start, goal


class PointMassEnv(gym.Env[np.ndarray, np.ndarray]):
    """2-D point mass reaching a goal (the paper's pointmass notebook).

    Observation: ``Box(6,)`` float32 ``[pos_x, pos_y, vel_x, vel_y, goal_x, goal_y]``.
    Action: ``Box(2,)`` acceleration in ``[-1e-3, 1e-3]`` per component; out-of-range
    values are clipped, NaN/inf or wrong shapes raise ``ValueError``.
    ``info`` holds ``instruction``, ``task_family`` and ``success`` (ground truth, for
    evaluation only) and ``distance`` (ground truth). The reward is the ground-truth
    success indicator (evaluation only; learners compute their own rewards).

    ``reset(options=...)`` accepts ``task_family`` (must be ``"reach_goal"``),
    ``instruction`` (must be ``"go to the goal"``), and optional ``start`` / ``goal``
    (2-vectors) to pin a task for evaluation.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}
    task_families: ClassVar[tuple[str, ...]] = (TASK_FAMILY,)
    env_name: ClassVar[str] = ENV_NAME

    def __init__(
        self,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        image_size: int = 96,
    ) -> None:
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode
        self.image_size = int(image_size)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Box(
            -ACTION_LIMIT, ACTION_LIMIT, shape=(ACTION_DIM,), dtype=np.float32
        )
        self.instruction = INSTRUCTION
        self.task_family = TASK_FAMILY
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._goal = np.zeros(2)
        self._t = 0

    # -- gymnasium API -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        family = options.pop("task_family", TASK_FAMILY)
        instruction = options.pop("instruction", INSTRUCTION)
        start_opt = options.pop("start", None)
        goal_opt = options.pop("goal", None)
        if options:
            raise ValueError(
                f"unknown reset options {sorted(options)}; valid: "
                "task_family, instruction, start, goal"
            )
        if family != TASK_FAMILY:
            raise ValueError(f"unknown task family {family!r}; valid: [{TASK_FAMILY!r}]")
        if instruction != INSTRUCTION:
            raise ValueError(f"unknown instruction {instruction!r}; valid: [{INSTRUCTION!r}]")
        start, goal = sample_task(self.np_random)
        if start_opt is not None:
            start = _as_point(start_opt, "start")
        if goal_opt is not None:
            goal = _as_point(goal_opt, "goal")
        self._pos, self._vel, self._goal = start, np.zeros(2), goal
        self._t = 0
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        accel = validate_action(action, self.action_space)
        self._pos, self._vel = integrate(self._pos, self._vel, accel)
        self._t += 1
        info = self._info()
        success = info["success"]
        terminated = bool(success and self.terminate_on_success)
        truncated = bool(not terminated and self._t >= self.max_episode_steps)
        return self._obs(), float(success), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """Top-down RGB sketch: goal disc (green, success radius) and the point (red)."""
        if self.render_mode != "rgb_array":
            return None
        return render_frame(self._pos, self._goal, self.image_size)

    # -- helpers ---------------------------------------------------------------------
    @property
    def elapsed_steps(self) -> int:
        return self._t

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, self._vel, self._goal]).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        dist = float(np.linalg.norm(self._pos - self._goal))
        return {
            "instruction": self.instruction,
            "task_family": self.task_family,
            "success": bool(dist < SUCCESS_RADIUS),
            "distance": dist,
        }


def _as_point(value: object, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (2,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a finite 2-vector, got {value!r}")
    return arr


def render_frame(pos: np.ndarray, goal: np.ndarray, size: int = 96) -> np.ndarray:
    """Rasterise the PointMass state into a (size, size, 3) uint8 image (+y is up)."""
    extent = 1.2
    coords = (np.arange(size) + 0.5) / size * 2 * extent - extent
    xx, yy = np.meshgrid(coords, coords[::-1])
    img = np.full((size, size, 3), 235, dtype=np.uint8)
    img[(np.abs(xx) <= 1.0) & (np.abs(yy) <= 1.0)] = (250, 250, 250)
    img[(xx - goal[0]) ** 2 + (yy - goal[1]) ** 2 < SUCCESS_RADIUS**2] = (60, 170, 75)
    radius = max(0.05, 2.5 * 2 * extent / size)
    img[(xx - pos[0]) ** 2 + (yy - pos[1]) ** 2 < radius**2] = (210, 40, 40)
    return img


# -- controllers -------------------------------------------------------------------
class StraightPDController:
    """Reference controller: the demo PD straight to the goal (~12.6 steps, 100%)."""

    def reset(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Nothing to reset; present for the demonstrator interface."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        return pd_action(obs[..., 0:2], obs[..., 2:4], obs[..., 4:6])


class WaypointPDDemonstrator:
    """The notebook's sub-optimal demonstrator: PD through random waypoints, then goal."""

    def __init__(
        self, num_waypoints: int = NUM_WAYPOINTS, switch_radius: float = WAYPOINT_RADIUS
    ) -> None:
        self.num_waypoints = num_waypoints
        self.switch_radius = switch_radius
        self._targets = np.zeros((0, 2))
        self._k = 0

    def reset(self, obs: np.ndarray, rng: np.random.Generator) -> None:
        """Sample ``num_waypoints`` waypoints uniformly in [-1, 1]^2 for a new episode."""
        goal = np.asarray(obs, dtype=np.float64)[4:6]
        waypoints = rng.uniform(START_LOW, START_HIGH, size=(self.num_waypoints, 2))
        self._targets = np.vstack([waypoints, goal[None]])
        self._k = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        pos, vel = obs[0:2], obs[2:4]
        last = len(self._targets) - 1
        # Switch to the next target once within the radius (checked before acting, which
        # equals the notebook's check right after the previous step).
        while self._k < last and np.linalg.norm(pos - self._targets[self._k]) < self.switch_radius:
            self._k += 1
        return pd_action(pos, vel, self._targets[self._k])


@dataclass(frozen=True)
class DemoStats:
    """Summary of a batch of generated demonstrations."""

    num_episodes: int
    num_transitions: int
    mean_length: float
    success_rate: float
    dropped_short: int


def demo_seed(base_seed: int, candidate: int) -> int:
    """Env seed of candidate episode ``candidate`` (same rule in the CLI and here)."""
    return int(base_seed) + int(candidate)


def _rollout_batch(
    seeds: np.ndarray,
    num_waypoints: int,
    max_steps: int,
    straight: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised demonstrator rollouts. Returns obs (N,T+1,6), act (N,T,2), len, success.

    Episode ``i`` matches ``PointMassEnv.reset(seed=seeds[i])`` followed by
    ``WaypointPDDemonstrator`` with ``rng = np.random.default_rng([seeds[i], 1])``.
    """
    n = len(seeds)
    pos = np.empty((n, 2))
    goal = np.empty((n, 2))
    targets = np.empty((n, num_waypoints + 1, 2))
    for i, s in enumerate(seeds):
        pos[i], goal[i] = sample_task(np.random.default_rng(int(s)))
        if not straight:
            targets[i, :num_waypoints] = np.random.default_rng([int(s), 1]).uniform(
                START_LOW, START_HIGH, size=(num_waypoints, 2)
            )
    targets[:, num_waypoints] = goal.astype(np.float32)  # the goal as observed
    k = np.full(n, 0 if not straight else num_waypoints)
    vel = np.zeros((n, 2))
    obs = np.zeros((n, max_steps + 1, OBS_DIM), dtype=np.float32)
    act = np.zeros((n, max_steps, ACTION_DIM), dtype=np.float32)
    length = np.full(n, max_steps)
    success = np.zeros(n, dtype=bool)
    active = np.ones(n, dtype=bool)
    rows = np.arange(n)
    for t in range(max_steps):
        ob = np.concatenate([pos, vel, goal], axis=1).astype(np.float32)
        obs[active, t] = ob[active]
        # The demonstrator sees only the float32 observation (as WaypointPDDemonstrator).
        seen_pos, seen_vel = ob[:, 0:2].astype(np.float64), ob[:, 2:4].astype(np.float64)
        # Waypoint switching (same rule as WaypointPDDemonstrator.act).
        while True:
            near = np.linalg.norm(seen_pos - targets[rows, k], axis=1) < WAYPOINT_RADIUS
            advance = active & near & (k < num_waypoints)
            if not advance.any():
                break
            k[advance] += 1
        a = pd_action(seen_pos, seen_vel, targets[rows, k]).astype(np.float64)
        a[~active] = 0.0
        act[active, t] = a[active]
        new_pos, new_vel = integrate(pos, vel, a)
        pos[active], vel[active] = new_pos[active], new_vel[active]
        done = active & (np.linalg.norm(pos - goal, axis=1) < SUCCESS_RADIUS)
        success |= done
        length[done] = t + 1
        active &= ~done
        if not active.any():
            break
    final_obs = np.concatenate([pos, vel, goal], axis=1).astype(np.float32)
    obs[rows, length] = final_obs
    return obs, act, length, success


def generate_demos(
    num_episodes: int,
    seed: int = 0,
    num_waypoints: int = NUM_WAYPOINTS,
    min_length: int = MIN_DEMO_LENGTH,
    max_steps: int = MAX_EPISODE_STEPS,
    batch_size: int = 4096,
    straight: bool = False,
) -> list[Episode]:
    """Generate ``num_episodes`` kept demonstrations in memory (vectorised numpy).

    Candidate ``j`` uses env seed ``seed + j``; candidates shorter than ``min_length``
    steps are dropped (notebook rule) and the next candidates fill in, so exactly
    ``num_episodes`` episodes come back. Failures (140 steps, no success) are kept with
    ``success=False``. ``straight=True`` uses the straight-to-goal PD instead.
    10,000 demos take a few seconds.
    """
    if num_episodes < 0:
        raise ValueError(f"num_episodes must be >= 0, got {num_episodes}")
    episodes: list[Episode] = []
    candidate = 0
    while len(episodes) < num_episodes:
        need = num_episodes - len(episodes)
        n = min(batch_size, max(64, int(need * 1.15) + 8))
        seeds = np.array([demo_seed(seed, candidate + i) for i in range(n)])
        episodes.extend(
            _batch_to_episodes(seeds, num_waypoints, max_steps, min_length, straight)[:need]
        )
        candidate += n
    return episodes


def _batch_to_episodes(
    seeds: np.ndarray, num_waypoints: int, max_steps: int, min_length: int, straight: bool
) -> list[Episode]:
    obs, act, length, success = _rollout_batch(seeds, num_waypoints, max_steps, straight)
    out = []
    for i, s in enumerate(seeds):
        t = int(length[i])
        if t < min_length:
            continue
        out.append(
            Episode(
                env_name=ENV_NAME,
                seed=int(s),
                instruction=INSTRUCTION,
                task_family=TASK_FAMILY,
                success=bool(success[i]),
                states=obs[i, : t + 1].copy(),
                actions=act[i, :t].copy(),
                images=None,
                attrs={"demonstrator": "straight_pd" if straight else "waypoint_pd"},
            )
        )
    return out


def demo_episode_for_seed(
    seed: int, num_waypoints: int = NUM_WAYPOINTS, min_length: int = MIN_DEMO_LENGTH
) -> Episode | None:
    """One demonstration for env seed ``seed``, or None if dropped as too short."""
    eps = _batch_to_episodes(
        np.array([seed]), num_waypoints, MAX_EPISODE_STEPS, min_length, straight=False
    )
    return eps[0] if eps else None


def summarize(episodes: list[Episode], dropped_short: int = 0) -> DemoStats:
    """Count episodes, transitions, mean length and ground-truth success rate."""
    lengths = np.array([e.length for e in episodes]) if episodes else np.zeros(0)
    return DemoStats(
        num_episodes=len(episodes),
        num_transitions=int(lengths.sum()),
        mean_length=float(lengths.mean()) if episodes else 0.0,
        success_rate=float(np.mean([e.success for e in episodes])) if episodes else 0.0,
        dropped_short=dropped_short,
    )


def stack_transitions(episodes: list[Episode]) -> dict[str, np.ndarray]:
    """Concatenate episodes into flat transition arrays for fast in-memory training.

    Keys (see ``efm_sim.keys``): ``observation.state`` (N,6), ``action`` (N,2),
    ``next.observation.state`` (N,6), ``steps_to_go`` (N,) = T - t, ``done`` (N,),
    ``episode_index`` (N,), ``frame_index`` (N,), ``success`` (N,) per-episode ground truth.
    """
    from efm_sim import keys

    obs, nxt, act, stg, done, epi, frame, succ = [], [], [], [], [], [], [], []
    for i, ep in enumerate(episodes):
        t = ep.length
        obs.append(ep.states[:-1])
        nxt.append(ep.states[1:])
        act.append(ep.actions)
        stg.append(np.arange(t, 0, -1))
        d = np.zeros(t, dtype=bool)
        d[-1] = True
        done.append(d)
        epi.append(np.full(t, i))
        frame.append(np.arange(t))
        succ.append(np.full(t, ep.success))
    if not episodes:
        return {}
    return {
        keys.OBS_STATE: np.concatenate(obs),
        keys.ACTION: np.concatenate(act),
        keys.NEXT_OBS_STATE: np.concatenate(nxt),
        keys.STEPS_TO_GO: np.concatenate(stg),
        keys.DONE: np.concatenate(done),
        keys.EPISODE_INDEX: np.concatenate(epi),
        keys.FRAME_INDEX: np.concatenate(frame),
        keys.SUCCESS: np.concatenate(succ),
    }
