"""ament_python package; also installs with pip alone (see README)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "drive_mllm_ros"


def share(folder: str, pattern: str = "*") -> tuple[str, list[str]]:
    return f"share/{PACKAGE}/{folder}", [p for p in glob(f"{folder}/{pattern}", recursive=True) if "." in p.split("/")[-1]]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    include_package_data=True,
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        share("launch", "*.launch.py"),
        share("config"),
        share("models"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="drive_mllm_ros maintainers",
    maintainer_email="maintainers@drive-mllm-ros.dev",
    description="Six car cameras to driving language and planner messages with a small multimodal LLM.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "drive-mllm = drive_mllm_ros.cli:main",
            "drive_mllm_node = drive_mllm_ros.node:main",
        ],
    },
)
