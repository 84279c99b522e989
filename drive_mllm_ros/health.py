"""Node health: counters, latency percentiles and once-per-condition reporting. Pure Python.

Bad input is reported once per condition (not per message) in the log, and always counted for
/diagnostics, so a flood of broken images neither floods the log nor hides.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable

import numpy as np


class NodeHealth:
    def __init__(self, log_warning: Callable[[str], None], latency_window: int = 200) -> None:
        self._log_warning = log_warning
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.conditions: Counter[str] = Counter()  # condition key -> occurrences
        self.latencies_ms: dict[str, deque[float]] = {}
        self._window = latency_window

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def report(self, condition: str, message: str) -> None:
        """Count a bad-input condition; log it the first time it happens."""
        with self._lock:
            first = condition not in self.conditions
            self.conditions[condition] += 1
        if first:
            self._log_warning(f"{message} (reported once; see /diagnostics for counts)")

    def add_latency(self, stage: str, milliseconds: float) -> None:
        with self._lock:
            self.latencies_ms.setdefault(stage, deque(maxlen=self._window)).append(milliseconds)

    def percentiles(self, stage: str) -> tuple[float, float] | None:
        with self._lock:
            values = list(self.latencies_ms.get(stage, ()))
        if not values:
            return None
        p50, p95 = np.percentile(values, [50, 95])
        return float(p50), float(p95)

    def snapshot(self) -> dict[str, object]:
        """Flat key -> value view for /diagnostics."""
        with self._lock:
            values: dict[str, object] = dict(self.counters)
            values.update({f"condition: {k}": v for k, v in self.conditions.items()})
        for stage in list(self.latencies_ms):
            p50, p95 = self.percentiles(stage) or (0.0, 0.0)
            values[f"latency {stage} p50 ms"], values[f"latency {stage} p95 ms"] = round(p50, 1), round(p95, 1)
        return values
