"""rclpy pieces shared by the player and the recorder: message classes by type name, QoS, start-up."""

from __future__ import annotations

import importlib
from contextlib import contextmanager

import rclpy
from rclpy.context import Context
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from ..ros_env import isolate_ros

LATCHED_TOPICS = ("/tf_static",)


def message_class(type_name: str) -> type | None:
    """'sensor_msgs/msg/CompressedImage' -> its rclpy class, or None when that package is not installed."""
    parts = type_name.split("/")
    if len(parts) != 3:
        return None
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError):
        return None


def publisher_qos(topic: str, depth: int = 10) -> QoSProfile:
    """Reliable; latched (transient local) for static transforms, as tf2 expects."""
    latched = topic in LATCHED_TOPICS
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1 if latched else depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


@contextmanager
def ros_context(args: list[str] | None = None):
    """A private rclpy context, so that the tools also run inside a process that has its own (bringup)."""
    isolate_ros()
    context = Context()
    # no rclpy signal handlers: SIGINT stays a KeyboardInterrupt, and init also works off the main thread
    rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
