"""`drive-mllm demo`: the whole loop on one machine, and the README's first command.

Generate a short synthetic scene, convert it to a ROS 2 bag, bring up the node with the embedded
student, replay the bag in real time, record the node's outputs, score them against the ground
truth and write a report (Markdown score table + PNGs of key objects, predicted next to true).
Give --bag and --drivelm (and --model) to run the same on real data.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2

from .answers import parse_tags
from .bringup import default_model, node_command
from .cameras import CameraRig
from .drivelm import STAGES
from .evaluation.testset import ANSWER_BUDGET, cam_front_stamp, questions_by_stamp
from .paths import EMBEDDED_WORLD_SIZE, default_params_file
from .ros_env import isolate_ros
from .visualize import TRUTH_COLOR, draw_key_objects

SCENE_TOPIC = "/drive_mllm/scene"
NS = 1_000_000_000


def check_environment() -> str | None:
    """One line naming what is missing, or None. Runs before anything is started."""
    try:
        import rclpy  # noqa: F401  (fails without the ROS 2 middleware wheels)
        import rosbags  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except Exception as error:  # ImportError, or OSError/RuntimeError from a missing shared library
        return (
            f"the environment is incomplete ({type(error).__name__}: {error}); install it with "
            "`make venv` (pip install -r requirements.txt: ros-rclpy ros-rmw-fastrtps-cpp torch==2.13.0 ...)"
        )
    return None


def run_command(argv: list[str], who: str = "demo") -> None:
    """A drive-mllm subcommand in-process; raises on failure so the caller stops at the first broken step."""
    from .cli import main as cli_main

    print(f"{who}: drive-mllm {' '.join(argv)}", flush=True)
    if cli_main(argv) != 0:
        raise RuntimeError(f"drive-mllm {argv[0]} failed")


def embedded_world(out: Path, seed: int, duration: float, scenes: int = 1, conditions: Sequence[str] = ("clear",),
                   who: str = "demo") -> Path:
    """`drive-mllm world` at the size the embedded student learned (its tags are in those pixels); its DriveLM JSON."""
    width, height = EMBEDDED_WORLD_SIZE
    run_command(["world", "--out", str(out), "--scenes", str(scenes), "--seed", str(seed), "--duration",
                 str(duration), "--width", str(width), "--height", str(height), "--val-fraction", "0",
                 "--condition", *conditions], who)
    return out / "drivelm" / "v1_1_train_nus.json"


def embedded_world_size() -> dict[str, int]:
    """Node parameters for cameras of the embedded world size (the params file's default is nuScenes' 1600x900)."""
    return {"image_width": EMBEDDED_WORLD_SIZE[0], "image_height": EMBEDDED_WORLD_SIZE[1]}


def world_bags(world: Path, out: Path, who: str = "demo") -> list[Path]:
    """One ROS 2 bag per scene of a world, in scene order."""
    run_command(["convert-nuscenes", "--dataroot", str(world / "nuscenes"), "--out", str(out)], who)
    return [p for p in sorted(out.iterdir()) if p.is_dir() or p.suffix == ".mcap"]


def synthetic_scene(out: Path, seed: int, duration: float) -> tuple[Path, Path]:
    """World -> (bag, DriveLM JSON) for one short scene, rendered at the size the embedded student learned; the
    previous run's scene is replaced, so the demo can run again."""
    for folder in (out / "world", out / "bags"):
        shutil.rmtree(folder, ignore_errors=True)
    drivelm = embedded_world(out / "world", seed, duration)
    return world_bags(out / "world", out / "bags")[0], drivelm


