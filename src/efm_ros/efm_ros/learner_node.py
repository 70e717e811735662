"""``learner``: the offboard Stage 2 learner (paper Algorithm 1 outer loop, Appendix J).

Receives LabelledEpisodes on ``/learner/episodes``; each one is validated (a safe id,
lengths, finite numbers, returns consistent with the steps-to-go labels, current policy
version), written to a spool folder (fsynced) and only then acknowledged on
``/learner/acks`` with an EpisodeAck: ACCEPTED, DUPLICATE or REJECTED with its reason
(actors re-send until they get one). At N x B samples it asks the coordinator to pause,
runs N REINFORCE updates ``-c R_t log pi(a_t|o_t,g)`` over minibatches drawn without
replacement, writes the checkpoint ``policy/v<k>`` (safetensors + JSON + sha256),
publishes WeightsUpdate on ``/learner/weights`` (latched), clears buffer and spool, and
resumes collection. Episodes of version k that arrive while round k trains are refused as
stale (Algorithm 1 learns each round from the version that acted; the surplus of a round
is discarded there too), so the actor counts them as discarded with that reason.

Exactly once: every accepted episode id is appended to ``seen_episode_ids.txt`` (fsynced)
before it is acknowledged; duplicates are acknowledged as such and dropped. Restarted,
even after ``kill -9``, the learner loads its newest ``policy/v<k>`` (optimizer state
included) and re-fills the buffer from the spool, so an acknowledged episode is neither
lost nor used twice. No field of a received message can raise out of a callback.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message

from efm_interfaces.msg import EpisodeAck, LabelledEpisode, WeightsUpdate
from efm_interfaces.srv import PracticeCommand
from efm_learning.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    load_checkpoint,
    load_trainer_state,
    optimizer_from_state,
    optimizer_to_state,
    save_checkpoint,
    sha256_file,
)
from efm_learning.devices import resolve_device
from efm_learning.distributed import (
    DistContext,
    cleanup,
    exit_process,
    init_distributed,
    shard_size,
    wrap_model,
)
from efm_learning.replay_buffer import EpisodeError, LabelledAdder, ReplayBuffer
from efm_learning.self_improvement import reinforce_step, to_policy_batch
from efm_ros.conversions import check_episode_id, observation_arrays
from efm_ros.diagnostics import Diagnostics
from efm_ros.fleet_auth import declare_fleet_key, sign, verify
from efm_ros.model_host import model_input
from efm_ros.node_set import load_params, node_params
from efm_ros.params import Parameters
from efm_ros.qos import LATCHED, RELIABLE
from efm_ros.spin import NodeEntry, help_requested, node_help, run_node
from efm_ros.weights_transfer import DEFAULT_CHUNK, WeightsServer, service_uri


def newest_version(policy_dir: Path) -> tuple[int, Path] | None:
    """The highest ``v<k>`` checkpoint under ``policy_dir``."""
    found = []
    for path in policy_dir.glob("v*"):
        if path.is_dir() and path.name[1:].isdigit() and (path / MODEL_FILE).is_file():
            found.append((int(path.name[1:]), path))
    return max(found) if found else None


#: parameter defaults, shared by the node's declarations and the torchrun followers
DEFAULTS = {
    "model.policy_checkpoint": "",
    "output_dir": "runs/learner",
    "improve.updates_per_round": 16,
    "improve.batch_size": 64,
    "improve.reinforce_c": 5e-2,
    "improve.lr": 3e-4,
    "improve.weight_decay": 1e-4,
    "improve.grad_clip": 1.0,
    "improve.gamma": 0.9,
    "improve.success_bonus": 0.0,
    "seed": 0,
    "compute.device": "cpu",
}


def unpack_episode(msg: LabelledEpisode, num_tokens: int) -> tuple[dict, np.ndarray]:
    """Message -> (observation batch for o_0..o_T-1, tokens (T, K)); ValueError if bad."""
    t = int(msg.length)
    if t < 1 or len(msg.observations) != t:
        raise ValueError(f"length {t} but {len(msg.observations)} observations")
    k = int(msg.tokens_per_action)
    if k != num_tokens or len(msg.action_tokens) != t * k:
        raise ValueError(
            f"{len(msg.action_tokens)} action tokens for {t} x {k}; the "
            f"policy uses {num_tokens} per action"
        )
    if len(msg.rewards) != t or len(msg.returns) != t or len(msg.steps_to_go) != t + 1:
        raise ValueError("rewards/returns/steps_to_go lengths do not match the episode")
    arrays = [observation_arrays(o) for o in msg.observations]
    tokens = np.asarray(msg.action_tokens, dtype=np.int64).reshape(t, k)
    return model_input(arrays, msg.instruction), tokens


class Trainer:
    """The policy, its optimizer and one round of N REINFORCE updates (Algorithm 1).

    Every round rebuilds its buffer from the spool (sorted by name), so each process under
    torchrun sees the same samples in the same minibatch order; each process trains on its
    shard of every minibatch and DDP averages the gradients. Single process: the whole batch.
    """

    def __init__(self, settings: dict, ctx: DistContext) -> None:
        self.settings = {**DEFAULTS, **settings}
        self.ctx = ctx
        out = Path(self.settings["output_dir"])
        self.policy_dir, self.spool = out / "policy", out / "spool"
        newest = newest_version(self.policy_dir)
        self.start_path = newest[1] if newest else Path(self.settings["model.policy_checkpoint"])
        self.version = newest[0] if newest else 0
        self.model, _ = load_checkpoint(self.start_path, device=learner_device(self.settings))
        self.model.train()
        self.params = self.model.stage2_parameters()
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=self.settings["improve.lr"],
            weight_decay=self.settings["improve.weight_decay"],
        )
        state = load_trainer_state(self.start_path) if newest else None
        if state is not None:
            optimizer_from_state(self.optimizer, state)
        self.ddp = wrap_model(self.model, ctx, find_unused=True)
        shard_size(self.settings["improve.batch_size"], ctx)  # B must split evenly

    def run_round(self, version: int) -> tuple[list[dict], int, list[str]]:
        """N updates on the spooled episodes of policy ``version``; (stats, samples, the
        ids of the episodes learned from, recorded in the checkpoint as provenance)."""
        s = self.settings
        buffer = ReplayBuffer()
        adder = LabelledAdder(
            buffer, self.model.num_action_tokens, self.model.action_vocab, s["improve.gamma"],
            success_bonus=s["improve.success_bonus"],
        )
        episode_ids = []
        for path in sorted(self.spool.glob("*.cdr")):
            msg = deserialize_message(path.read_bytes(), LabelledEpisode)
            if msg.policy_version != version:
                continue
            episode_ids.append(msg.episode_id)
            observations, tokens = unpack_episode(msg, self.model.num_action_tokens)
            adder.add(
                observations,
                tokens,
                np.asarray(msg.steps_to_go),
                np.asarray(msg.returns),
                msg.gamma,
                msg.success,
            )
        rng = np.random.default_rng([int(s["seed"]), version])
        rank, world = self.ctx.rank, self.ctx.world_size
        stats = []
        for batch in buffer.minibatches(
            s["improve.updates_per_round"], s["improve.batch_size"], rng
        ):
            shard = {k: v[rank::world] for k, v in batch.items()}
            stats.append(
                reinforce_step(
                    self.ddp,
                    self.optimizer,
                    self.params,
                    to_policy_batch(self.model, shard),
                    s["improve.reinforce_c"],
                    s["improve.grad_clip"],
                )
            )
        return stats, len(buffer), episode_ids


def learner_device(settings: dict) -> str:
    """``cpu``, or ``cuda`` -> this rank's GPU (torchrun's LOCAL_RANK); a missing GPU is
    an error (efm_learning.devices), never a silent CPU fallback."""
    name = settings["compute.device"]
    if name not in ("cpu", "cuda"):
        raise ValueError(f"compute.device must be 'cpu' or 'cuda', got {name!r}")
    if name == "cpu":
        return "cpu"
    device = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    torch.cuda.set_device(device)
    return str(device)


def announce(ctx: DistContext, version: int = 0) -> int:
    """Rank 0 tells the other ranks to run the round for ``version`` (-1: stop); every rank
    returns rank 0's value. A plain int64 tensor: nothing is pickled."""
    device = (
        "cuda"
        if torch.distributed.is_initialized() and (torch.distributed.get_backend() == "nccl")
        else "cpu"
    )
    flag = torch.tensor([version], dtype=torch.int64, device=device)
    if ctx.enabled:
        torch.distributed.broadcast(flag, 0)
    return int(flag.item())


