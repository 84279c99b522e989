"""The package installs as ROS users and pip users get it: colcon (ament_python) and a plain wheel."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_package_xml_is_format_3_and_declares_every_message_package_used():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "drive_mllm_ros"
    maintainer = root.find("maintainer")
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", maintainer.get("email"))
    assert root.findtext("license") and root.find("export/build_type").text == "ament_python"
    declared = {e.text for e in root.findall("exec_depend")}
    source = "\n".join(p.read_text() for p in (ROOT / "drive_mllm_ros").rglob("*.py"))
    used = set(re.findall(r"^\s*(?:from|import) (\w+_msgs)\b", source, re.M)) | {"rclpy"}
    assert used <= declared, f"package.xml lacks exec_depend on {sorted(used - declared)}"


@pytest.mark.skipif(shutil.which("colcon", path=str(BIN)) is None, reason="colcon is installed by `make venv`")
def test_colcon_builds_an_ament_python_package(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "drive_mllm_ros").symlink_to(ROOT)
    colcon = str(BIN / "colcon")
    listed = subprocess.run([colcon, "list"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "(ros.ament_python)" in listed, listed
    subprocess.run([colcon, "build", "--packages-select", "drive_mllm_ros"], cwd=tmp_path, check=True,
                   capture_output=True)
    prefix = tmp_path / "install" / "drive_mllm_ros"
    for path in ["share/ament_index/resource_index/packages/drive_mllm_ros", "share/drive_mllm_ros/package.xml",
                 "share/drive_mllm_ros/launch/bringup.launch.py", "share/drive_mllm_ros/config/drive_mllm.yaml",
                 "share/drive_mllm_ros/config/scene.schema.json", "lib/drive_mllm_ros/drive_mllm_node"]:
        assert (prefix / path).exists(), path
    assert list((prefix / "share/drive_mllm_ros/models").glob("*.yaml"))


def test_pip_wheel_carries_entry_points_and_share_files(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("drive_mllm_ros-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("data/share/drive_mllm_ros/launch/bringup.launch.py") for n in names)
    assert any(n.endswith("data/share/drive_mllm_ros/config/drive_mllm.yaml") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "drive-mllm = drive_mllm_ros.cli:main" in entry_points
    assert "drive_mllm_node = drive_mllm_ros.node:main" in entry_points
