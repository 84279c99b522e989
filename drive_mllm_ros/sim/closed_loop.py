"""`drive-mllm closed-loop`: sim + (node) + planner processes per scenario, scored, with a Markdown + PNG report.

What launch/sim.launch.py does for one scenario, for every scenario and planner asked, one after the
other: the node (``--planner node``) is started once and kept; per scenario a simulator and a planner
process run until the simulator ends the episode (route completed, time limit) or ``--wall-budget``
seconds pass (then it is interrupted and scored as far as it got). ``--offline`` runs the oracle and blind
planners in this process without ROS or rendering (the same planner and simulator code).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..bringup import default_model, node_command
from ..data.render import CONDITIONS
from ..data.world import SCENARIOS
from ..drivelm import Q_TRAJECTORY
from ..paths import EMBEDDED_WORLD_SIZE, default_params_file
from ..ros_env import isolate_ros
from .planner import PlannerConfig, Pose, blind_plan, follow, oracle_plan
from .report import write_report
from .scoring import score_episode
from .simulator import Episode, SimConfig, Simulator

PLANNERS = ("oracle", "blind", "node")
CLOSED_LOOP_SCENARIOS = ("lead_brake", "pedestrian_crossing", "cut_in", "stopped_obstacle", "turn_left", "turn_right")
DEFAULT_SEED = 8  # the braking and crossing events fall in the blind planner's way with this seed


def run_offline(config: SimConfig, planner: str, control_period: float = 0.1) -> Episode:
    """One episode of the oracle or blind planner, stepped directly (no ROS, no rendering)."""
    sim = Simulator(config)
    route = sim.route_points()
    planner_config = PlannerConfig(cruise_speed=sim.cruise_speed)
    while not sim.done:
        truth = sim.ground_truth()
        ego = truth["ego"]
        plan = oracle_plan(truth, route, planner_config) if planner == "oracle" else blind_plan(route, planner_config)
        sim.set_command(follow(Pose(ego["x"], ego["y"], ego["yaw"]), ego["speed"], plan, planner_config))
        sim.step(control_period)
    return sim.finish()


def ros_args(values: dict[str, object]) -> list[str]:
    """``--ros-args -p name:=value ...``; an empty string is written as YAML ``''`` (rcl rejects a bare ``:=``)."""
    pairs = [f"{name}:={value}" if value != "" else f"{name}:=''" for name, value in values.items()]
    return ["--ros-args", *[item for pair in pairs for item in ("-p", pair)]]


def sim_command(config: SimConfig, args: argparse.Namespace, result_file: Path, with_node: bool) -> list[str]:
    values = {
        "scenario": config.scenario,
        "seed": config.seed,
        "density": args.density,
        "route_length": float(config.route_length),
        "mode": args.mode,
        "condition": args.condition,
        "camera_rate": args.camera_rate,
        "image_width": args.width,
        "image_height": args.height,
        "result_file": str(result_file),
        "answer_topic": "/drive_mllm/scene" if with_node else "",
        "answer_budget": args.answer_budget,
    }
    return [sys.executable, "-m", "drive_mllm_ros.sim.sim_node", *ros_args(values)]


def planner_command(source: str, cruise_speed: float, width: int, height: int) -> list[str]:
    values = {"source": source, "cruise_speed": round(cruise_speed, 3), "image_width": width, "image_height": height}
    return [sys.executable, "-m", "drive_mllm_ros.sim.planner_node", *ros_args(values)]


def node_params(path: Path, width: int, height: int) -> Path:
    """The node's settings for the loop: the sim's image size, reliable images, a trajectory, short answers."""
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "/**": {
                    "ros__parameters": {
                        "image_width": width,
                        "image_height": height,
                        "image_qos_reliability": "reliable",
                        "publish_annotated": False,
                        "use_sim_time": True,
                        "questions": {"trajectory": [Q_TRAJECTORY]},
                        "max_new_tokens": {
                            "perception": 32,
                            "prediction": 8,
                            "planning": 8,
                            "behavior": 16,
                            "trajectory": 48,
                        },
                    }
                }
            }
        )
    )
    return path


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_scenario(config: SimConfig, planner: str, args: argparse.Namespace, out: Path) -> Episode:
    result_file = out / f"{planner}_{config.scenario}.json"
    cruise = Simulator(config).cruise_speed
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (
        (logs / f"{planner}_{config.scenario}_sim.log").open("w") as sim_log,
        (logs / f"{planner}_{config.scenario}_planner.log").open("w") as planner_log,
    ):
        sim = subprocess.Popen(
            sim_command(config, args, result_file, planner == "node"), stdout=sim_log, stderr=subprocess.STDOUT
        )
        driver = subprocess.Popen(
            planner_command(planner, cruise, args.width, args.height), stdout=planner_log, stderr=subprocess.STDOUT
        )
        try:
            sim.wait(timeout=args.wall_budget)
        except subprocess.TimeoutExpired:
            stop(sim)  # the simulator writes the episode so far
        finally:
            stop(driver)
    if not result_file.is_file():
        raise RuntimeError(f"closed-loop: the simulator wrote no result (see {logs})")
    return Episode.from_dict(json.loads(result_file.read_text())["episode"])


def run(args: argparse.Namespace) -> dict[str, list[Episode]]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    episodes: dict[str, list[Episode]] = {}
    for planner in args.planner:
        node = None
        if planner == "node":
            params = node_params(out / "node_params.yaml", args.width, args.height)
            model = args.model_path or default_model(str(default_params_file()))
            command = node_command(str(default_params_file()), {"model_path": model})
            node = subprocess.Popen(
                [*command, "--params-file", str(params)], stdout=(out / "node.log").open("w"), stderr=subprocess.STDOUT
            )
        try:
            for scenario in args.scenarios:
                config = SimConfig(scenario, args.seed, args.density, args.route_length)
                started = time.monotonic()
                episode = run_offline(config, planner) if args.offline else run_scenario(config, planner, args, out)
                print(
                    f"closed-loop: {planner} {scenario}: {episode.end_reason} "
                    f"({time.monotonic() - started:.0f} s wall)",
                    flush=True,
                )
                episodes.setdefault(planner, []).append(episode)
        finally:
            if node is not None:
                stop(node)
    return episodes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drive-mllm closed-loop", description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="+", default=list(CLOSED_LOOP_SCENARIOS), choices=sorted(SCENARIOS))
    p.add_argument("--planner", nargs="+", default=list(PLANNERS), choices=PLANNERS)
    p.add_argument("--mode", choices=("lockstep", "realtime"), default="lockstep")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--density", type=float, default=0.5)
    p.add_argument("--condition", choices=CONDITIONS, default="clear", help="what the cameras see (world --condition)")
    p.add_argument("--route-length", type=float, default=0.0, help="m; 0: the scenario's own")
    p.add_argument("--camera-rate", type=float, default=2.0, help="Hz of rendered camera sweeps")
    p.add_argument("--width", type=int, default=EMBEDDED_WORLD_SIZE[0],
                   help="rendered image width (the node's image_width); default: what the embedded student learned")
    p.add_argument("--height", type=int, default=EMBEDDED_WORLD_SIZE[1])
    p.add_argument("--answer-budget", type=float, default=10.0, help="s of wall time lockstep waits for an answer")
    p.add_argument("--wall-budget", type=float, default=900.0, help="s of wall time per scenario before it is cut")
    p.add_argument("--model-path", default="", help="checkpoint for --planner node; default: the embedded student")
    p.add_argument("--offline", action="store_true", help="oracle/blind only, in-process, without ROS")
    p.add_argument("--out", required=True, help="folder for results, logs and the report")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.offline and "node" in args.planner:
        print("drive-mllm closed-loop: --offline runs only the oracle and blind planners", file=sys.stderr)
        return 2
    isolate_ros()
    episodes = run(args)
    scores = {planner: [score_episode(e) for e in runs] for planner, runs in episodes.items()}
    paths = write_report(episodes, scores, Path(args.out), vars(args))
    print(f"closed-loop: report {paths[0]}")
    return 0
