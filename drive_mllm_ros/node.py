"""The drive_mllm lifecycle node: camera topics in, driving language and planner messages out.

A thin ROS shell: parameters (params.py), synchronization (sync.py), image conversion
(images.py), the model (model.py), the scene analysis (scene.py) and the output messages
(outputs.py) are plain modules. Configure validates parameters and loads the model; activate
subscribes and starts the worker. Subscription callbacks only store messages; one worker thread
decodes and answers the newest complete set, so there is never a backlog. With `hard_cases.enabled`, frames
judged hard (hard_cases.py) or flagged on `~/flag_frame` are handed to a recorder that writes on its own thread.
"""

from __future__ import annotations

import queue
import re
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Path
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from . import outputs
from .evaluation.testset import questions_by_stamp
from .hard_cases import HardCase, HardCaseRecorder, header_stamp_ns, judge
from .health import NodeHealth
from .images import ImageConversionError, camera_set_to_rgb
from .memory import keep_freed_memory
from .model import DrivingModel, ModelLoadError
from .params import NodeParams
from .paths import embedded_model_dir
from .preprocess import blank_view, stitch_views
from .scene import KeyFrameQuestions, Scene, SceneAnalyzer
from .sync import NS, CameraSet, CameraSynchronizer, LatestOnly

TEXT_STAGES = ("perception", "prediction", "planning")
STALE_CAMERA_S = 2.0  # a camera silent this long is reported in diagnostics


class DriveMllmNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("drive_mllm", **kwargs)
        self._defaults = NodeParams().ros_defaults()
        for name, default in self._defaults.items():
            self.declare_parameter(name, default)
        self.health = NodeHealth(self.get_logger().warning)
        self.params: NodeParams | None = None
        self.model: DrivingModel | None = None
        self.config_error = ""
        self._inputs: list[Any] = []
        self._outputs: dict[str, Any] = {}
        self._intrinsics: dict[str, tuple[float, float, float, float]] = {}
        self._last_seen: dict[str, float] = {}
        self._sets = LatestOnly()
        self._questions: queue.Queue[str] = queue.Queue(maxsize=16)
        self._last_frame: Any = None
        self.recorder: HardCaseRecorder | None = None
        self._flags: queue.Queue[str] = queue.Queue(maxsize=16)
        self._last_case: tuple[CameraSet, Scene] | None = None  # the newest processed frame, for flags
        self._flag_service = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._diagnostics_timer = None

    # ---- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = p = NodeParams.from_ros({n: self.get_parameter(n).value for n in self._defaults})
            by_stamp = questions_by_stamp(p.question_file) if p.question_file else {}
            self.key_frames = KeyFrameQuestions(by_stamp, int(p.question_file_tolerance * NS))
            self.model = self._load_model(p)
            self.recorder = HardCaseRecorder(p.hard_cases, self.health.report) if p.hard_cases.enabled else None
        except (ValueError, ModelLoadError) as error:
            self.config_error = str(error)
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self.rig = p.rig()
        self.sync = CameraSynchronizer(
            self.rig.names, p.anchor_camera, p.sync_tolerance, p.sync_max_wait, p.missing_camera_policy
        )
        self.analyzer = SceneAnalyzer(self.model, p.stage_questions(), self.rig.names, self.model.builder.layout)
        pub = self.create_lifecycle_publisher
        self._outputs = {stage: pub(String, f"~/{stage}", 10) for stage in TEXT_STAGES}
        self._outputs.update(
            scene=pub(String, "~/scene", 10),
            key_objects=pub(MarkerArray, "~/key_objects", 10),
            answer=pub(String, "~/answer", 10),
        )
        if p.questions.get("trajectory"):
            self._outputs["trajectory"] = pub(Path, "~/trajectory", 10)
        if p.publish_annotated:
            self._outputs["annotated"] = pub(CompressedImage, "~/annotated", 2)
        self._outputs["diagnostics"] = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._flag_service = self.create_service(Trigger, "~/flag_frame", self._on_flag_service)
        self._diagnostics_timer = self.create_timer(p.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"configured: model {self.model.model_id} on {self.model.device}, "
            f"{len(self.rig.names)} cameras, layout {self.model.builder.layout}"
        )
        return TransitionCallbackReturn.SUCCESS

    def _load_model(self, params: NodeParams) -> DrivingModel:
        path = params.model_path or str(embedded_model_dir())
        return DrivingModel.load(
            path,
            params.prompt_builder(path),
            device=params.device,
            dtype=params.dtype,
            trust_remote_code=params.trust_remote_code,
        )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        reliability = (
            ReliabilityPolicy.RELIABLE if p.image_qos_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        )
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=reliability)
        info_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        image_type = CompressedImage if p.image_transport == "compressed" else Image
        for camera, topic in zip(self.rig.names, self.rig.topics, strict=True):
            self._inputs.append(
                self.create_subscription(image_type, topic, lambda msg, c=camera: self._on_image(c, msg), image_qos)
            )
            self._inputs.append(
                self.create_subscription(
                    CameraInfo,
                    topic.rsplit("/", 1)[0] + "/camera_info",
                    lambda msg, c=camera: self._on_info(c, msg),
                    info_qos,
                )
            )
        self._inputs.append(self.create_subscription(String, "~/question", self._on_question, 10))
        self._inputs.append(self.create_subscription(String, "~/flag_frame", self._on_flag, 10))
        warmup_s = self.model.warmup(self.analyzer.batch_sizes(), self.analyzer.questions.largest_budget())
        if warmup_s:
            self.get_logger().info(f"decode steps compiled and captured in {warmup_s:.1f} s")
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="drive_mllm_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"active: listening on {list(self.rig.topics)} ({p.image_transport})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs.clear()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs.clear()
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        if self._flag_service is not None:
            self.destroy_service(self._flag_service)
            self._flag_service = None
        self._close_recorder()
        self.model = self._last_frame = self._last_case = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._close_recorder()
        return TransitionCallbackReturn.SUCCESS

    def _close_recorder(self) -> None:
        """Frames already queued are written before the recorder stops."""
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def _stop_worker(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None

    # ---- subscription callbacks: cheap, never raise -----------------------------------------------
    def _on_image(self, camera: str, msg: Any) -> None:
        self._last_seen[camera] = time.monotonic()
        self.health.count(f"received {camera}")
        stamp_ns = header_stamp_ns(msg)
        try:
            camera_set = self.sync.add(camera, stamp_ns, msg)
        except ValueError as error:  # defensive: the synchronizer only raises on misconfiguration
            self.health.report(f"sync {camera}", f"{camera}: {error}")
            return
        if camera_set is not None:
            self._sets.put(camera_set, pinned=bool(self.key_frames.lookup(camera_set.stamp_ns)))

    def _on_info(self, camera: str, msg: CameraInfo) -> None:
        if msg.k[0] > 0 and msg.k[4] > 0:
            self._intrinsics[camera] = (msg.k[0], msg.k[4], msg.k[2], msg.k[5])

    def _on_question(self, msg: String) -> None:
        try:
            self._questions.put_nowait(msg.data)
        except queue.Full:
            self.health.report("question queue full", "~/question: too many pending questions, dropping new ones")

    def _on_flag(self, msg: String) -> None:
        self._flag(msg.data.strip() or "no reason given")

    def _on_flag_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._flag("flag_frame service")
        return response

    def _flag(self, reason: str) -> tuple[bool, str]:
        """Queue a flag for the worker: it keeps the newest processed frame (or the first one, if none yet)."""
        if self.recorder is None:
            self.health.report("flag while recording is off", "~/flag_frame: hard_cases.enabled is false, ignored")
            return False, "hard-case recording is off (hard_cases.enabled: false)"
        try:
            self._flags.put_nowait(reason)
        except queue.Full:
            self.health.report("flag queue full", "~/flag_frame: too many pending flags, dropping new ones")
            return False, "too many pending flags"
        return True, "the newest processed frame will be kept"

    # ---- worker ------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            camera_set = self._sets.take(timeout=0.1)
            try:
                if camera_set is not None:
                    self._process(camera_set)
                self._keep_flagged()  # cheap (hands a frame over), so before the questions
                self._answer_questions()
            except Exception as error:  # the worker must outlive any bad frame
                self.health.count("errors")
                self.health.report(f"worker {type(error).__name__}", f"frame processing failed: {error!r}")

    def _process(self, camera_set: CameraSet) -> None:
        started = time.perf_counter()
        views, missing = self._decode(camera_set)
        if views is None:
            return
        decoded = time.perf_counter()
        frame_id = camera_set.messages[self.params.anchor_camera].header.frame_id
        extra = self.key_frames.lookup(camera_set.stamp_ns)
        scene = self.analyzer.analyze(views, camera_set.stamp_ns, frame_id, missing, extra)
        self._last_frame = self.analyzer.last_frame
        scene.latency_ms["preprocess"] += (decoded - started) * 1e3  # image decode + tiles
        scene.latency_ms["total"] = (time.perf_counter() - started) * 1e3  # up to publishing
        publishing = time.perf_counter()
        self._publish(scene, views)
        scene.latency_ms["publish"] = (time.perf_counter() - publishing) * 1e3
        self._last_case = (camera_set, scene)
        self._keep_if_hard(camera_set, scene)
        for stage, value in scene.latency_ms.items():
            self.health.add_latency(stage, value)
        self.health.count("sets processed")
        self.health.count("sets partial", int(scene.partial))

    def _decode(self, camera_set: CameraSet) -> tuple[list[Any] | None, tuple[str, ...]]:
        """Messages -> RGB views in rig order; undecodable cameras count as missing (policy applies)."""
        present = [camera for camera in self.rig.names if camera_set.messages.get(camera) is not None]
        messages = [camera_set.messages[camera] for camera in present]
        converted = dict(
            zip(present, camera_set_to_rgb(messages, present, self.model.view_size, return_errors=True), strict=True)
        )
        views, missing = [], list(camera_set.missing)
        for camera in self.rig.names:
            view = converted.get(camera)
            if isinstance(view, ImageConversionError):  # one condition per kind of error, whatever the sizes
                self.health.report(re.sub(r"\d+", "N", str(view)), str(view))
                missing.append(camera)
                view = None
            views.append(view)
        if missing and self.params.missing_camera_policy == "drop":
            self.health.count("sets dropped")
            return None, tuple(missing)
        blank = blank_view(self.rig)
        return [blank if v is None else v for v in views], tuple(sorted(set(missing), key=self.rig.names.index))

    def _publish(self, scene: Scene, views: list[Any]) -> None:
        publishers = self._outputs
        for stage in TEXT_STAGES:
            publishers[stage].publish(outputs.stage_text(scene, stage))
        publishers["scene"].publish(outputs.scene_json(scene))
        publishers["key_objects"].publish(outputs.key_object_markers(scene, self._intrinsics, self.rig.image_size))
        if "trajectory" in publishers:
            publishers["trajectory"].publish(outputs.trajectory_path(scene, self.params.trajectory_frame_id))
        if "annotated" in publishers:
            mosaic = stitch_views(views, self.rig)
            publishers["annotated"].publish(
                outputs.annotated_image(mosaic, scene, self.rig, self.params.annotated_jpeg_quality)
            )

    def _keep_if_hard(self, camera_set: CameraSet, scene: Scene, flags: Sequence[str] = ()) -> None:
        """Hand a hard (or flagged) frame to the recorder with the images the model saw (blank views left out)."""
        if self.recorder is None:
            return
        verdict = judge(scene.qa, scene.unparsed, self.rig.names, self.params.hard_cases, flags)
        if verdict.reasons:
            seen = {c: m for c, m in camera_set.messages.items() if scene.cameras.get(c) == "ok"}
            self.recorder.offer(HardCase(scene.to_dict(), scene.stamp_ns, verdict, seen))

    def _keep_flagged(self) -> None:
        if self._last_case is None or self._flags.empty():
            return
        reasons = []
        while not self._flags.empty():
            reasons.append(self._flags.get_nowait())
        self._keep_if_hard(*self._last_case, flags=list(dict.fromkeys(reasons)))  # repeated flags count once

    def _answer_questions(self) -> None:
        while not self._questions.empty():
            question = self._questions.get_nowait()
            if self._last_frame is None:
                answer = "No camera set has been processed yet."
            else:
                answer = self.model.answer(self._last_frame, [question])[0]
            self._outputs["answer"].publish(String(data=answer))

    # ---- diagnostics -------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        if self.model is None or "diagnostics" not in self._outputs:
            return
        now = time.monotonic()
        stale = [c for c in self.rig.names if now - self._last_seen.get(c, -1e9) > STALE_CAMERA_S]
        values: dict[str, object] = {
            "model": self.model.model_id,
            "device": self.model.device,
            "layout": self.model.builder.layout,
        }
        values.update(self.health.snapshot())
        stats = self.sync.stats
        values.update(
            {
                "sets complete": stats.complete,
                "sets partial (sync)": stats.partial,
                "sets dropped (sync)": stats.dropped,
                "sets superseded": stats.superseded + self._sets.superseded,
                "key frames dropped": self._sets.pinned_dropped,
                "time resets": stats.time_resets,
                "stale cameras": ",".join(stale) or "none",
            }
        )
        values.update({f"missing {c}": n for c, n in stats.missing_by_camera.items()})
        if self.recorder is not None:
            values.update(self.recorder.counts)
        if self.health.counters["errors"] or self.health.conditions:
            level, message = DiagnosticStatus.WARN, "serving; bad input or errors seen (see counts)"
        elif stale:
            level, message = DiagnosticStatus.WARN, f"no images from {', '.join(stale)}"
        else:
            level, message = DiagnosticStatus.OK, "serving"
        stamp_ns = self.get_clock().now().nanoseconds
        self._outputs["diagnostics"].publish(outputs.diagnostics(stamp_ns, "drive_mllm: model", level, message, values))


SHUTDOWN_GRACE_S = 1.0


def shutdown_within(seconds: float) -> bool:
    """Whether the default context is (or within `seconds` becomes) shut down."""
    deadline = time.monotonic() + seconds
    while rclpy.ok() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not rclpy.ok()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv if argv is None else ["drive-mllm node", *argv]
    keep_freed_memory()
    rclpy.init(args=args)
    node = DriveMllmNode()
    code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                print(f"drive_mllm: {node.config_error or 'configure failed (see the log above)'}", file=sys.stderr)
                return 2
            node.trigger_activate()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # A message take that SIGINT's context shutdown interrupts raises a bare pybind11 conversion error, at times
        # a moment before the context reports the shutdown: give it that moment before calling the error real.
        if not shutdown_within(SHUTDOWN_GRACE_S):
            raise
    finally:
        node._stop_worker()
        node._close_recorder()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
