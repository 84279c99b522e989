"""The synthetic world as a closed-loop simulator: an ego driven from outside, ground truth, infractions.

Pure (no rclpy, no rendering): ``sim_node`` renders and publishes, the tests step it directly. The
ego follows the scenario's scripted path as its *route*; a planner drives it through ``set_command``
(target speed and curvature). The vehicle model is a kinematic bicycle (curvature = tan(steer) /
wheelbase) with a steering-angle and steering-rate limit, and a first-order speed loop within the
world's acceleration limits, so that commands become smooth motion. Commands out of range are
clamped and counted; without a command for ``command_timeout`` seconds the ego brakes to a stop.

Infractions are recorded as they happen, CARLA leaderboard style: a collision once per object
(pedestrian, vehicle, static), a lane departure per excursion of the ego centre more than
``LANE_DEPARTURE_OFFSET`` from the route's centreline (the distance driven outside counts against route
completion), and running a stop: the ego's front crossing a crosswalk while a pedestrian is on it in
the ego's half of the road (the world has no signs or lights; a crosswalk in use is its stop).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.world import EGO_SIZE, ROAD_HALF_WIDTH, EgoCommand, ObjectState, Path, World, WorldState, build_world

SIM_EPOCH_S = 1000  # ROS stamps of sim time 0: a zero stamp reads as "unset" to many tools
ROUTE_LENGTH = 110.0  # m: every preset's event (crosswalk, cut-in, obstacle, turn) lies within
PAST_STOP_POINT = 20.0  # m: the route goes on at least this far past a braking lead's stop point
LEAD_RESUME_AFTER = 4.0  # s a braking lead stands before driving off again (the closed loop must finish)
ROUTE_TAIL = 30.0  # m of route published beyond its end, so that pure pursuit has a look-ahead point
PHYSICS_DT = World.MAX_SUBSTEP
LANE_DEPARTURE_OFFSET = 1.5  # m of ego-centre offset from the route centreline (the body then crosses a lane line)
CROSSWALK_HALF_WIDTH = 2.0  # m, as the renderer draws the zebra
GROUND_TRUTH_RANGE = 80.0  # m: objects farther from the ego are left out of the ground truth
TRACK_RANGE = 40.0  # m: object positions recorded for the plots when this close to the ego
TRACK_PERIOD = 0.5  # s between recorded object positions
INFRACTION_KINDS = ("collision_pedestrian", "collision_vehicle", "collision_static", "lane_departure", "ran_stop")


@dataclass(frozen=True)
class VehicleLimits:
    max_speed: float = 20.0  # m/s
    max_steer: float = math.radians(35.0)
    max_steer_rate: float = math.radians(60.0)  # per second
    wheelbase: float = 2.8  # m
    speed_gain: float = 1.5  # 1/s: acceleration per m/s of speed error, within the world's limits
    holding_brake: float = 1.0  # m/s^2 at least, while the command is to stop

    @property
    def max_curvature(self) -> float:
        return math.tan(self.max_steer) / self.wheelbase


@dataclass(frozen=True)
class SimConfig:
    scenario: str
    seed: int
    density: float = 0.5
    route_length: float = 0.0  # m; 0: ROUTE_LENGTH, extended past a braking lead's stop point
    time_limit: float = 0.0  # s; 0: twice the route at cruise speed plus 30 s
    command_timeout: float = 1.0  # s of simulated time without a command before the ego brakes to a stop
    limits: VehicleLimits = field(default_factory=VehicleLimits)


@dataclass(frozen=True)
class Sample:
    time: float
    x: float
    y: float
    yaw: float
    speed: float
    accel: float
    yaw_rate: float
    progress: float  # m along the route
    offset: float  # m from the route centreline
    ttc: float | None  # s to collision with the nearest object ahead at current speeds; None: not closing


@dataclass(frozen=True)
class Event:
    time: float
    kind: str  # one of INFRACTION_KINDS, or planner_timeout
    detail: str
    x: float
    y: float


@dataclass
class Episode:
    """Everything scoring and the report need about one run; JSON-serialisable through ``to_dict``."""

    scenario: str
    seed: int
    description: str
    route: list[list[float]]
    route_length: float
    cruise_speed: float
    time_limit: float
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    tracks: list[list] = field(default_factory=list)  # [time, instance, kind, x, y]
    distance_off_route: float = 0.0
    end_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Episode:
        values = dict(data)
        values["samples"] = [Sample(**s) for s in data["samples"]]
        values["events"] = [Event(**e) for e in data["events"]]
        return cls(**values)


def infraction_kind(obj_kind: str) -> str:
    if obj_kind == "pedestrian":
        return "collision_pedestrian"
    return "collision_static" if obj_kind in ("cone", "barrier") else "collision_vehicle"


def box_corners(x: float, y: float, yaw: float, length: float, width: float) -> np.ndarray:
    """4x2 corners of an oriented rectangle."""
    c, s = math.cos(yaw), math.sin(yaw)
    half = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [length / 2, width / 2]
    return half @ np.array([[c, s], [-s, c]]) + [x, y]


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two 4x2 rectangles."""
    for box in (a, b):
        for edge in (box[1] - box[0], box[2] - box[1]):
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def crosswalk_occupied(
    crosswalk_x: float | None,
    pedestrians: Iterable[tuple[float, float, float, float]],
    horizon: float = 0.0,
    step: float = 0.5,
) -> bool:
    """Whether a pedestrian (x, y, vx, vy) is, now or within ``horizon`` s at constant velocity, on the crosswalk
    in the ego's half of the road (the presets' ego drives along +x in the lanes at y < 0)."""
    if crosswalk_x is None:
        return False
    times = np.arange(0.0, horizon + 1e-9, step)
    for x, y, vx, vy in pedestrians:
        px, py = x + vx * times, y + vy * times
        on = (np.abs(px - crosswalk_x) <= CROSSWALK_HALF_WIDTH + 0.5) & (py >= -ROAD_HALF_WIDTH - 0.5) & (py <= 0.5)
        if on.any():
            return True
    return False


