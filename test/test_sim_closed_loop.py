"""Closed loop: deterministic simulator, oracle without infractions, blind collisions, bad input, scores, ROS runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from drive_mllm_ros.cli import main as cli
from drive_mllm_ros.data.world import SCENARIOS, EgoCommand
from drive_mllm_ros.sim.closed_loop import DEFAULT_SEED, run_offline
from drive_mllm_ros.sim.planner import FrontCamera, PlannerConfig, key_object_ahead
from drive_mllm_ros.sim.scoring import score_episode
from drive_mllm_ros.sim.simulator import SimConfig, Simulator

from rosutil import RosHarness


def test_simulator_is_deterministic_per_seed_and_scenario():
    first, second = (run_offline(SimConfig("cut_in", 3, route_length=40.0), "oracle") for _ in range(2))
    assert first.to_dict() == second.to_dict()
    assert run_offline(SimConfig("cut_in", 4, route_length=40.0), "oracle").samples != first.samples


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_oracle_completes_every_scenario_without_infractions(scenario):
    episode = run_offline(SimConfig(scenario, DEFAULT_SEED), "oracle")
    score = score_episode(episode)
    assert episode.end_reason == "route completed", episode.events
    assert not any(score.infractions.values()), episode.events
    assert score.driving_score == 100.0


@pytest.mark.parametrize(
    ("scenario", "infraction"), [("lead_brake", "collision_vehicle"), ("pedestrian_crossing", "collision_pedestrian")]
)
def test_blind_planner_collides_in_braking_and_crossing(scenario, infraction):
    score = score_episode(run_offline(SimConfig(scenario, DEFAULT_SEED), "blind"))
    assert score.infractions[infraction] >= 1
    assert score.driving_score < 100.0


def test_silent_planner_brakes_to_a_stop_and_is_reported():
    sim = Simulator(SimConfig("cruise", 1, command_timeout=1.0))
    sim.set_command(EgoCommand(sim.cruise_speed, 0.0))
    for _ in range(60):  # 6 s without another command
        sim.step(0.1)
    episode = sim.finish()
    assert [e.kind for e in episode.events] == ["planner_timeout"] and episode.events[0].time == pytest.approx(
        1.0, abs=0.1
    )
    assert episode.samples[-1].speed == 0.0
    assert score_episode(episode).counters["planner timeouts"] == 1


def test_out_of_range_commands_are_clamped_and_counted():
    sim = Simulator(SimConfig("cruise", 1))
    for command in (EgoCommand(80.0, 0.0), EgoCommand(5.0, 3.0), EgoCommand(math.nan, 0.0), EgoCommand(5.0, 0.0)):
        sim.set_command(command)
        sim.step(0.1)
    assert sim.finish().counters == {"commands": 4, "commands clamped": 3}
    assert sim.command == EgoCommand(5.0, 0.0)


def test_penalties_multiply_and_lane_departures_cost_route_completion():
    episode = run_offline(SimConfig("pedestrian_crossing", DEFAULT_SEED), "blind")
    score = score_episode(episode)
    expected = 0.5 ** score.infractions["collision_pedestrian"] * 0.8 ** score.infractions["ran_stop"]
    assert score.penalty == pytest.approx(expected, abs=1e-4)
    episode.distance_off_route = episode.route_length / 4
    assert score_episode(episode).route_completion == pytest.approx(75.0)


def test_key_object_low_in_the_middle_of_the_front_camera_is_close_ahead():
    camera, config = FrontCamera.for_image(1600, 900), PlannerConfig()
    ahead = [{"camera": "CAM_FRONT", "x": 816.0, "y": 600.0}]
    assert 5.0 < key_object_ahead(ahead, camera, config) < 10.0
    assert key_object_ahead([{"camera": "CAM_FRONT", "x": 816.0, "y": 500.0}], camera, config) == math.inf  # far
    assert key_object_ahead([{"camera": "CAM_FRONT", "x": 100.0, "y": 600.0}], camera, config) == math.inf  # aside
    assert key_object_ahead([{"camera": "CAM_BACK", "x": 816.0, "y": 600.0}], camera, config) == math.inf


def test_ros_lockstep_run_is_deterministic(tmp_path):
    """Sim and oracle planner as processes on DDS, twice: the same episode."""
    finals = []
    for run in ("a", "b"):
        argv = [
            "closed-loop",
            "--planner",
            "oracle",
            "--scenarios",
            "lead_brake",
            "--route-length",
            "25",
            "--out",
            str(tmp_path / run),
        ]
        assert cli(argv) == 0
        episode = json.loads((tmp_path / run / "oracle_lead_brake.json").read_text())["episode"]
        assert episode["end_reason"] == "route completed" and episode["counters"].get("planner timeouts", 0) == 0
        finals.append(episode["samples"])
    assert finals[0] == finals[1]


def test_closed_loop_with_the_embedded_student_produces_the_score_report(tmp_path):
    # No --model-path and no image size: the node serves models/student on the views it learned (224x126).
    argv = ["closed-loop", "--planner", "node", "--scenarios", "lead_brake", "--route-length", "8",
            "--answer-budget", "30", "--wall-budget", "240", "--out", str(tmp_path)]
    assert cli(argv) == 0
    episode = json.loads((tmp_path / "node_lead_brake.json").read_text())["episode"]
    assert episode["counters"]["frames"] >= 1 and episode["counters"]["answers"] >= 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["node"]["scenarios"][0]["scenario"] == "lead_brake"
    assert "| lead_brake | node |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "lead_brake.png").stat().st_size > 10_000


def test_sim_renders_the_condition_it_is_given_and_names_a_bad_one():
    sim = [sys.executable, "-m", "drive_mllm_ros.sim.sim_node", "--ros-args", "-p", "mode:=realtime",
           "-p", "route_length:=8.0", "-p", "image_width:=224", "-p", "image_height:=126", "-p", "rate:=4.0",
           "-p", "answer_topic:=''", "-p", "wait_for_subscribers:=10.0"]
    bad = subprocess.run([*sim, "-p", "condition:=snow"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "condition: expected one of ['clear', 'night', 'rain', 'fog']" in bad.stderr
    harness = RosHarness()
    try:
        harness.subscribe("/CAM_FRONT/image_rect_compressed", CompressedImage, 10)
        brightness = {}
        for condition in ("clear", "night"):
            harness.clear()
            subprocess.run([*sim, "-p", f"condition:={condition}"], capture_output=True, timeout=120, check=True)
            frames = harness.messages("/CAM_FRONT/image_rect_compressed")
            assert frames, f"no CAM_FRONT image from the {condition} sim"
            brightness[condition] = np.mean(cv2.imdecode(np.frombuffer(bytes(frames[0].data), np.uint8), 1))
    finally:
        harness.close()
    assert brightness["night"] < 0.5 * brightness["clear"]
