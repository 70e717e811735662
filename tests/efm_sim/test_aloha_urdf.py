"""urdf/aloha.urdf (issue 14 item 6) is generated from the MJCF and stays in sync with it:
forward kinematics of the URDF, driven by the station's joint_states names (normalised
gripper included, through mimic joints), puts every link where MuJoCo puts its body."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _rotation(rpy) -> np.ndarray:
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _axis_angle(axis, angle) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def urdf_forward_kinematics(root: ET.Element, values: dict[str, float]) -> dict[str, np.ndarray]:
    """World 4x4 pose of every link from joint values by name (mimic joints followed)."""
    def floats(text):
        return [float(v) for v in text.split()]

    joints = {j.find("child").get("link"): j for j in root.iter("joint")}
    poses = {"world": np.eye(4)}

    def pose(link: str) -> np.ndarray:
        if link in poses:
            return poses[link]
        joint = joints[link]
        origin = joint.find("origin")  # URDF default: the identity
        t = np.eye(4)
        if origin is not None:
            t[:3, :3] = _rotation(floats(origin.get("rpy", "0 0 0")))
            t[:3, 3] = floats(origin.get("xyz", "0 0 0"))
        mimic = joint.find("mimic")
        if mimic is not None:
            q = (float(mimic.get("multiplier")) * values[mimic.get("joint")]
                 + float(mimic.get("offset")))
        else:
            q = values.get(joint.get("name"), 0.0)
        motion = np.eye(4)
        if joint.get("type") == "revolute":
            motion[:3, :3] = _axis_angle(floats(joint.find("axis").get("xyz")), q)
        elif joint.get("type") == "prismatic":
            motion[:3, 3] = np.asarray(floats(joint.find("axis").get("xyz"))) * q
        poses[link] = pose(joint.find("parent").get("link")) @ t @ motion
        return poses[link]

    for link in joints:
        pose(link)
    return poses


def test_committed_urdf_is_what_the_generator_writes():
    from efm_sim.aloha_urdf import urdf_text

    assert (REPO / "urdf" / "aloha.urdf").read_text() == urdf_text(), (
        "urdf/aloha.urdf is stale: run python -m efm_sim.aloha_urdf")


def test_urdf_kinematics_match_mujoco_for_random_joint_states():
    import mujoco

    from efm_sim.aloha import build_model
    from efm_sim.aloha_layout import (
        ARM_HIGH,
        ARM_JOINTS,
        ARM_LOW,
        ARMS,
        unnormalize_gripper,
    )

    root = ET.parse(REPO / "urdf" / "aloha.urdf").getroot()
    by_name = {j.get("name"): j for j in root.iter("joint")}
    for arm in ARMS:  # the station's joint_states names, with the MJCF's ranges
        for name, low, high in zip(ARM_JOINTS, ARM_LOW, ARM_HIGH, strict=True):
            limit = by_name[f"{arm}_{name}"].find("limit")
            assert float(limit.get("lower")) == pytest.approx(low, abs=1e-4)
            assert float(limit.get("upper")) == pytest.approx(high, abs=1e-4)
        assert by_name[f"{arm}_gripper"].find("limit").get("upper") == "1"

    model = build_model(48, 64)
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = {}
        for arm in ARMS:
            for name, low, high in zip(ARM_JOINTS, ARM_LOW, ARM_HIGH, strict=True):
                values[f"{arm}_{name}"] = float(rng.uniform(low, high))
                joint = model.joint(f"vx300s_{arm}/{name}")
                data.qpos[model.jnt_qposadr[joint.id]] = values[f"{arm}_{name}"]
            values[f"{arm}_gripper"] = g = float(rng.uniform(0, 1))
            finger = float(unnormalize_gripper(g))
            data.qpos[model.jnt_qposadr[model.joint(f"vx300s_{arm}/left_finger").id]] = finger
            data.qpos[model.jnt_qposadr[model.joint(f"vx300s_{arm}/right_finger").id]] = -finger
        mujoco.mj_kinematics(model, data)
        poses = urdf_forward_kinematics(root, values)
        checked = 0
        for body in range(model.nbody):
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body)
            if not name.startswith("vx300s_"):
                continue
            arm, _, rest = name.partition("/")
            link = f"{arm.removeprefix('vx300s_')}_{rest or 'base_link'}"
            np.testing.assert_allclose(poses[link][:3, 3], data.xpos[body], atol=1e-5)
            np.testing.assert_allclose(poses[link][:3, :3], data.xmat[body].reshape(3, 3),
                                       atol=1e-5)
            checked += 1
        assert checked == 22  # 11 bodies per arm, fingers included


def test_aloha_rviz_config_shows_what_the_station_publishes():
    """launch/aloha.rviz: fixed frame = the URDF's root, the four camera topics the station
    deployment subscribes, the steps_to_go node's distribution image in the station."""
    import yaml

    rviz = yaml.safe_load((REPO / "launch" / "aloha.rviz").read_text())["Visualization Manager"]
    root = ET.parse(REPO / "urdf" / "aloha.urdf").getroot()
    parents = {j.find("parent").get("link") for j in root.iter("joint")}
    children = {j.find("child").get("link") for j in root.iter("joint")}
    assert parents - children == {rviz["Global Options"]["Fixed Frame"]}
    images = [d["Topic"]["Value"] for d in rviz["Displays"]
              if d["Class"] == "rviz_default_plugins/Image"]
    station = yaml.safe_load((REPO / "config" / "aloha_station.yaml").read_text())
    cameras = station["/**/camera_ingest"]["ros__parameters"]["cameras.topics"]
    assert set(cameras) <= set(images)
    assert "/station_0/steps_to_go/distribution_image" in images
    model = next(d for d in rviz["Displays"] if d["Class"] == "rviz_default_plugins/RobotModel")
    assert model["Description Topic"]["Value"] == "/station_0/robot_description"
