"""Closed-loop scores in the CARLA leaderboard's terms, from an ``Episode``. Pure.

- Route completion (%): progress along the route, less the distance driven outside the route's lane
  (as the leaderboard 1.0 did for "outside route lanes"), over the route length.
- Infraction penalty: the product of one coefficient per infraction (collision with a pedestrian 0.50, a
  vehicle 0.60, a static object 0.65, running a stop 0.80); lane departures are counted and cost route
  completion, not penalty.
- Driving score = route completion x penalty. Overall figures are means over the scenarios.
- Also: minimum time to collision (ground truth, objects ahead in the ego's corridor) and comfort (peak and
  RMS longitudinal jerk, peak lateral acceleration).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .simulator import INFRACTION_KINDS, Episode

PENALTY = {"collision_pedestrian": 0.50, "collision_vehicle": 0.60, "collision_static": 0.65, "ran_stop": 0.80}


@dataclass(frozen=True)
class Score:
    scenario: str
    route_completion: float  # %
    penalty: float
    driving_score: float  # %
    infractions: dict[str, int]
    min_ttc: float | None  # s
    max_jerk: float  # m/s^3
    rms_jerk: float
    max_lateral_accel: float  # m/s^2
    duration: float  # s simulated
    end_reason: str
    counters: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def score_episode(episode: Episode) -> Score:
    samples = episode.samples
    progress = max((s.progress for s in samples), default=0.0)
    completed = max(0.0, min(progress, episode.route_length) - episode.distance_off_route)
    completion = 100.0 * completed / episode.route_length if episode.route_length > 0 else 0.0
    infractions = {kind: sum(e.kind == kind for e in episode.events) for kind in INFRACTION_KINDS}
    penalty = math.prod(PENALTY[kind] ** count for kind, count in infractions.items() if kind in PENALTY)
    times = np.array([s.time for s in samples])
    accel = np.array([s.accel for s in samples])
    jerk = np.diff(accel) / np.maximum(np.diff(times), 1e-6) if len(samples) > 1 else np.zeros(1)
    lateral = np.array([abs(s.speed * s.yaw_rate) for s in samples])
    ttcs = [s.ttc for s in samples if s.ttc is not None]
    counters = dict(episode.counters)
    counters["planner timeouts"] = sum(e.kind == "planner_timeout" for e in episode.events)
    return Score(
        episode.scenario,
        round(completion, 2),
        round(penalty, 4),
        round(completion * penalty, 2),
        infractions,
        round(min(ttcs), 2) if ttcs else None,
        round(float(np.abs(jerk).max()), 2),
        round(float(np.sqrt((jerk**2).mean())), 2),
        round(float(lateral.max(initial=0.0)), 2),
        round(float(times[-1]) if len(times) else 0.0, 2),
        episode.end_reason,
        counters,
    )


def overall(scores: list[Score]) -> dict:
    """Means over scenarios, infractions summed; min TTC the smallest seen."""
    if not scores:
        return {}
    ttcs = [s.min_ttc for s in scores if s.min_ttc is not None]
    return {
        "route_completion": round(float(np.mean([s.route_completion for s in scores])), 2),
        "penalty": round(float(np.mean([s.penalty for s in scores])), 4),
        "driving_score": round(float(np.mean([s.driving_score for s in scores])), 2),
        "infractions": {k: sum(s.infractions[k] for s in scores) for k in INFRACTION_KINDS},
        "min_ttc": min(ttcs) if ttcs else None,
        "max_jerk": max(s.max_jerk for s in scores),
        "max_lateral_accel": max(s.max_lateral_accel for s in scores),
    }