class SceneMonitor:
    """Counts the key frames the node has answered, so the demo knows when to stop."""

    def __init__(self, key_stamps: list[int], tolerance_ns: int) -> None:
        self.key_stamps, self.tolerance_ns = key_stamps, tolerance_ns
        self.answered: set[int] = set()
        self.scenes = 0
        self.node_ready = threading.Event()  # the node publishes /diagnostics once configured
        self.stop = threading.Event()

    def on_scene(self, msg) -> None:
        stamp = json.loads(msg.data)["stamp"]
        stamp_ns = stamp["sec"] * NS + stamp["nanosec"]
        self.scenes += 1
        self.answered.update(k for k in self.key_stamps if abs(k - stamp_ns) <= self.tolerance_ns)

    def run(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from std_msgs.msg import String

        from .data.rclpy_io import ros_context

        with ros_context() as context:
            node = Node("drive_mllm_demo_monitor", context=context)
            node.create_subscription(String, SCENE_TOPIC, self.on_scene, 50)
            node.create_subscription(DiagnosticArray, "/diagnostics", lambda _: self.node_ready.set(), 10)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            while not self.stop.is_set():
                executor.spin_once(timeout_sec=0.1)
            executor.shutdown()
            node.destroy_node()


def bag_key_stamps(bags: Sequence[Path], key_stamps: list[int]) -> list[list[int]]:
    """The key frames each bag holds, from the bags' time ranges (a single bag, in any format, holds them all)."""
    if len(bags) == 1:
        return [key_stamps]
    from rosbags.highlevel import AnyReader

    held = []
    for bag in bags:
        with AnyReader([bag]) as reader:
            first, last = reader.start_time - NS // 40, reader.end_time + NS // 40
        held.append([stamp for stamp in key_stamps if first <= stamp <= last])
    return held


def node_inputs(bag: Path) -> list[str]:
    """The bag's topics the node can subscribe to (images, camera info): others (odometry, tf) have no subscriber."""
    from .data.bags import BagSource

    return [topic for topic, msgtype in BagSource(bag).topics.items() if msgtype.startswith("sensor_msgs/")]


def wait_for_answers(monitor: SceneMonitor, expected: list[int], node: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(k in monitor.answered for k in expected) and time.monotonic() < deadline and node.poll() is None:
        time.sleep(0.5)


def serve_bag(bags: Sequence[Path], model: str, question_file: Path, out: Path, timeout_s: float,
              parameters: Mapping[str, object] | None = None) -> Path:
    """Node + recorder + real-time player, one bag after another; returns the recorded outputs bag.

    Each bag's key frames are answered before the next bag plays (the node queues a bounded number of them).
    `parameters`: more node parameters (e.g. `embedded_world_size()`, {"hard_cases.enabled": True}).
    """
    from .data.player import play_bag
    from .data.recorder import record

    params = out / "demo_params.yaml"
    # A test set's answers are scored whole: every stage gets `eval predict`'s budget, not the node's camera-rate one.
    budgets = "".join(f"      {stage}: {ANSWER_BUDGET}\n" for stage in STAGES)
    params.write_text(
        f"/**:\n  ros__parameters:\n    question_file: '{question_file}'\n    image_qos_reliability: reliable\n"
        f"    max_new_tokens:\n{budgets}"
    )
    recorded = out / "node_outputs"
    shutil.rmtree(recorded, ignore_errors=True)
    key_stamps = sorted(questions_by_stamp(question_file))
    monitor = SceneMonitor(key_stamps, tolerance_ns=NS // 40)
    stop_recording = threading.Event()
    threads = [
        threading.Thread(target=monitor.run, daemon=True),
        threading.Thread(
            target=record,
            args=(recorded, [SCENE_TOPIC, "/diagnostics"]),
            kwargs={"stop_event": stop_recording},
            daemon=True,
        ),
    ]
    overrides = {"model_path": model, "image_transport": "compressed", **(parameters or {})}
    command = node_command(str(default_params_file()), overrides)
    command[command.index("--params-file") + 2 : command.index("--params-file") + 2] = ["--params-file", str(params)]
    log = (out / "node.log").open("w")
    node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        for thread in threads:
            thread.start()
        if not monitor.node_ready.wait(timeout=120) or node.poll() is not None:
            raise RuntimeError(f"the node did not come up; see {out / 'node.log'}")
        for bag, expected in zip(bags, bag_key_stamps(bags, key_stamps), strict=True):
            print(f"replay: {bag.name} in real time ({len(expected)} key frames to answer)", flush=True)
            # Discovery must match the node first; only its inputs are played, as nothing subscribes to the rest.
            stats = play_bag(bag, rate=1.0, topics=node_inputs(bag), wait_for_subscribers=10.0)
            print(f"replay: done ({stats.seconds:.1f} s); waiting for the node's answers", flush=True)
            wait_for_answers(monitor, expected, node, timeout_s)
        print(
            f"replay: the node answered {len(monitor.answered)}/{len(key_stamps)} key frames "
            f"({monitor.scenes} scenes in all)",
            flush=True,
        )
        time.sleep(1.0)  # let the recorder write the last messages
    finally:
        stop_recording.set()
        monitor.stop.set()
        if node.poll() is None:
            node.send_signal(subprocess.signal.SIGINT)
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
        for thread in threads:
            thread.join(timeout=10)
        log.close()
    if node.returncode not in (0, None):
        raise RuntimeError(f"the node exited with {node.returncode}; see {out / 'node.log'}")
    return recorded


def checkpoint_params(model: Path) -> str:
    """The report's Params cell: counted from the checkpoint's safetensors files, blank without them."""
    from .model import parameter_count, parameter_label  # loads torch: only after the environment checks

    count = parameter_count(model)
    return parameter_label(count) if count else ""


def frame_figures(drivelm: Path, recorded: Path, out: Path, limit: int = 3) -> list[Path]:
    """PNGs of a few key frames: the six views, the node's key objects (red) next to the truth (green)."""
    from .evaluation.from_bag import scene_messages
    from .preprocess import stitch_views

    scenes = {}
    for text in scene_messages(recorded, SCENE_TOPIC):
        data = json.loads(text)
        scenes[data["stamp"]["sec"] * NS + data["stamp"]["nanosec"]] = data
    figures = []
    data = json.loads(drivelm.read_text())
    frames = [f for scene in data.values() for f in scene["key_frames"].values()]
    for frame in frames[:: max(len(frames) // limit, 1)][:limit]:
        stamp = cam_front_stamp(frame, f"{drivelm} key frame") * 1000
        predicted = next((s for k, s in scenes.items() if abs(k - stamp) <= NS // 40), None)
        if predicted is None:
            continue
        views = [
            cv2.cvtColor(cv2.imread(str(drivelm.parent / frame["image_paths"][c])), cv2.COLOR_BGR2RGB)
            for c in CameraRig().names
        ]
        rig = CameraRig(image_size=(views[0].shape[1], views[0].shape[0]))  # tags are in these images' pixels
        truth, _ = parse_tags(" ".join(frame["key_object_infos"]), rig.names)
        mosaic = stitch_views(views, rig)
        mosaic = draw_key_objects(
            mosaic,
            rig,
            [{"id": t.object_id, "camera": t.camera, "x": t.x, "y": t.y} for t in truth],
            TRUTH_COLOR,
            cv2.MARKER_SQUARE,
        )
        mosaic = draw_key_objects(mosaic, rig, predicted["key_objects"])
        path = out / f"frame_{stamp}.png"
        cv2.imwrite(str(path), cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
        figures.append(path)
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="drive-mllm demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for everything the demo writes")
    parser.add_argument("--model", default="", help="checkpoint folder (default: the embedded student)")
    parser.add_argument("--bag", type=Path, help="a real bag to replay (with --drivelm for its ground truth)")
    parser.add_argument("--drivelm", type=Path, help="DriveLM v1.1 JSON holding the bag's key frames")
    parser.add_argument("--seed", type=int, default=2024, help="synthetic scene seed")
    parser.add_argument("--duration", type=float, default=8.0, help="synthetic scene length in seconds")
    parser.add_argument("--answer-timeout", type=float, default=180.0, help="s to wait for answers after replay")
    args = parser.parse_args(argv)
    if (args.bag is None) != (args.drivelm is None):
        parser.error("--bag and --drivelm go together (the bag's ground truth is needed to score it)")
    problem = check_environment()
    if problem:
        print(f"drive-mllm demo: {problem}", file=sys.stderr)
        return 2
    isolate_ros()
    started = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        bag, drivelm = (args.bag, args.drivelm) if args.bag else synthetic_scene(out, args.seed, args.duration)
        model = args.model or default_model(str(default_params_file()))
        run_command(["eval", "prepare", "--drivelm", str(drivelm), "--out", str(out / "test.json")])
        recorded = serve_bag([Path(bag)], model, Path(drivelm), out, args.answer_timeout,
                             None if args.bag else embedded_world_size())
        report_dir = out / "report"
        run_command(
            [
                "eval",
                "score",
                "--gt",
                str(out / "test.json"),
                "--from-bag",
                str(recorded),
                "--out",
                str(report_dir),
                "--label",
                Path(model).name,
                "--params",
                checkpoint_params(Path(model)),
            ]
        )
    except (RuntimeError, ValueError) as error:
        print(f"drive-mllm demo: {error}", file=sys.stderr)
        return 1
    figures = frame_figures(Path(drivelm), recorded, report_dir)
    with (report_dir / "report.md").open("a") as report:
        report.write("\n## Key frames: the node's key objects (red crosses) and the truth (green squares)\n\n")
        report.writelines(f"![{p.stem}]({p.name})\n\n" for p in figures)
    print(f"demo: done in {time.monotonic() - started:.0f} s; report: {report_dir / 'report.md'}")
    return 0
