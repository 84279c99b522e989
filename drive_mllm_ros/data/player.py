"""`drive-mllm play`: replay a bag with rclpy, since ``ros2 bag play`` does not install from PyPI.

Reads ROS 2 bags (MCAP, sqlite3) and ROS 1 bags through ``bags.BagSource`` and publishes the stored
CDR bytes without decoding (ROS 1 messages are converted to CDR once). Timing follows the bag's
receive times scaled by ``rate`` against one monotonic start, so sleeping errors never accumulate.
``clock=True`` publishes ``/clock`` (bag time) before every message for ``use_sim_time`` nodes.
Topics whose type has no Python message package here (e.g. ``tf2_msgs``) are skipped with one
warning per topic. ``play_bag`` is the API (used by ``drive-mllm bringup --bag``); ``main`` the CLI.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rosgraph_msgs.msg import Clock

from .bags import BagError, BagSource
from .rclpy_io import message_class, publisher_qos, ros_context

log = logging.getLogger("drive_mllm.play")


@dataclass
class PlayStats:
    published: Counter = field(default_factory=Counter)  # topic (after remapping) -> messages
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> why
    lateness_s: list[float] = field(default_factory=list)  # publish time minus scheduled time
    loops: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        late = sorted(self.lateness_s) or [0.0]
        return (f"played {sum(self.published.values())} messages on {len(self.published)} topics in "
                f"{self.seconds:.1f} s ({self.loops} pass(es)); lateness median {late[len(late) // 2] * 1e3:.1f} ms, "
                f"max {late[-1] * 1e3:.1f} ms")


def parse_remap(pairs: list[str]) -> dict[str, str]:
    remap = {}
    for pair in pairs:
        source, sep, target = pair.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"--remap: expected FROM:=TO, got '{pair}'")
        remap[source] = target
    return remap


def _create_publishers(node, topics: dict[str, str], remap: dict[str, str], stats: PlayStats) -> dict[str, object]:
    """One publisher per played topic, made before playing so subscribers can match during ``delay``;
    topics of unknown types are skipped with one warning each."""
    publishers = {}
    for topic, msgtype in topics.items():
        cls = message_class(msgtype)
        if cls is None:
            stats.skipped_topics[topic] = f"no Python message package for {msgtype}"
            log.warning("play: skipping topic %s: no Python message package for type %s", topic, msgtype)
            continue
        target = remap.get(topic, topic)
        publishers[topic] = node.create_publisher(cls, target, publisher_qos(target))
    return publishers


def play_bag(path: Path | str, rate: float = 1.0, loop: bool = False, clock: bool = False,
             topics: list[str] | None = None, remap: dict[str, str] | None = None, start_offset: float = 0.0,
             stop_event: threading.Event | None = None, delay: float = 0.0,
             wait_for_subscribers: float = 0.0) -> PlayStats:
    """Play a bag until its end (each pass when looping) or ``stop_event``; usable from a thread.

    Before the first message it waits up to ``wait_for_subscribers`` seconds until every played topic
    has a matched subscriber (DDS discovery can take seconds on a loaded machine), then ``delay`` seconds.

    Raises ``BagError`` for unreadable input (after publishing what was readable of a damaged bag).
    """
    if rate <= 0:
        raise ValueError(f"rate: expected a positive playback rate, got {rate}")
    if start_offset < 0:
        raise ValueError(f"start_offset: expected >= 0 seconds, got {start_offset}")
    source = BagSource(path)
    stop_event = stop_event or threading.Event()
    stats = PlayStats()
    wanted = set(topics) if topics else None
    if wanted and (missing := wanted - set(source.topics)):
        raise BagError(f"bag {source.path}: no topics {sorted(missing)}; it has {sorted(source.topics)}")
    for topic, msgtype in source.unconvertible.items():
        stats.skipped_topics[topic] = f"ROS 1 type {msgtype} has no ROS 2 definition"
        log.warning("play: skipping topic %s: ROS 1 type %s has no ROS 2 definition", topic, msgtype)
    started = time.monotonic()
    with ros_context() as context:
        from rclpy.node import Node

        node = Node("drive_mllm_player", context=context)
        remap = remap or {}
        played = {t: m for t, m in source.topics.items() if (wanted is None or t in wanted)
                  and t not in source.unconvertible}
        publishers = _create_publishers(node, played, remap, stats)
        clock_publisher = node.create_publisher(Clock, "/clock", publisher_qos("/clock")) if clock else None
        _wait_for_subscribers(list(publishers.values()), wait_for_subscribers, stop_event)
        if delay > 0:
            stop_event.wait(delay)
        try:
            while not stop_event.is_set():
                _play_once(source, set(publishers), rate, start_offset, publishers, remap, clock_publisher,
                           stop_event, stats)
                stats.loops += 1
                if not loop:
                    break
        finally:
            stats.seconds = time.monotonic() - started
            _flush(list(publishers.values()) + [clock_publisher] * (clock_publisher is not None))
            node.destroy_node()
    return stats


def _flush(publishers: list, timeout_s: float = 2.0) -> None:
    """Wait (bounded) until reliable subscribers acknowledged everything: exiting right after the last
    publish can otherwise lose the bag's final messages."""
    for publisher in publishers:
        publisher.wait_for_all_acked(Duration(seconds=timeout_s))