def pedestrian_motion(objects: Iterable[ObjectState]) -> list[tuple[float, float, float, float]]:
    return [(o.x, o.y, o.speed * math.cos(o.yaw), o.speed * math.sin(o.yaw)) for o in objects if o.kind == "pedestrian"]


def route_station(route: Path, x: float, y: float, lo: int = 0, hi: int | None = None) -> tuple[float, float, int]:
    """(arc length, distance) of the point's projection on the route between points ``lo`` and ``hi``, and the
    index of the segment it falls on."""
    hi = len(route.xy) - 1 if hi is None else min(hi, len(route.xy) - 1)
    start, end = route.xy[lo:hi], route.xy[lo + 1 : hi + 1]
    seg = end - start
    lengths = np.maximum((seg**2).sum(axis=1), 1e-12)
    t = np.clip(((np.array([x, y]) - start) * seg).sum(axis=1) / lengths, 0.0, 1.0)
    nearest = start + seg * t[:, None]
    distances = np.hypot(nearest[:, 0] - x, nearest[:, 1] - y)
    k = int(np.argmin(distances))
    return float(route.s[lo + k] + t[k] * math.sqrt(lengths[k])), float(distances[k]), lo + k


def time_to_collision(state: WorldState) -> float | None:
    """Nearest object ahead in the ego's footprint corridor, closing at current speeds: gap / closing speed."""
    cos_yaw, sin_yaw = math.cos(state.ego_yaw), math.sin(state.ego_yaw)
    best = None
    for obj in state.objects:
        dx, dy = obj.x - state.ego_x, obj.y - state.ego_y
        ahead, across = dx * cos_yaw + dy * sin_yaw, -dx * sin_yaw + dy * cos_yaw
        if ahead <= 0 or ahead > 80 or abs(across) > (EGO_SIZE[1] + obj.size[1]) / 2 + 0.3:
            continue
        closing = state.ego_speed - obj.speed * math.cos(obj.yaw - state.ego_yaw)
        if closing > 0.1:
            ttc = max(ahead - (EGO_SIZE[0] + obj.size[0]) / 2, 0.0) / closing
            best = ttc if best is None else min(best, ttc)
    return best


def clamp_command(command: EgoCommand, limits: VehicleLimits) -> EgoCommand:
    """Into the vehicle's range; a non-finite speed becomes a stop, a non-finite curvature straight ahead."""
    speed = command.speed if math.isfinite(command.speed) else 0.0
    curvature = command.curvature if math.isfinite(command.curvature) else 0.0
    return EgoCommand(
        min(max(speed, 0.0), limits.max_speed), min(max(curvature, -limits.max_curvature), limits.max_curvature)
    )


