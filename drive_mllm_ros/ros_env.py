"""DDS isolation for every process we start: discovery on loopback, a free domain id, logs in a temp folder.

Default discovery multicasts out of the machine's interface; ``ROS_LOCALHOST_ONLY`` is ignored by
Kilted, so ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` is what keeps traffic on this machine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import MutableMapping

_held_domain = None  # keeps the domain id reserved for the life of this process


def isolate_ros(env: MutableMapping[str, str] = os.environ, fresh_domain: bool = False) -> MutableMapping[str, str]:
    """Loopback discovery and a free ROS_DOMAIN_ID and ROS_LOG_DIR, unless the user chose them.

    Set ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET yourself to reach other machines.
    """
    global _held_domain
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if fresh_domain or not env.get("ROS_DOMAIN_ID"):
        import domain_coordinator  # reserves the id with a local port while this process lives

        _held_domain = domain_coordinator.domain_id()
        env["ROS_DOMAIN_ID"] = str(_held_domain.__enter__())
    if not env.get("ROS_LOG_DIR"):
        env["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="drive_mllm_roslog_")
    return env
