"""Print the running venv's pinned distributions for requirements/lock.txt.

Leaves out torch (set-up installs its own pin first), editable installs, and the Python
packages that ROS 2 wheels embed as egg-info (e.g. ``action_msgs`` inside
``ros-action-msgs``): those names are not installable on their own.
"""

from importlib import metadata


def main() -> None:
    dists = {d.metadata["Name"]: d.version for d in metadata.distributions()}
    ros = {name.lower() for name in dists if name.lower().startswith("ros-")}
    for name in sorted(dists, key=str.lower):
        key = name.lower()
        embedded = "ros-" + key.replace("_", "-") in ros
        if key in {"torch", "pip", "setuptools"} or embedded or key.startswith("efm"):
            continue
        print(f"{name}=={dists[name]}")


if __name__ == "__main__":
    main()
