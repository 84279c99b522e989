"""Where the package's shared files (config/, launch/, models/) live: source checkout, pip install or colcon."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "drive_mllm_ros"
# Camera image size of the synthetic world the embedded student learned from (its tags are in these pixels):
# the students' 224-px input width, 16:9. The 16-px matching rule is then ~7 % of a view's width (1 % at
# nuScenes' 1600 px), while the model sees exactly what a larger render would give it after resizing.
EMBEDDED_WORLD_SIZE = (224, 126)


def share_dir() -> Path:
    """The folder holding config/, launch/ and models/.

    A source or editable checkout has them next to the package; `pip install` and colcon put them in
    `<prefix>/share/drive_mllm_ros`, which `AMENT_PREFIX_PATH` also lists in a sourced ROS workspace.
    """
    checkout = Path(__file__).resolve().parent.parent
    candidates = [checkout, Path(sys.prefix) / "share" / PACKAGE]
    candidates += [Path(p) / "share" / PACKAGE for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for candidate in candidates:
        if (candidate / "config" / "drive_mllm.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"{PACKAGE}: config/drive_mllm.yaml not found in any of {[str(c) for c in candidates]}; "
        "reinstall the package (pip install . or colcon build)"
    )


def default_params_file() -> Path:
    return share_dir() / "config" / "drive_mllm.yaml"


def embedded_model_dir() -> Path:
    """The embedded default student shipped in models/student (absent until one is trained)."""
    return share_dir() / "models" / "student"
