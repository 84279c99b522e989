"""Camera-set synchronization anchored on one camera (message_filters does not install from PyPI).

A set is the anchor camera's message plus, for every other camera, its message nearest in stamp
within a tolerance. nuScenes cameras fire up to ~45 ms apart, and messages arrive out of order
across topics, so anchors wait (bounded by ``max_wait``) for the other cameras. The newest
complete set wins; an anchor that expires incomplete is dropped or emitted with blanks, per policy.
Memory is bounded: a short history per camera and a few pending anchors. Pure Python.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MISSING_POLICIES = ("drop", "blank")
NS = 1_000_000_000


@dataclass
class CameraSet:
    stamp_ns: int  # the anchor message's stamp
    messages: dict[str, Any]  # camera -> message, cameras in `missing` are absent
    missing: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.missing)


@dataclass
class SyncStats:
    complete: int = 0
    partial: int = 0  # emitted with blank views
    dropped: int = 0  # expired with a missing camera under the "drop" policy
    superseded: int = 0  # pending anchors overtaken by a newer complete set
    time_resets: int = 0  # stamps jumped back (a looping bag, a restarted driver)
    missing_by_camera: dict[str, int] = field(default_factory=dict)


class CameraSynchronizer:
    """Feed messages with ``add``; it returns a set when one is ready (never an older one than before)."""

    def __init__(
        self,
        cameras: tuple[str, ...],
        anchor: str,
        tolerance_s: float = 0.05,
        max_wait_s: float = 0.25,
        missing_policy: str = "drop",
        history: int = 8,
    ) -> None:
        if anchor not in cameras:
            raise ValueError(f"anchor_camera: '{anchor}' is not one of {list(cameras)}")
        if missing_policy not in MISSING_POLICIES:
            raise ValueError(f"missing_camera_policy: expected one of {MISSING_POLICIES}, got '{missing_policy}'")
        if tolerance_s <= 0 or max_wait_s < 0:
            raise ValueError(f"sync_tolerance must be > 0 and sync_max_wait >= 0, got {tolerance_s}, {max_wait_s}")
        self.cameras, self.anchor, self.policy = cameras, anchor, missing_policy
        self.tolerance_ns, self.max_wait_ns = int(tolerance_s * NS), int(max_wait_s * NS)
        self.history: dict[str, deque[tuple[int, Any]]] = {c: deque(maxlen=history) for c in cameras}
        self.pending: deque[int] = deque(maxlen=history)  # anchor stamps waiting for other cameras
        self.last_emitted_ns = -1
        self.newest_ns = -1  # newest stamp seen on any camera: the clock that expires anchors
        self.stats = SyncStats()

    def add(self, camera: str, stamp_ns: int, message: Any) -> CameraSet | None:
        if camera not in self.history:
            raise ValueError(f"camera '{camera}' is not synchronized (expected one of {list(self.cameras)})")
        self._handle_time_jump(camera, stamp_ns)
        self.history[camera].append((stamp_ns, message))
        self.newest_ns = max(self.newest_ns, stamp_ns)
        overflow = None
        if camera == self.anchor:
            if len(self.pending) == self.pending.maxlen:
                overflow = self._expire(self.pending[0])  # about to fall out of the window: settle it first
            self.pending.append(stamp_ns)
        return self._resolve() or overflow

    def _handle_time_jump(self, camera: str, stamp_ns: int) -> None:
        """Stamps going back by more than the wait window mean a restart: forget that camera's past."""
        history = self.history[camera]
        if not history or stamp_ns >= history[-1][0] - self.max_wait_ns - self.tolerance_ns:
            return
        self.stats.time_resets += 1
        history.clear()
        if camera == self.anchor:  # the whole source restarted (a looping bag): forget every camera
            for other in self.history.values():
                other.clear()
            self.pending.clear()
            self.last_emitted_ns = self.newest_ns = -1

    def _match(self, anchor_ns: int) -> tuple[dict[str, Any], list[str]]:
        """Messages matched to an anchor, and the cameras whose best match may still arrive.

        A camera is decided once it has a message stamped at or after the anchor: stamps only grow,
        so nothing later can be nearer.
        """
        matched, undecided = {}, []
        for camera, history in self.history.items():
            best = min(history, key=lambda item: abs(item[0] - anchor_ns), default=None)
            if not history or history[-1][0] < anchor_ns:
                undecided.append(camera)
            if best is not None and abs(best[0] - anchor_ns) <= self.tolerance_ns:
                matched[camera] = best[1]
        return matched, undecided

    def _resolve(self) -> CameraSet | None:
        ready: CameraSet | None = None
        for anchor_ns in list(self.pending):
            matched, undecided = self._match(anchor_ns)
            if undecided and self.newest_ns - anchor_ns <= self.max_wait_ns:
                continue  # a better match may still arrive
            if len(matched) == len(self.cameras):
                self._discard_up_to(anchor_ns)
                ready = self._emit(CameraSet(anchor_ns, matched)) or ready
            else:
                ready = self._expire(anchor_ns) or ready
        return ready

    def _discard_up_to(self, anchor_ns: int) -> None:
        while self.pending and self.pending[0] < anchor_ns:
            self.pending.popleft()
            self.stats.superseded += 1
        self.pending.popleft()

    def _expire(self, anchor_ns: int) -> CameraSet | None:
        matched, _ = self._match(anchor_ns)
        self.pending.remove(anchor_ns)
        missing = tuple(c for c in self.cameras if c not in matched)
        for camera in missing:
            self.stats.missing_by_camera[camera] = self.stats.missing_by_camera.get(camera, 0) + 1
        if self.policy == "drop" or self.anchor in missing:
            self.stats.dropped += 1
            return None
        return self._emit(CameraSet(anchor_ns, matched, missing))

    def _emit(self, camera_set: CameraSet) -> CameraSet | None:
        if camera_set.stamp_ns <= self.last_emitted_ns:
            self.stats.superseded += 1
            return None
        self.last_emitted_ns = camera_set.stamp_ns
        if camera_set.partial:
            self.stats.partial += 1
        else:
            self.stats.complete += 1
        return camera_set


class LatestOnly:
    """The mailbox between the subscription thread and the worker: never a backlog of ordinary sets.

    ``put`` replaces an unprocessed ordinary item (counted as superseded). Pinned items (key frames
    whose questions must be answered, e.g. while scoring a test set) queue up to ``pinned_limit``
    and are taken first; beyond that limit they are dropped and counted.
    """

    def __init__(self, pinned_limit: int = 32) -> None:
        self._item: Any = None
        self._pinned: deque[Any] = deque()
        self._pinned_limit = pinned_limit
        self._ready = threading.Condition()
        self.superseded = 0
        self.pinned_dropped = 0

    def put(self, item: Any, pinned: bool = False) -> None:
        with self._ready:
            if pinned and len(self._pinned) < self._pinned_limit:
                self._pinned.append(item)
            elif pinned:
                self.pinned_dropped += 1
            else:
                self.superseded += self._item is not None
                self._item = item
            self._ready.notify()

    def take(self, timeout: float | None = None) -> Any:
        with self._ready:
            if self._item is None and not self._pinned:
                self._ready.wait(timeout)
            if self._pinned:
                return self._pinned.popleft()
            item, self._item = self._item, None
            return item