class Simulator:
    """One scenario run: ``set_command`` whenever a planner speaks, ``step`` to advance, ``episode`` for scoring."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.world = build_world(config.scenario, config.seed, config.density)
        self.route = self.world.ego.path
        self.cruise_speed = float(self.world.ego.desired_speed)
        self.route_length = min(config.route_length or self._default_route_length(), self.route.length - ROUTE_TAIL)
        self.time_limit = config.time_limit or 2 * self.route_length / max(self.cruise_speed, 1.0) + 30.0
        self.command = EgoCommand(self.world.ego.speed, 0.0)  # hold the start until a planner speaks
        self.last_command_time = 0.0
        self.stale = False
        self.steer = 0.0
        self.segment = 0
        self.counters: Counter[str] = Counter()
        self.collided: set[int] = set()
        self.off_route = False
        self.next_track_time = 0.0
        self.lead_standing: dict[int, float] = {}
        state = self.world.state()
        self.episode = Episode(
            config.scenario,
            config.seed,
            self.world.description,
            [[float(x), float(y)] for x, y in self.route_points()[::4]],
            round(self.route_length, 2),
            round(self.cruise_speed, 3),
            round(self.time_limit, 2),
        )
        self._record(state, *self._localise(state))

    def _default_route_length(self) -> float:
        """ROUTE_LENGTH, or longer so that the route passes a braking lead's stop point (lead_brake)."""
        length = ROUTE_LENGTH
        for agent in self.world.agents:
            for _, s_stop in agent.stop_points:
                x, y, _ = agent.path.pose(s_stop)
                station, distance, _ = route_station(self.route, x, y)
                if distance < 1.0:
                    length = max(length, station + PAST_STOP_POINT)
        return length

    def _release_stopped_leads(self) -> None:
        """A lead that has stood at its stop point for LEAD_RESUME_AFTER s drives off (its stop point goes)."""
        for agent in self.world.agents:
            if agent.stop_points and self.world.time >= min(t for t, _ in agent.stop_points) and agent.speed < 0.2:
                self.lead_standing[agent.instance] = self.lead_standing.get(agent.instance, 0.0) + PHYSICS_DT
                if self.lead_standing[agent.instance] >= LEAD_RESUME_AFTER:
                    agent.stop_points.clear()

    @property
    def time(self) -> float:
        return self.world.time

    @property
    def done(self) -> bool:
        return bool(self.episode.end_reason)

    def route_points(self) -> np.ndarray:
        """The route up to its end plus a look-ahead tail, every 0.5 m (Nx2, map frame)."""
        return self.route.xy[self.route.s <= self.route_length + ROUTE_TAIL]

    def set_command(self, command: EgoCommand) -> None:
        clamped = clamp_command(command, self.config.limits)
        if clamped != command:
            self.counters["commands clamped"] += 1
        self.command, self.last_command_time, self.stale = clamped, self.world.time, False
        self.counters["commands"] += 1

    def step(self, dt: float) -> WorldState:
        """Advance ``dt`` seconds in physics substeps; recording stops once the run has ended."""
        state = self.world.state()
        substeps = max(1, round(dt / PHYSICS_DT))
        for _ in range(substeps):
            if self.done:
                break
            state = self._substep(dt / substeps)
        return state

    def _substep(self, dt: float) -> WorldState:
        limits = self.config.limits
        if not self.stale and self.world.time - self.last_command_time > self.config.command_timeout:
            self.stale = True
            self.counters["planner timeouts"] += 1
            x, y, _ = self.world.ego_pose()
            self.episode.events.append(
                Event(
                    round(self.world.time, 3),
                    "planner_timeout",
                    f"no command for {self.config.command_timeout:.1f} s: braking",
                    x,
                    y,
                )
            )
        target = 0.0 if self.stale else self.command.speed
        speed = self.world.ego.speed
        accel = min(max(limits.speed_gain * (target - speed), -World.EGO_MAX_BRAKE), World.EGO_MAX_ACCEL)
        if target <= 0.0:  # a stop command holds the brake, so the car stands still instead of creeping
            accel = min(accel, -limits.holding_brake)
        wanted_steer = math.atan(self.command.curvature * limits.wheelbase)
        max_change = limits.max_steer_rate * dt
        self.steer += min(max(wanted_steer - self.steer, -max_change), max_change)
        curvature = math.tan(self.steer) / limits.wheelbase
        front_before = self._front_x()
        self._release_stopped_leads()
        state = self.world.step(dt, EgoCommand(max(0.0, speed + accel * dt), curvature))
        progress, offset = self._localise(state)
        self._check_infractions(state, offset, front_before, dt)
        self._record(state, progress, offset)
        if progress >= self.route_length:
            self.episode.end_reason = "route completed"
        elif self.world.time >= self.time_limit - 1e-9:
            self.episode.end_reason = "time limit"
        return state

    def _front_x(self) -> float:
        x, _, yaw = self.world.ego_pose()
        return x + EGO_SIZE[0] / 2 * math.cos(yaw)

    def _localise(self, state: WorldState) -> tuple[float, float]:
        """Progress along the route (searching near the last segment, so loops and crossings stay unambiguous)."""
        progress, offset, self.segment = route_station(
            self.route, state.ego_x, state.ego_y, max(0, self.segment - 8), self.segment + 60
        )
        return progress, offset

    def _check_infractions(self, state: WorldState, offset: float, front_before: float, dt: float) -> None:
        ego_box = box_corners(state.ego_x, state.ego_y, state.ego_yaw, EGO_SIZE[0], EGO_SIZE[1])
        for obj in state.objects:
            if obj.instance in self.collided or math.hypot(obj.x - state.ego_x, obj.y - state.ego_y) > 15.0:
                continue
            if boxes_overlap(ego_box, box_corners(obj.x, obj.y, obj.yaw, obj.size[0], obj.size[1])):
                self.collided.add(obj.instance)
                self._event(state, infraction_kind(obj.kind), f"{obj.kind} {obj.instance} at {state.ego_speed:.1f} m/s")
        if offset > LANE_DEPARTURE_OFFSET:
            self.episode.distance_off_route += state.ego_speed * dt
            if not self.off_route:
                self._event(state, "lane_departure", f"{offset:.1f} m off the route centreline")
        self.off_route = offset > LANE_DEPARTURE_OFFSET
        crosswalk = state.road.crosswalk_x
        line = None if crosswalk is None else crosswalk - CROSSWALK_HALF_WIDTH
        if (
            line is not None
            and front_before < line <= self._front_x()
            and crosswalk_occupied(crosswalk, pedestrian_motion(state.objects))
        ):
            self._event(state, "ran_stop", "entered the crosswalk while a pedestrian was on it")

    def _event(self, state: WorldState, kind: str, detail: str) -> None:
        self.episode.events.append(Event(round(state.time, 3), kind, detail, state.ego_x, state.ego_y))

    def _record(self, state: WorldState, progress: float, offset: float) -> None:
        self.episode.samples.append(
            Sample(
                round(state.time, 3),
                state.ego_x,
                state.ego_y,
                state.ego_yaw,
                state.ego_speed,
                state.ego_accel,
                state.ego_yaw_rate,
                progress,
                offset,
                time_to_collision(state),
            )
        )
        if state.time + 1e-9 >= self.next_track_time:
            self.next_track_time += TRACK_PERIOD
            self.episode.tracks += [
                [round(state.time, 2), o.instance, o.kind, round(o.x, 2), round(o.y, 2)]
                for o in state.objects
                if math.hypot(o.x - state.ego_x, o.y - state.ego_y) < TRACK_RANGE
            ]

    def finish(self, reason: str = "") -> Episode:
        """The episode so far; ``reason`` names why it ended early (e.g. a wall-clock budget)."""
        if not self.episode.end_reason:
            self.episode.end_reason = reason or "stopped"
        self.episode.counters = dict(self.counters)
        return self.episode

    def ground_truth(self, horizon: float = 3.0, step: float = 0.5) -> dict:
        """What an oracle may know now: ego state and nearby objects (map frame) with where their scripted paths take
        them at their current speed every ``step`` s up to ``horizon``, the crosswalk and the cruise speed."""
        state = self.world.state()
        objects = []
        for agent, obj in zip(self.world.agents, state.objects, strict=True):
            if math.hypot(obj.x - state.ego_x, obj.y - state.ego_y) > GROUND_TRUTH_RANGE:
                continue
            future = []
            if agent.path is not None and obj.speed > 0:
                poses = [agent.path.pose(agent.s + obj.speed * t) for t in np.arange(step, horizon + 1e-9, step)]
                future = [[round(x, 3), round(y, 3), round(yaw, 4)] for x, y, yaw in poses]
            objects.append(
                {
                    "id": obj.instance,
                    "kind": obj.kind,
                    "x": round(obj.x, 3),
                    "y": round(obj.y, 3),
                    "yaw": round(obj.yaw, 4),
                    "length": obj.size[0],
                    "width": obj.size[1],
                    "speed": round(obj.speed, 3),
                    "future": future,
                }
            )
        return {
            "time": round(state.time, 3),
            "scenario": self.config.scenario,
            "seed": self.config.seed,
            "ego": {"x": state.ego_x, "y": state.ego_y, "yaw": state.ego_yaw, "speed": state.ego_speed},
            "cruise_speed": self.cruise_speed,
            "crosswalk_x": state.road.crosswalk_x,
            "objects": objects,
        }
