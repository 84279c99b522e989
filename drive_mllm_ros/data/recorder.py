"""`drive-mllm record --out BAG TOPIC [TOPIC...]`: a small rclpy + rosbags recorder.

Subscribes with ``raw=True`` and writes the CDR bytes as received, with the publisher's type name,
into an MCAP (default) or sqlite3 ROS 2 bag; bag time = receive time. Topics that do not exist yet
are picked up as soon as they appear. Stops on SIGINT, after ``--duration`` seconds or after
``--count`` messages in total, and always closes the bag cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from .bags import default_typestore, open_writer
from .rclpy_io import message_class, ros_context

log = logging.getLogger("drive_mllm.record")
DISCOVERY_PERIOD_S = 0.2


def subscriber_qos(node, topic: str) -> QoSProfile:
    """Match the publishers: best effort if any is, transient local if all are (then latched data arrives)."""
    infos = node.get_publishers_info_by_topic(topic)
    best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
    latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
    return QoSProfile(depth=100, reliability=reliability,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class Recorder:
    def __init__(self, node, writer, topics: list[str], count: int | None) -> None:
        self.node, self.writer, self.count = node, writer, count
        self.pending = list(topics)
        self.connections: dict[str, object] = {}
        self.subscriptions = []
        self.received: Counter = Counter()
        self.done = threading.Event()
        self.typestore = default_typestore()

    def discover(self) -> None:
        """Subscribe to every requested topic that has appeared, with the type its publishers use."""
        if not self.pending:
            return
        types = dict(self.node.get_topic_names_and_types())
        for topic in [t for t in self.pending if t in types]:
            msgtype = types[topic][0]
            cls = message_class(msgtype)
            if cls is None or msgtype not in self.typestore.fielddefs:
                log.warning("record: skipping %s: type %s is not known here", topic, msgtype)
                self.pending.remove(topic)
                continue
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
            self.subscriptions.append(self.node.create_subscription(
                cls, topic, lambda data, t=topic: self.on_message(t, data), subscriber_qos(self.node, topic),
                raw=True))
            self.pending.remove(topic)

    def on_message(self, topic: str, data: bytes) -> None:
        if self.done.is_set():
            return
        self.writer.write(self.connections[topic], self.node.get_clock().now().nanoseconds, data)
        self.received[topic] += 1
        if self.count is not None and sum(self.received.values()) >= self.count:
            self.done.set()


def record(out: Path | str, topics: list[str], duration: float | None = None, count: int | None = None,
           storage: str = "mcap", stop_event: threading.Event | None = None) -> Counter:
    """Record until ``duration``, ``count`` messages, ``stop_event`` or SIGINT; returns counts per topic."""
    if not topics:
        raise ValueError("topics: expected at least one topic to record")
    if duration is not None and duration <= 0:
        raise ValueError(f"--duration: expected a positive number of seconds, got {duration}")
    if count is not None and count < 1:
        raise ValueError(f"--count: expected at least 1 message, got {count}")
    stop_event = stop_event or threading.Event()
    with ros_context() as context, open_writer(Path(out), storage) as writer:
        from rclpy.node import Node

        node = Node("drive_mllm_recorder", context=context)
        recorder = Recorder(node, writer, topics, count)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + duration if duration is not None else None
        next_discovery = 0.0
        try:
            while not (recorder.done.is_set() or stop_event.is_set()):
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_discovery:
                    recorder.discover()
                    next_discovery = now + DISCOVERY_PERIOD_S
                executor.spin_once(timeout_sec=0.05)
        except KeyboardInterrupt:
            log.info("record: interrupted, closing %s", out)  # a clean stop: the writer still writes metadata
        finally:
            executor.shutdown()
            node.destroy_node()
    return recorder.received


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drive-mllm record", description=__doc__.split("\n")[0])
    p.add_argument("topics", nargs="+")
    p.add_argument("--out", type=Path, required=True, help="bag folder to create")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--count", type=int, default=None, help="stop after N messages in total")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # SIGINT stops recording even where a non-interactive shell started us in the background with SIGINT ignored
    # (Python then installs no KeyboardInterrupt): the node behaves so too, as rclpy installs its own handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        counts = record(args.out, args.topics, args.duration, args.count, args.storage)
    except ValueError as err:
        print(f"drive-mllm record: {err}", file=sys.stderr)
        return 2
    except ExternalShutdownException:
        return 0
    print(f"record: {sum(counts.values())} messages ({dict(counts)}) -> {args.out}")
    return 0
