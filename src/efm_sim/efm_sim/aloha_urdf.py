"""The ALOHA station's robot model for rviz, derived from the MJCF kinematics (issue 14).

    python -m efm_sim.aloha_urdf [--out urdf/aloha.urdf]

Reads the bimanual vx300s of ``efm_sim.aloha.build_model`` (gym-aloha's MJCF) and writes
a URDF with the same kinematic tree: every arm body becomes a link, every hinge a revolute
joint with the MJCF's axis and range, each body's pose its joint origin. Joint names are
the station's ``joint_states`` names (``efm_sim.aloha_layout.STATE_NAMES``: ``left_waist``
... ``right_gripper``), so ``robot_state_publisher`` draws the arms from the topic the
station already publishes. The normalised gripper (0 closed, 1 open) is a virtual prismatic
joint that both fingers mimic with the follower's finger positions (``unnormalize_gripper``:
left finger +p, right finger -p, metres). Visuals are boxes: each MJCF mesh's bounding box
in its geom frame (the STL meshes stay in the gym-aloha package, which a robot computer
running rviz need not have). Table, peg and socket are left out (not part of the robot).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from efm_sim.aloha_layout import (
    ARM_JOINTS,
    ARMS,
    GRIPPER_POSITION_CLOSE,
    GRIPPER_POSITION_OPEN,
)

ROOT_LINK = "world"
GREY = "0.55 0.55 0.55 1"


def _rpy(quat_wxyz: np.ndarray) -> tuple[float, float, float]:
    """Unit quaternion (w, x, y, z) -> URDF roll, pitch, yaw (fixed X-Y-Z axes)."""
    w, x, y, z = (float(v) for v in quat_wxyz / np.linalg.norm(quat_wxyz))
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def _fmt(values) -> str:
    return " ".join(f"{0.0 if abs(v) < 5e-10 else v:.6g}" for v in values)


def _origin(parent: ET.Element, pos, quat) -> None:
    ET.SubElement(parent, "origin", xyz=_fmt(pos), rpy=_fmt(_rpy(np.asarray(quat))))


def _station_name(mj_name: str) -> str:
    """``vx300s_left/upper_arm_link`` -> ``left_upper_arm_link`` (bodies and joints alike);
    the arm's root body -> ``left_base_link``."""
    arm, _, rest = mj_name.partition("/")
    return f"{arm.removeprefix('vx300s_')}_{rest or 'base_link'}"


def _box_visuals(link: ET.Element, model, body: int) -> None:
    """One box per geom of ``body``: its bounding box, in the geom's frame."""
    import mujoco

    for g in range(model.body_geomadr[body], model.body_geomadr[body] + model.body_geomnum[body]):
        center, half = model.geom_aabb[g][:3], model.geom_aabb[g][3:]
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.geom_quat[g])
        visual = ET.SubElement(link, "visual")
        _origin(visual, model.geom_pos[g] + rot.reshape(3, 3) @ center, model.geom_quat[g])
        geometry = ET.SubElement(visual, "geometry")
        ET.SubElement(geometry, "box", size=_fmt(2 * half))
        ET.SubElement(visual, "material", name="vx300s_grey")


def build_urdf(image_height: int = 48, image_width: int = 64) -> ET.Element:
    """The URDF tree of both arms (``image_*`` only size the MuJoCo cameras it ignores)."""
    import mujoco

    from efm_sim.aloha import build_model

    model = build_model(image_height, image_width)
    robot = ET.Element("robot", name="aloha_bimanual_vx300s")
    material = ET.SubElement(robot, "material", name="vx300s_grey")
    ET.SubElement(material, "color", rgba=GREY)
    ET.SubElement(robot, "link", name=ROOT_LINK)
    name_of = {b: mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) for b in range(model.nbody)}
    for body in range(1, model.nbody):
        name = name_of[body]
        if not name.startswith(tuple(f"vx300s_{arm}" for arm in ARMS)):
            continue  # table, peg, socket: not the robot
        link = ET.SubElement(robot, "link", name=_station_name(name))
        _box_visuals(link, model, body)
        parent = model.body_parentid[body]
        parent_link = ROOT_LINK if parent == 0 else _station_name(name_of[parent])
        njnt = model.body_jntnum[body]
        if njnt > 1:
            raise ValueError(f"{name} has {njnt} joints; the URDF needs at most one per body")
        mj_joint = model.body_jntadr[body] if njnt else -1
        joint_name = (_station_name(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, mj_joint))
                      if njnt else f"{_station_name(name)}_fixed")
        kind = "fixed"
        if njnt:
            kind = {mujoco.mjtJoint.mjJNT_HINGE: "revolute",
                    mujoco.mjtJoint.mjJNT_SLIDE: "prismatic"}[model.jnt_type[mj_joint]]
        joint = ET.SubElement(robot, "joint", name=joint_name, type=kind)
        _origin(joint, model.body_pos[body], model.body_quat[body])
        ET.SubElement(joint, "parent", link=parent_link)
        ET.SubElement(joint, "child", link=_station_name(name))
        if njnt:
            ET.SubElement(joint, "axis", xyz=_fmt(model.jnt_axis[mj_joint]))
            low, high = model.jnt_range[mj_joint]
            ET.SubElement(joint, "limit", lower=_fmt([low]), upper=_fmt([high]),
                          effort="10", velocity="3.14")
    for arm in ARMS:
        _gripper(robot, arm)
    _check_joint_names(robot)
    return robot


def _gripper(robot: ET.Element, arm: str) -> None:
    """``<arm>_gripper`` (normalised 0..1, a virtual joint) drives both fingers by mimic."""
    span = GRIPPER_POSITION_OPEN - GRIPPER_POSITION_CLOSE
    ET.SubElement(robot, "link", name=f"{arm}_gripper_virtual")
    joint = ET.SubElement(robot, "joint", name=f"{arm}_gripper", type="prismatic")
    ET.SubElement(joint, "parent", link=f"{arm}_gripper_link")
    ET.SubElement(joint, "child", link=f"{arm}_gripper_virtual")
    ET.SubElement(joint, "axis", xyz="1 0 0")
    ET.SubElement(joint, "limit", lower="0", upper="1", effort="1", velocity="1")
    for finger, sign in (("left_finger", 1.0), ("right_finger", -1.0)):
        mimicking = robot.find(f"joint[@name='{arm}_{finger}']")
        if mimicking is None:
            raise ValueError(f"the MJCF has no {arm} {finger} joint")
        ET.SubElement(mimicking, "mimic", joint=f"{arm}_gripper",
                      multiplier=_fmt([sign * span]),
                      offset=_fmt([sign * GRIPPER_POSITION_CLOSE]))


def _check_joint_names(robot: ET.Element) -> None:
    names = {j.get("name") for j in robot.iter("joint")}
    wanted = {f"{arm}_{j}" for arm in ARMS for j in (*ARM_JOINTS, "gripper")}
    if wanted - names:
        raise ValueError(f"URDF lacks the station's joints {sorted(wanted - names)}")


def urdf_text() -> str:
    """The URDF as committed in ``urdf/aloha.urdf`` (deterministic)."""
    robot = build_urdf()
    ET.indent(robot)
    header = ("<?xml version=\"1.0\"?>\n<!-- Generated by `python -m efm_sim.aloha_urdf` "
              "from gym-aloha's bimanual vx300s MJCF; do not edit by hand. -->\n")
    return header + ET.tostring(robot, encoding="unicode") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("urdf/aloha.urdf"))
    args = parser.parse_args(argv)
    args.out.write_text(urdf_text())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
