"""Where efm_ros's launch files, configs, URDF and rviz config live: the package share
directory of an installed workspace (``colcon build``), else the source tree.

An installed workspace has ``<prefix>/share/efm_ros/{launch,config,urdf}``; the source
tree has the same folders at the repository root, so one relative layout serves both
(docs/DEPLOY.md).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "efm_ros"
#: the folders setup.py installs into share/efm_ros (repository-root folders)
SHARED_DIRS = ("launch", "config", "urdf")


def source_root() -> Path | None:
    """The repository root when running from a source checkout, else None."""
    root = Path(__file__).resolve().parents[3]
    return root if all((root / d).is_dir() for d in SHARED_DIRS) else None


def share_dir() -> Path:
    """``share/efm_ros`` of the install this module was imported from (ament index), or
    the source root when efm_ros runs from a checkout (``pip install -e``)."""
    here = Path(__file__).absolute()
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        get_package_share_directory = None
    if get_package_share_directory is not None:
        try:
            share = Path(get_package_share_directory(PACKAGE))
        except (LookupError, ValueError):  # PackageNotFoundError is a KeyError
            share = None
        # the index may name another install (a venv's editable one): trust it only when
        # this module lives under the same prefix
        if share is not None and (share / "config").is_dir() and share.parents[1] in here.parents:
            return share
    root = source_root()
    if root is None:
        raise FileNotFoundError(
            f"{PACKAGE}: no share directory with launch/, config/, urdf/ (not installed "
            "with colcon and not a source checkout)"
        )
    return root


def shared_file(*parts: str) -> Path:
    """A file under the share directory, e.g. ``shared_file("config", "sim_practice.yaml")``."""
    path = share_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the {PACKAGE} share directory")
    return path
