"""ament_python package; also installs with pip alone (see README)."""

import os

from setuptools import find_packages, setup

PACKAGE = "drive_mllm_ros"


def share(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing a folder (subfolders included, e.g. a model) under share/<package>/."""
    entries = []
    for directory, _, files in sorted(os.walk(folder)):
        if files:
            entries.append((f"share/{PACKAGE}/{directory}", [os.path.join(directory, f) for f in sorted(files)]))
    return entries


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    include_package_data=True,
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share("launch"),
        *share("config"),
        *share("models"),
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
