"""Builds a small practice deployment YAML for the integration tests (real nodes, tiny
model, PushTable sim in lockstep)."""

from __future__ import annotations

from pathlib import Path

import yaml


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
    from efm_ros.fleet_auth import write_key

    key = path.parent / "fleet.key"
    if not key.exists():
        write_key(key)
    secure = {"security.fleet_key_file": str(key)}
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