class LearnerNode(Node):
    """Replay buffer + REINFORCE updates + weight publication (Algorithm 1, the learner's
    side): labelled episodes in, a new policy version out after each round."""

    def __init__(self, ctx: DistContext | None = None, **kwargs) -> None:
        super().__init__("learner", **kwargs)
        self.ctx = ctx or DistContext()
        p = Parameters(self)
        p.declare(
            "model.policy_checkpoint",
            "",
            "Stage 1 policy checkpoint (best BC validation, Appendix B).",
            read_only=True,
            validator=lambda v: None if v else "required",
        )
        self.out = Path(
            p.declare(
                "output_dir", "runs/learner", "Checkpoints, spool and episode ids.", read_only=True
            )
        )
        self.updates = p.declare(
            "improve.updates_per_round",
            16,
            "N updates per round (paper 16).",
            read_only=True,
            min_value=1,
        )
        self.batch = p.declare(
            "improve.batch_size", 64, "B, minibatch size (paper 64).", read_only=True, min_value=1
        )
        self.c = p.declare(
            "improve.reinforce_c", 5e-2, "c of -c R log pi (Appendix C).", min_value=0.0
        )
        p.declare("improve.lr", 3e-4, "AdamW learning rate.", read_only=True, min_value=0.0)
        p.declare(
            "improve.weight_decay", 1e-4, "AdamW weight decay.", read_only=True, min_value=0.0
        )
        self.grad_clip = p.declare(
            "improve.grad_clip", 1.0, "Global-norm gradient clip (0 = off).", min_value=0.0
        )
        gamma = p.declare(
            "improve.gamma",
            0.9,
            "Discount the actors must use.",
            read_only=True,
            min_value=0.0,
            max_value=1.0,
        )
        bonus = p.declare(
            "improve.success_bonus",
            0.0,
            "Added to the last reward of an episode the detector ended (Section 4.1.3, "
            "Aloha); the actors' labelling.success_bonus must match.",
            read_only=True,
            min_value=0.0,
        )
        p.declare("seed", 0, "Minibatch order seed.", read_only=True)
        p.declare(
            "compute.device",
            "cpu",
            "cpu, or cuda: each torchrun rank on its own GPU (nccl); a missing GPU fails "
            "at start-up.",
            read_only=True,
            choices=("cpu", "cuda"),
        )
        self.pause_service = p.declare(
            "coordinator.service",
            "/practice/command",
            "Coordinator's PracticeCommand service.",
            read_only=True,
        )

        self.transport = p.declare(
            "weights.transport",
            "file",
            "How stations get each version: file (a file:// uri on a shared filesystem) or ros "
            "(a ros:// uri: chunked download from this node's get_weights service).",
            read_only=True,
            choices=("file", "ros"),
        )
        chunk = p.declare(
            "weights.chunk_bytes", DEFAULT_CHUNK, "Largest GetWeights chunk [bytes].",
            read_only=True, min_value=4096, max_value=16 * 1024 * 1024,
        )

        settings = {name: self.get_parameter(name).value for name in DEFAULTS}
        self.trainer = Trainer(settings, self.ctx)
        self.start_version = self.trainer.version
        self.policy_dir, self.spool = self.trainer.policy_dir, self.trainer.spool
        self.spool.mkdir(parents=True, exist_ok=True)
        self.seen_path = self.out / "seen_episode_ids.txt"
        self.seen = set(self.seen_path.read_text().split()) if self.seen_path.exists() else set()
        self.version = self.trainer.version
        self.model = self.trainer.model
        self.buffer = ReplayBuffer()  # counts and validates arrivals; rounds read the spool
        self.adder = LabelledAdder(
            self.buffer, self.model.num_action_tokens, self.model.action_vocab, gamma,
            success_bonus=bonus,
        )
        path = self.trainer.start_path
        self.lock = threading.Lock()
        self.learning = False
        self.diag = Diagnostics(self)
        self.fleet_key = declare_fleet_key(p, self.get_logger())

        self.ack_pub = self.create_publisher(EpisodeAck, "/learner/acks", RELIABLE)
        self.weights_pub = self.create_publisher(WeightsUpdate, "/learner/weights", LATCHED)
        self.create_subscription(LabelledEpisode, "/learner/episodes", self.on_episode, RELIABLE)
        self.coordinator = self.create_client(
            PracticeCommand, self.pause_service, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.weights_server = WeightsServer(
            self, "~/get_weights", self.published_dir, chunk,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.restore_spool()
        self.publish_weights(path)
        self.get_logger().info(
            f"learner ready: policy v{self.version} from {path}, buffer {len(self.buffer)} / "
            f"{self.capacity} samples"
        )
        self.maybe_learn()

    @property
    def capacity(self) -> int:
        return self.updates * self.batch

    # -- episodes in ----------------------------------------------------------------------
    def on_episode(self, msg: LabelledEpisode) -> None:
        with self.lock:
            outcome, reason = self.accept(msg, from_spool=False)
            ack = EpisodeAck(
                episode_id=msg.episode_id[:128], outcome=outcome, reason=reason[:500],
                learner_version=self.version, buffer_samples=len(self.buffer),
                buffer_capacity=self.capacity,
            )
        ack.header.stamp = self.get_clock().now().to_msg()
        # decided, whatever the outcome: the actor never re-sends it
        self.ack_pub.publish(sign(ack, self.fleet_key))
        if outcome == EpisodeAck.ACCEPTED:
            self.maybe_learn()

    def accept(self, msg: LabelledEpisode, from_spool: bool) -> tuple[int, str]:
        """Validate, spool (durably, before any acknowledgement) and add one episode; the
        caller holds the lock. Nothing a sender put in the message can raise out of here."""
        if not from_spool and (problem := verify(msg, self.fleet_key)):
            return self.refuse("unauthenticated", problem)
        try:
            check_episode_id(msg.episode_id)
        except ValueError as error:
            return self.refuse("episode", f"invalid: bad episode id: {error}")
        if msg.episode_id in self.seen and not from_spool:
            self.diag.count("episodes.duplicate")
            return EpisodeAck.DUPLICATE, ""
        if self.learning or msg.policy_version != self.version:
            # Algorithm 1 learns only from the version being trained; surplus episodes of
            # a round (arriving while it trains) are refused, and the actor counts them
            return self.refuse(
                "stale",
                f"stale: policy v{msg.policy_version}, learner "
                f"{'training' if self.learning else 'collecting for'} v{self.version}",
            )
        try:
            observations, tokens = unpack_episode(msg, self.model.num_action_tokens)
            args = (observations, tokens, np.asarray(msg.steps_to_go), np.asarray(msg.returns))
            stats = self.adder.check(*args, msg.gamma, msg.success)
        except (EpisodeError, ValueError) as error:
            return self.refuse("episode", f"invalid: {error}")
        if not from_spool:
            try:
                self.spool_episode(msg)
            except OSError as error:  # disk full, permissions: refuse it, keep learning
                return self.refuse("spool", f"spool: {error}")
        self.adder.add_checked(observations, tokens, stats)
        self.diag.count("episodes.accepted")
        self.diag.count("samples", stats.length)
        return EpisodeAck.ACCEPTED, ""

    def refuse(self, kind: str, reason: str) -> tuple[int, str]:
        self.diag.reject(kind, reason)
        return EpisodeAck.REJECTED, reason

    def spool_episode(self, msg: LabelledEpisode) -> None:
        """Write the episode to the spool and its id to the seen list (fsynced): only
        then may it be acknowledged."""
        spool_file = self.spool / f"{msg.episode_id}.cdr"
        tmp = spool_file.with_suffix(".tmp")
        try:
            with tmp.open("wb") as handle:
                handle.write(serialize_message(msg))
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(spool_file)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self.seen.add(msg.episode_id)
        with self.seen_path.open("a") as handle:
            handle.write(msg.episode_id + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def restore_spool(self) -> None:
        for path in sorted(self.spool.glob("*.cdr")):
            msg = deserialize_message(path.read_bytes(), LabelledEpisode)
            with self.lock:
                if self.accept(msg, from_spool=True)[0] != EpisodeAck.ACCEPTED:
                    path.unlink()  # from an older policy version: already learned from
                else:
                    self.diag.count("episodes.restored")

    # -- learning -------------------------------------------------------------------------
    def maybe_learn(self) -> None:
        with self.lock:
            if self.learning or len(self.buffer) < self.capacity:
                return
            self.learning = True
        self.round_thread = threading.Thread(
            target=self.learn, name="efm-learner-round", daemon=True
        )
        self.round_thread.start()

    def finish_round(self, timeout: float = 30.0) -> None:
        """On shutdown: let a running round finish (its checkpoint is written atomically;
        a process torn down under torch's worker threads aborted, seen as exit -6)."""
        thread = getattr(self, "round_thread", None)
        if thread is not None and thread.is_alive():
            self.get_logger().info("waiting for the running learning round to finish")
            thread.join(timeout)

    def command(self, command: int) -> None:
        if not self.coordinator.wait_for_service(timeout_sec=2.0):
            self.diag.reject("coordinator", "practice/command unavailable")
            return
        self.coordinator.call_async(PracticeCommand.Request(command=command, source="learner"))

    def learn(self) -> None:
        """N REINFORCE updates (Algorithm 1), checkpoint, publish, clear, resume."""
        self.command(PracticeCommand.Request.PAUSE)
        started = time.monotonic()
        try:
            self.trainer.settings["improve.reinforce_c"] = self.c
            self.trainer.settings["improve.grad_clip"] = self.grad_clip
            announce(self.ctx, self.version + 1)  # torchrun: the other ranks join the round
            stats, samples, episode_ids = self.trainer.run_round(self.version)
            version = self.version + 1
            path = save_checkpoint(
                self.policy_dir / f"v{version}",
                self.model,
                metadata={
                    "policy_version": version,
                    "learning_round": version,
                    "samples": samples,
                    "episode_ids": episode_ids,
                    "loss": float(np.mean([s["loss"] for s in stats])),
                },
                trainer_state=optimizer_to_state(self.trainer.optimizer),
            )
            with self.lock:
                self.version = version
                self.buffer.clear()
                for spooled in self.spool.glob("*.cdr"):
                    spooled.unlink()
                self.learning = False
            self.diag.count("rounds")
            self.diag.count("learning_ms", int((time.monotonic() - started) * 1000))
            self.publish_weights(path)
            loss = np.mean([s["loss"] for s in stats])
            norm = np.mean([s["grad_norm"] for s in stats])
            self.get_logger().info(
                f"round {version}: {len(stats)} updates, loss {loss:.4f}, grad norm {norm:.3f}"
                f" -> policy v{version}"
            )
        except Exception as error:  # keep the last good checkpoint, stay paused, say why
            self.get_logger().error(f"learning round failed, practice stays paused: {error}")
            self.diag.reject("round", str(error))
            return
        self.command(PracticeCommand.Request.RESUME)

    def published_dir(self, version: int) -> Path | None:
        """The checkpoint directory of a published ``version`` (served by get_weights)."""
        if version > self.version:
            return None
        path = self.policy_dir / f"v{version}"
        if path.is_dir():
            return path
        return self.trainer.start_path if version == self.start_version else None

    def publish_weights(self, path: Path) -> None:
        uri = f"file://{path.resolve()}"
        if self.transport == "ros":
            uri = service_uri(self.weights_server.name)
        msg = WeightsUpdate(
            version=self.version,
            uri=uri,
            sha256=sha256_file(path / MODEL_FILE),
            config_sha256=sha256_file(path / CONFIG_FILE),
            learning_round=self.version,
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.created = msg.header.stamp
        self.weights_pub.publish(sign(msg, self.fleet_key))


def main(args: list[str] | None = None) -> None:
    """One process, or every rank under ``torchrun``: rank 0 is the ROS node, the other ranks
    follow its rounds (same spool, DDP-averaged gradients: the learner machine's GPUs)."""
    if help_requested(args):
        print(node_help(NodeEntry(LearnerNode), "learner"))
        return
    argv = sys.argv if args is None else args
    settings = settings_from_argv(argv)
    ctx = init_distributed("nccl" if settings.get("compute.device") == "cuda" else "gloo")
    try:
        if ctx.rank == 0:
            run_node(NodeEntry(lambda **kw: LearnerNode(ctx=ctx, **kw), threads=2,
                               on_shutdown=LearnerNode.finish_round), args)
            announce(ctx, -1)
        else:
            follow_rounds(ctx, settings)
    except BaseException:
        cleanup(ctx, barrier=False)
        raise
    cleanup(ctx)
    exit_process(ctx)


def settings_from_argv(argv: list[str]) -> dict:
    """The learner's parameters from ``--params-file`` (for ranks that run no ROS node)."""
    if "--params-file" not in argv:
        return {}
    params = load_params(argv[argv.index("--params-file") + 1])
    return {k: v for k, v in node_params(params, "/learner").items() if k in DEFAULTS}


def follow_rounds(ctx: DistContext, settings: dict) -> None:
    """A torchrun rank > 0: no ROS node, the same Trainer, rounds announced by rank 0."""
    torch.set_num_threads(1)
    trainer = Trainer(settings, ctx)
    while (version := announce(ctx)) >= 0:
        trainer.run_round(version - 1)


if __name__ == "__main__":
    main()
