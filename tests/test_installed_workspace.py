"""The workspace as a robot computer installs it (issue 16, item 1): colcon builds the four
packages into an ``install/`` prefix with ``scripts/install_workspace.sh`` (the script the
Docker image runs too); sourced, that prefix alone provides the launch files, configs,
URDF and rviz config in ``share/efm_ros``, and every console script answers ``--help``.

About a minute (the interfaces' CMake build dominates)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "efm_ros": ["actor", "aloha_bridge", "bringup", "camera_ingest", "compose", "coordinator",
                "efm-bags-to-dataset", "efm-fleet-key", "efm-operator", "episode_recorder",
                "interbotix_sim", "learner", "policy", "sim_robot", "steps_to_go"],
    "efm_learning": ["efm"],
}

# What runs inside the sourced install: where things are imported from, what the share
# directory holds, and where the installed launch file takes its default params from.
PROBE = r"""
import importlib.util, json, sys
from pathlib import Path
import efm_interfaces, efm_learning, efm_ros, efm_sim
from efm_ros.share import share_dir
from ament_index_python.packages import get_package_share_directory
share = Path(get_package_share_directory("efm_ros"))
spec = importlib.util.spec_from_file_location("l", share / "launch" / "sim_practice.launch.py")
launch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launch)
print(json.dumps({
    "modules": {m.__name__: m.__file__ for m in (efm_interfaces, efm_learning, efm_ros, efm_sim)},
    "share": str(share), "share_dir": str(share_dir()),
    "files": sorted(str(p.relative_to(share)) for p in share.rglob("*") if p.is_file()),
    "launch_default_params": launch.DEFAULT_PARAMS,
}))
"""


def _clean_env(prefix: Path) -> dict[str, str]:
    """The environment of a fresh shell with only the underlay (the venv's ROS wheels)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AMENT_", "COLCON_", "CMAKE_PREFIX", "PYTHONPATH"))}
    env.update(AMENT_PREFIX_PATH=sys.prefix, VIRTUAL_ENV=sys.prefix,
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    return env


def _in_install(install: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"source {install}/setup.bash && {command}"],
        env=env, capture_output=True, text=True, timeout=300, cwd=install.parent,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    if shutil.which("colcon", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("colcon is missing from the venv: `make setup` installs it from the lock")
    base = tmp_path_factory.mktemp("ws")
    env = _clean_env(base)
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_workspace.sh"), str(base / "build"),
         str(base / "install")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return base / "install"


def test_install_provides_share_contents_from_the_prefix_alone(installed):
    probe = _in_install(installed, f"{sys.executable} -c '{PROBE}'", _clean_env(installed))
    assert probe.returncode == 0, probe.stderr[-3000:]
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    # imported from the install, not from the source tree or the venv's editable install
    for name, path in info["modules"].items():
        assert Path(path).is_relative_to(installed), (name, path)
    share = installed / "share" / "efm_ros"
    assert Path(info["share"]) == share and Path(info["share_dir"]) == share
    expected = {f"launch/{p.name}" for p in (ROOT / "launch").glob("*.launch.py")}
    expected |= {f"launch/{p.name}" for p in (ROOT / "launch").glob("*.rviz")} | {"package.xml"}
    expected |= {f"config/{p.name}" for p in (ROOT / "config").glob("*.yaml")}
    expected |= {f"urdf/{p.name}" for p in (ROOT / "urdf").glob("*.urdf")}
    assert expected <= set(info["files"]), expected - set(info["files"])
    # the installed launch file finds its default deployment in the package share
    assert Path(info["launch_default_params"]) == share / "config" / "sim_practice.yaml"
    for name in expected:  # installed copies, byte for byte
        source = ROOT / name if name != "package.xml" else ROOT / "src/efm_ros/package.xml"
        assert (share / name).read_bytes() == source.read_bytes(), name


@pytest.mark.parametrize("package,script", [(p, s) for p, ss in SCRIPTS.items() for s in ss])
def test_every_installed_console_script_answers_help(installed, package, script):
    exe = installed / "lib" / package / script
    assert exe.is_file(), f"{exe} was not installed"
    run = _in_install(installed, f"{exe} --help", _clean_env(installed))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stdout.startswith("usage:"), run.stdout[:500]
