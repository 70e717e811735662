"""ament_python package efm_sim: builds with colcon on a robot computer, or `pip install -e` in a venv."""

from setuptools import find_packages, setup

package_name = "efm_sim"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="efm developers",
    maintainer_email="dev@efm.invalid",
    description="MuJoCo simulation domains (PointMass, PushTable, BananaTable) with scripted demonstrators and the episode dataset format. Knows nothing of ROS.",
    license="Apache-2.0",
    entry_points={"console_scripts": []},
)
