"""efm_interfaces: generated types import, carry the designed fields, and every field in
the definitions is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

IFACE = Path(__file__).resolve().parents[2] / "src" / "efm_interfaces"
DEFINITIONS = sorted(p for folder in ("msg", "srv", "action") for p in (IFACE / folder).iterdir())


def test_generated_types_import_and_have_the_designed_fields():
    from efm_interfaces.action import RunEpisode
    from efm_interfaces.msg import LabelledEpisode, Observation, PracticeStatus, WeightsUpdate
    from efm_interfaces.srv import StepsToGo

    obs = Observation()
    assert {
        "header",
        "camera_names",
        "images",
        "previous_images",
        "proprioception",
        "proprio_names",
        "instruction",
    } <= set(obs.get_fields_and_field_types())
    response = StepsToGo.Response()
    assert {"bin_values", "predictions", "success_threshold", "model_version"} <= set(
        response.get_fields_and_field_types()
    )
    assert {"instruction", "max_steps", "station"} <= set(
        RunEpisode.Goal.get_fields_and_field_types()
    )
    assert {"success", "length", "episode_return", "termination_reason", "episode_id"} <= set(
        RunEpisode.Result.get_fields_and_field_types()
    )
    assert {"step", "expected_steps_to_go", "latest_action"} <= set(
        RunEpisode.Feedback.get_fields_and_field_types()
    )
    reasons = [
        RunEpisode.Goal.TERMINATION_SUCCESS,
        RunEpisode.Goal.TERMINATION_MAX_STEPS,
        RunEpisode.Goal.TERMINATION_ABORTED,
        RunEpisode.Goal.TERMINATION_ERROR,
    ]
    assert reasons == [0, 1, 2, 3]
    assert {
        "action_tokens",
        "steps_to_go",
        "rewards",
        "returns",
        "policy_version",
        "station",
        "episode_id",
    } <= set(LabelledEpisode.get_fields_and_field_types())
    assert {"version", "uri", "sha256", "created"} <= set(
        WeightsUpdate.get_fields_and_field_types()
    )
    assert "stations" in PracticeStatus.get_fields_and_field_types()


def test_aloha_sized_payloads_fit():
    """14 joints x chunk 5 actions and four cameras fit without a redesign (Appendix D.3)."""
    from sensor_msgs.msg import Image

    from efm_interfaces.msg import ActionCommand, Observation

    cmd = ActionCommand(
        names=[f"joint_{i}" for i in range(14)], chunk_length=5, values=[0.0] * 70, period_s=0.1
    )
    assert len(cmd.values) == cmd.chunk_length * len(cmd.names)
    obs = Observation(
        camera_names=["top", "table", "left_wrist", "right_wrist"],
        images=[Image() for _ in range(4)],
        proprioception=[0.0] * 14,
    )
    assert len(obs.images) == 4


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_field_is_commented(path: Path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped == "---":
            continue
        assert re.search(r"\S\s+#\s*\S", stripped), f"{path.name}:{number} has no comment: {line}"


def test_package_manifests_are_format_3_with_real_dependencies():
    from catkin_pkg.package import parse_package

    src = IFACE.parent
    manifests = {p.parent.name: parse_package(p) for p in src.glob("*/package.xml")}
    assert set(manifests) == {"efm_interfaces", "efm_learning", "efm_sim", "efm_ros"}
    for name, pkg in manifests.items():
        assert pkg.package_format == 3, name
        pkg.validate()
    ros_deps = {d.name for d in manifests["efm_ros"].exec_depends}
    assert {"rclpy", "efm_interfaces", "efm_learning", "efm_sim"} <= ros_deps
    assert "rclpy" not in {d.name for d in manifests["efm_learning"].exec_depends}
    assert "rclpy" not in {d.name for d in manifests["efm_sim"].exec_depends}
    assert manifests["efm_interfaces"].get_build_type() == "ament_cmake"
    assert {manifests[n].get_build_type() for n in ("efm_learning", "efm_sim", "efm_ros")} == {
        "ament_python"
    }
