"""ament_python package efm_learning: builds with colcon on a robot computer, or `pip install -e` in a venv."""

from setuptools import find_packages, setup

package_name = "efm_learning"

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
    description="Learning core of efm: EFM models, Stage 1 SFT (behavioural cloning + steps-to-go) and Stage 2 Self-Improvement (Algorithm 1). Knows nothing of ROS.",
    license="Apache-2.0",
    entry_points={"console_scripts": ["efm = efm_learning.cli:main"]},
)
