"""Repository rules that keep the design honest."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_learning_and_sim_never_import_ros():
    for package in ("efm_learning", "efm_sim"):
        for path in (ROOT / "src" / package).rglob("*.py"):
            bad = _imports(path) & {"rclpy", "efm_ros", "efm_interfaces", "rosidl_runtime_py"}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}: {package} must not know ROS"


def test_sim_does_not_depend_on_learning():
    for path in (ROOT / "src" / "efm_sim").rglob("*.py"):
        assert "efm_learning" not in _imports(path), path


def test_layout_of_the_design_card():
    for entry in (
        "src/efm_interfaces/CMakeLists.txt",
        "src/efm_learning/setup.py",
        "src/efm_sim/setup.py",
        "src/efm_ros/setup.py",
        "launch",
        "config",
        "urdf",
        "docker",
        "tests",
        "colcon.meta",
        "README.md",
        "Makefile",
        ".ci/run",
    ):
        assert (ROOT / entry).exists(), entry


def test_setup_is_idempotent_and_skips_everything_when_nothing_changed():
    env = {k: v for k, v in os.environ.items() if k not in ("EFM_VENV", "EFM_PYTHON")}
    out = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "installing" not in out and "building" not in out, out
    assert "ready" in out


def test_test_file_names_are_unique():
    """pytest's default import mode needs unique basenames across test folders."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