def _wait_for_subscribers(publishers: list, timeout: float, stop_event: threading.Event) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop_event.is_set():
        if all(p.get_subscription_count() > 0 for p in publishers):
            return
        stop_event.wait(0.05)


def _play_once(source: BagSource, wanted: set[str], rate: float, start_offset: float, publishers: dict[str, object],
               remap: dict[str, str], clock_publisher, stop_event: threading.Event, stats: PlayStats) -> None:
    first_ns = start_ns = wall_start = None
    for message in source.messages(wanted):
        if first_ns is None:
            first_ns = message.timestamp
            start_ns = first_ns + round(start_offset * 1e9)
        if message.timestamp < start_ns:
            continue
        if wall_start is None:
            wall_start = time.monotonic()
        due = wall_start + (message.timestamp - start_ns) / 1e9 / rate
        if stop_event.wait(max(0.0, due - time.monotonic())):
            return
        if clock_publisher is not None:
            clock_publisher.publish(_clock(message.timestamp))
        publishers[message.topic].publish(message.data)
        stats.lateness_s.append(time.monotonic() - due)
        stats.published[remap.get(message.topic, message.topic)] += 1


def _clock(nanoseconds: int) -> Clock:
    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = divmod(nanoseconds, 1_000_000_000)
    return msg


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drive-mllm play", description=__doc__.split("\n")[0])
    p.add_argument("bag", type=Path, help="ROS 2 bag folder, .mcap/.db3 file, or ROS 1 .bag file")
    p.add_argument("--rate", type=float, default=1.0)
    p.add_argument("--loop", action="store_true")
    p.add_argument("--clock", action="store_true", help="publish /clock with bag time (for use_sim_time)")
    p.add_argument("--topics", nargs="*", default=None, help="only these topics (default: all)")
    p.add_argument("--remap", nargs="*", default=[], metavar="FROM:=TO")
    p.add_argument("--start-offset", type=float, default=0.0, help="skip the first S seconds of the bag")
    p.add_argument("--delay", type=float, default=0.0, help="wait S seconds before playing")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds until every played topic has a subscriber")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stats = play_bag(args.bag, args.rate, args.loop, args.clock, args.topics, parse_remap(args.remap),
                         args.start_offset, delay=args.delay, wait_for_subscribers=args.wait_for_subscribers)
    except (BagError, ValueError) as err:
        print(f"drive-mllm play: {err}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    print(stats.summary())
    return 0
