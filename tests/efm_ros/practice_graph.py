"""Builds a small practice deployment YAML for the integration tests (real nodes, tiny
model, PushTable sim in lockstep)."""

from __future__ import annotations

from pathlib import Path

import yaml


def fleet_key(folder: Path) -> Path:
    """The graph's fleet key (efm_ros.fleet_auth) in ``folder``, written once."""
    from efm_ros.fleet_auth import write_key

    key = folder / "fleet.key"
    if not key.exists():
        write_key(key)
    return key


def practice_yaml(
    path: Path,
    checkpoint: Path,
    run_dir: Path,
    stations=("station_0", "station_1"),
    *,
    updates: int = 2,
    batch: int = 8,
    max_steps: int = 6,
    budget: int = 0,
    threshold: float = 0.0,
) -> Path:
    """Write a parameter file; ``threshold`` 0 makes the detector (almost) never fire, so
    episodes run to ``max_steps`` and sizes are predictable. The graph is authenticated
    with a fleet key (efm_ros.fleet_auth) written next to the file."""
    secure = {"security.fleet_key_file": str(fleet_key(path.parent))}
    station = {
        "/**/sim_robot": {
            "sim.env": "pushtable",
            "sim.image_size": 32,
            "control.realtime": False,
            "control.idle_publish_hz": 5.0,
        },
        "/**/camera_ingest": {
            "cameras.names": ["top"],
            "output.size": [32, 32],
            "proprio.enabled": True,
            "proprio.names": ["ee_x", "ee_y"],
            "sync.tolerance_s": 0.01,
        },
        "/**/steps_to_go": {
            "model.checkpoint": str(checkpoint),
            "success.threshold": threshold,
            "predict.every_observation": True,
            "viz.enabled": False,
        },
        "/**/policy": {
            "model.checkpoint": str(checkpoint),
            "control.trigger": "observation",
            "safety.observation_timeout_s": 2.0,
            "weights.allowed_dir": str(run_dir / "learner" / "policy"),
            **secure,
        },
        "/**/episode_recorder": {"recorder.output_dir": str(run_dir / "bags")},
        "/**/actor": {
            "episode.max_steps": max_steps,
            "learner.resend_s": 0.5,
            "learner.spool_dir": str(run_dir / "actor_spool"),
            "episode.stall_timeout_s": 3.0,
            **secure,
        },
    }
    params = {k: {"ros__parameters": v} for k, v in station.items()}
    params["/learner"] = {
        "ros__parameters": {
            "model.policy_checkpoint": str(checkpoint),
            "output_dir": str(run_dir / "learner"),
            "improve.updates_per_round": updates,
            "improve.batch_size": batch,
            **secure,
        }
    }
    params["/coordinator"] = {
        "ros__parameters": {
            "stations": list(stations),
            "budget.episodes": budget,
            "station.lost_after_s": 3.0,
            **secure,
        }
    }
    path.write_text(yaml.safe_dump(params))
    return path


#: a tiny aloha_efm: two stacked 16x16 images, 14 joint tokens, 70 action tokens
TINY_ALOHA = {"type": "aloha_efm", "image_size": 16, "band_px": 2, "channels": [8, 8],
              "hidden_size": 32, "joint_embed_dim": 4,
              "steps_to_go": {"max_steps": 100, "num_bins": 51}}


def write_tiny_aloha_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained tiny ``aloha_efm`` (the real backend at a test's size)."""
    import torch

    from efm_learning.checkpoint import save_checkpoint
    from efm_learning.models import make_model

    torch.manual_seed(seed)
    return save_checkpoint(path, make_model(dict(TINY_ALOHA)), metadata={"purpose": "test"})


def aloha_sim_yaml(
    path: Path, checkpoint: Path, run_dir: Path, *, max_steps: int = 4, updates: int = 1,
    batch: int = 8,
) -> Path:
    """config/aloha_sim_practice.yaml (make demo-aloha's deployment: the station file with
    interbotix_sim standing in for the four arms, node_set.SIMULATED_HARDWARE) at a test's
    model and image sizes, paths and episode length. Everything else is that file's."""
    root = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((root / "config" / "aloha_sim_practice.yaml").read_text())
    key = fleet_key(path.parent)

    def section(name: str) -> dict:
        return params[name]["ros__parameters"]

    for body in params.values():
        if "security.fleet_key_file" in body["ros__parameters"]:
            body["ros__parameters"]["security.fleet_key_file"] = str(key)
    section("/**/interbotix_sim")["sim.image_size"] = [12, 16]
    section("/**/camera_ingest").update({"output.size": [16, 16], "output.band_px": 2,
                                         "sync.tolerance_s": 0.05})
    section("/**/steps_to_go").update({"model.checkpoint": str(checkpoint),
                                       "success.threshold": 0.0, "viz.enabled": False})
    section("/**/policy").update({"model.checkpoint": str(checkpoint),
                                  "weights.allowed_dir": str(run_dir / "learner" / "policy")})
    section("/**/episode_recorder")["recorder.output_dir"] = str(run_dir / "bags")
    section("/**/actor").update({"episode.max_steps": max_steps,
                                 "learner.spool_dir": str(run_dir / "actor_spool"),
                                 "learner.resend_s": 0.5, "episode.stall_timeout_s": 5.0})
    section("/learner").update({"model.policy_checkpoint": str(checkpoint),
                                "output_dir": str(run_dir / "learner"),
                                "improve.updates_per_round": updates,
                                "improve.batch_size": batch})
    path.write_text(yaml.safe_dump(params))
    return path
