"""A procedural road world: one straight urban road, an optional cross street, an ego car and agents.

Pure numpy (no rclpy, no OpenCV). The map frame is nuScenes' "global" frame: x along the main road,
y to its left, z up, right-hand traffic. Every vehicle (the scripted ego included) follows a
``Path`` with the intelligent driver model (IDM): it keeps a gap to whatever stands in its corridor
(vehicles, pedestrians, the ego) and to virtual stop points (a braking scenario is a stop point
that appears). Pedestrians walk their path, optionally waiting first.

``World.step(dt, ego_command)`` advances time. ``ego_command=None`` drives the scripted ego path; an
``EgoCommand`` (target speed and curvature) drives the ego freely, which is how a planner closes
the loop. Scenario presets (``SCENARIOS``) build worlds deterministically from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

LANE_WIDTH = 3.5
LANES_PER_DIRECTION = 2
ROAD_HALF_WIDTH = LANE_WIDTH * LANES_PER_DIRECTION  # kerb of the driving lanes
PARKING_EDGE = ROAD_HALF_WIDTH + 2.5  # parking strip between the kerb line and the sidewalk
SIDEWALK_EDGE = PARKING_EDGE + 3.0
SPEED_STOPPED = 0.2  # m/s: below this an agent counts as stopped
BRAKE_LIGHT_DECELERATION = 1.0  # m/s^2: brake lights come on above this deceleration
SIGNAL_LEAD_DISTANCE = 25.0  # m before a turn where the turn signal comes on


@dataclass(frozen=True)
class ObjectClass:
    nuscenes_category: str
    drivelm_category: str
    size: tuple[float, float, float]  # length, width, height in metres
    noun: str


OBJECT_CLASSES: dict[str, ObjectClass] = {
    "car": ObjectClass("vehicle.car", "Vehicle", (4.6, 1.9, 1.6), "car"),
    "truck": ObjectClass("vehicle.truck", "Vehicle", (8.0, 2.5, 3.2), "truck"),
    "bus": ObjectClass("vehicle.bus.rigid", "Vehicle", (11.0, 2.9, 3.3), "bus"),
    "pedestrian": ObjectClass("human.pedestrian.adult", "Pedestrian", (0.6, 0.7, 1.75), "pedestrian"),
    "cyclist": ObjectClass("vehicle.bicycle", "Bicycle", (1.8, 0.6, 1.7), "cyclist"),
    "cone": ObjectClass("movable_object.trafficcone", "Traffic element", (0.4, 0.4, 0.8), "traffic cone"),
    "barrier": ObjectClass("movable_object.barrier", "Traffic element", (0.5, 2.0, 1.0), "barrier"),
}
VEHICLE_KINDS = ("car", "truck", "bus")
COLOURS: dict[str, tuple[int, int, int]] = {  # name -> BGR
    "white": (235, 235, 235), "black": (40, 40, 40), "silver": (180, 180, 175), "red": (40, 40, 200),
    "blue": (170, 90, 30), "green": (60, 140, 50), "yellow": (40, 200, 230), "grey": (115, 115, 115),
}
EGO_SIZE = (4.8, 1.9, 1.6)


class Path:
    """A polyline with arc length, sampled densely enough to interpolate linearly."""

    def __init__(self, points: np.ndarray) -> None:
        points = np.asarray(points, dtype=float)
        steps = np.diff(points, axis=0)
        self.xy = points
        self.s = np.concatenate([[0.0], np.cumsum(np.hypot(steps[:, 0], steps[:, 1]))])
        self.yaw = np.unwrap(np.arctan2(steps[:, 1], steps[:, 0]))
        self.yaw = np.append(self.yaw, self.yaw[-1])
        self.length = float(self.s[-1])

    def pose(self, s: float) -> tuple[float, float, float]:
        x = float(np.interp(s, self.s, self.xy[:, 0]))
        y = float(np.interp(s, self.s, self.xy[:, 1]))
        return x, y, float(np.interp(s, self.s, self.yaw))

    def curvature(self, s: float, window: float = 1.0) -> float:
        return (self.pose(s + window)[2] - self.pose(s - window)[2]) / (2 * window)


class PathBuilder:
    """Straights, arcs and lane changes chained from a start pose, sampled every ``step`` metres."""

    def __init__(self, x: float, y: float, yaw: float, step: float = 0.5) -> None:
        self.points = [(x, y)]
        self.yaw = yaw
        self.step = step
        self.turns: list[tuple[float, float, int]] = []  # (s_start, s_end, +1 left / -1 right)
        self.length = 0.0

    def _append(self, offsets: list[tuple[float, float]]) -> None:
        for dx, dy in offsets:
            x, y = self.points[-1]
            self.points.append((x + dx, y + dy))
            self.length += math.hypot(dx, dy)

    def straight(self, length: float) -> PathBuilder:
        n = max(1, round(length / self.step))
        d = length / n
        self._append([(d * math.cos(self.yaw), d * math.sin(self.yaw))] * n)
        return self

    def arc(self, radius: float, angle: float) -> PathBuilder:
        """Turn by ``angle`` radians (positive: left) on a circle of ``radius``."""
        start = self.length
        n = max(2, round(radius * abs(angle) / self.step))
        sign = 1.0 if angle > 0 else -1.0
        x0, y0 = self.points[-1]
        cx, cy = x0 - sign * radius * math.sin(self.yaw), y0 + sign * radius * math.cos(self.yaw)
        for i in range(1, n + 1):
            heading = self.yaw + angle * i / n
            x, y = cx + sign * radius * math.sin(heading), cy - sign * radius * math.cos(heading)
            self._append([(x - self.points[-1][0], y - self.points[-1][1])])
        self.yaw += angle
        self.turns.append((start, self.length, int(sign)))
        return self

    def lane_change(self, offset: float, length: float) -> PathBuilder:
        """Shift left by ``offset`` metres (negative: right) over ``length`` metres on a cosine profile."""
        n = max(2, round(length / self.step))
        forward, left = (math.cos(self.yaw), math.sin(self.yaw)), (-math.sin(self.yaw), math.cos(self.yaw))
        x0, y0 = self.points[-1]
        for i in range(1, n + 1):
            u = i / n
            along, across = length * u, offset * (1 - math.cos(math.pi * u)) / 2
            x = x0 + along * forward[0] + across * left[0]
            y = y0 + along * forward[1] + across * left[1]
            self._append([(x - self.points[-1][0], y - self.points[-1][1])])
        return self

    def build(self) -> Path:
        return Path(np.array(self.points))


@dataclass
class Agent:
    """One object. Vehicles and cyclists follow ``path`` with IDM; pedestrians walk it; static ones stay."""

    instance: int
    kind: str
    colour: str
    path: Path | None
    s: float = 0.0
    speed: float = 0.0
    accel: float = 0.0
    desired_speed: float = 0.0
    start_time: float = 0.0  # waits (standing, or stopped with brake lights) until then
    stop_points: list[tuple[float, float]] = field(default_factory=list)  # (time it appears, path s)
    turns: list[tuple[float, float, int]] = field(default_factory=list)
    lane_change_span: tuple[float, float] | None = None
    parked: bool = False
    pose: tuple[float, float, float] = (0.0, 0.0, 0.0)  # used when path is None

    @property
    def size(self) -> tuple[float, float, float]:
        return OBJECT_CLASSES[self.kind].size

    def current_pose(self) -> tuple[float, float, float]:
        return self.path.pose(self.s) if self.path is not None else self.pose


@dataclass(frozen=True)
class EgoCommand:
    """External control of the ego: a target speed (m/s) reached within acceleration limits, and a curvature (1/m,
    positive turns left)."""

    speed: float
    curvature: float = 0.0


@dataclass(frozen=True)
class ObjectState:
    """What the renderer, the annotations and the QA need about one object at one instant."""

    instance: int
    kind: str
    colour: str
    x: float
    y: float
    yaw: float
    size: tuple[float, float, float]
    speed: float
    accel: float
    brake_lights: bool
    turn_signal: int  # +1 left, -1 right, 0 off
    walking: bool
    parked: bool
    changing_lane: bool

    @property
    def centre(self) -> tuple[float, float, float]:
        return self.x, self.y, self.size[2] / 2

    @property
    def moving_status(self) -> str | None:
        """The DriveLM moving status the current image shows, or None where the cues are ambiguous."""
        if self.kind in ("cone", "barrier"):
            return None
        if self.kind == "pedestrian":
            return "Going ahead." if self.walking else "Stopped."
        if self.speed < SPEED_STOPPED:
            return "Stopped." if self.turn_signal == 0 else None
        if self.changing_lane or (self.brake_lights and self.turn_signal == 0):
            return None  # slowing or cutting in: neither going ahead steadily nor stopped
        return {0: "Going ahead.", 1: "Turn left.", -1: "Turn right."}[self.turn_signal]


@dataclass(frozen=True)
class WorldState:
    time: float
    ego_x: float
    ego_y: float
    ego_yaw: float
    ego_speed: float
    ego_accel: float
    ego_yaw_rate: float
    objects: tuple[ObjectState, ...]
    road: RoadLayout


@dataclass(frozen=True)
class RoadLayout:
    """Static map: the main road along x, an optional cross street at ``intersection_x`` and a crosswalk."""

    x_min: float
    x_max: float
    intersection_x: float | None = None
    crosswalk_x: float | None = None


def idm_acceleration(speed: float, desired: float, gap: float, closing_speed: float,
                     max_accel: float = 1.5, comfortable_brake: float = 3.0, min_gap: float = 2.5,
                     headway: float = 1.2) -> float:
    """Intelligent driver model; ``gap`` is bumper to bumper (inf without a leader)."""
    free = 1.0 - (speed / max(desired, 0.1)) ** 4
    if not math.isfinite(gap):
        return max_accel * free
    wanted = min_gap + speed * headway + speed * closing_speed / (2 * math.sqrt(max_accel * comfortable_brake))
    return max_accel * (free - (max(wanted, 0.0) / max(gap, 0.1)) ** 2)


class World:
    """Agents and ego evolving in time; build one with ``build_world``."""

    MAX_SUBSTEP = 0.05
    EGO_MAX_ACCEL, EGO_MAX_BRAKE = 2.5, 6.0

    def __init__(self, road: RoadLayout, ego_path: Path, ego_speed: float, ego_desired_speed: float,
                 agents: list[Agent], scenario: str, description: str) -> None:
        self.road = road
        self.scenario = scenario
        self.description = description
        self.agents = agents
        self.time = 0.0
        self.ego = Agent(-1, "car", "white", ego_path, speed=ego_speed, desired_speed=ego_desired_speed)
        self.ego_free_pose: tuple[float, float, float] | None = None  # set once an EgoCommand takes over
        self.ego_yaw_rate = 0.0

    def ego_pose(self) -> tuple[float, float, float]:
        return self.ego_free_pose if self.ego_free_pose is not None else self.ego.current_pose()

    def step(self, dt: float, ego_command: EgoCommand | None = None) -> WorldState:
        """Advance by ``dt`` seconds; ``ego_command=None`` keeps the scripted ego path."""
        if dt <= 0:
            raise ValueError(f"dt: expected a positive time step in seconds, got {dt}")
        substeps = max(1, math.ceil(dt / self.MAX_SUBSTEP))
        for _ in range(substeps):
            self._substep(dt / substeps, ego_command)
        return self.state()

    def _substep(self, dt: float, ego_command: EgoCommand | None) -> None:
        movers = [a for a in self.agents if a.path is not None]
        self._poses = {id(a): a.current_pose() for a in self.agents}  # one pose lookup per agent per substep
        self._poses[id(self.ego)] = self.ego_pose()
        accels = {id(a): self._agent_accel(a) for a in movers}
        yaw_before = self.ego_pose()[2]
        if ego_command is None:
            self.ego.accel = self._agent_accel(self.ego, ego=True)
            self._advance(self.ego, dt)
        else:
            self._drive_ego(ego_command, dt)
        self.ego_yaw_rate = (self.ego_pose()[2] - yaw_before) / dt
        for agent in movers:
            agent.accel = accels[id(agent)]
            self._advance(agent, dt)
        self.time += dt

    @staticmethod
    def _advance(agent: Agent, dt: float) -> None:
        speed = max(0.0, agent.speed + agent.accel * dt)
        agent.s = min(agent.s + (agent.speed + speed) / 2 * dt, agent.path.length)
        agent.speed = speed if agent.s < agent.path.length else 0.0

    def _drive_ego(self, command: EgoCommand, dt: float) -> None:
        x, y, yaw = self.ego_pose()
        wanted = (command.speed - self.ego.speed) / dt
        self.ego.accel = min(max(wanted, -self.EGO_MAX_BRAKE), self.EGO_MAX_ACCEL)
        speed = max(0.0, self.ego.speed + self.ego.accel * dt)
        distance = (self.ego.speed + speed) / 2 * dt
        heading = yaw + command.curvature * distance / 2
        self.ego_free_pose = (x + distance * math.cos(heading), y + distance * math.sin(heading),
                              yaw + command.curvature * distance)
        self.ego.speed = speed

    def _agent_accel(self, agent: Agent, ego: bool = False) -> float:
        if agent.kind == "pedestrian":  # pedestrians walk at their pace once their time comes
            agent.speed = agent.desired_speed if self.time >= agent.start_time else 0.0
            return 0.0
        if self.time < agent.start_time:
            agent.speed = 0.0
            return 0.0
        gap, closing = self._leader_gap(agent, ego)
        accel = idm_acceleration(agent.speed, agent.desired_speed, gap, closing)
        return max(accel, -(self.EGO_MAX_BRAKE if ego else 8.0))

    def _leader_gap(self, agent: Agent, ego: bool) -> tuple[float, float]:
        """Bumper gap and closing speed to the nearest obstacle in the agent's corridor (inf if none)."""
        x, y, yaw = self._poses[id(agent)]
        length, width, _ = EGO_SIZE if ego else agent.size
        cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
        best_gap, best_closing = math.inf, 0.0
        for t_appear, s_stop in agent.stop_points:
            if self.time >= t_appear and s_stop > agent.s and s_stop - agent.s - length / 2 < best_gap:
                best_gap, best_closing = s_stop - agent.s - length / 2, agent.speed
        others = [a for a in self.agents if a is not agent]
        if not ego:
            others.append(self.ego)
        for other in others:
            ox, oy, oyaw = self._poses[id(other)]
            dx, dy = ox - x, oy - y
            if abs(dx) > 60 or abs(dy) > 60:
                continue
            ahead, across = dx * cos_yaw + dy * sin_yaw, -dx * sin_yaw + dy * cos_yaw
            olength, owidth, _ = EGO_SIZE if other is self.ego else other.size
            # path curvature bends the corridor: look at the lateral offset from the agent's own path ahead
            if (not ego or self.ego_free_pose is None) and 0 < ahead < 40:
                px, py, path_yaw = agent.path.pose(agent.s + ahead)
                across = -(ox - px) * math.sin(path_yaw) + (oy - py) * math.cos(path_yaw)
            if ahead <= 0 or ahead > 60 or abs(across) > (width + owidth) / 2 + 0.4:
                continue
            gap = ahead - (length + olength) / 2
            if gap < best_gap:
                other_speed_along = other.speed * math.cos(oyaw - yaw)
                best_gap, best_closing = gap, agent.speed - other_speed_along
        return best_gap, best_closing

    def state(self) -> WorldState:
        ex, ey, eyaw = self.ego_pose()
        objects = tuple(self._object_state(a) for a in self.agents)
        return WorldState(self.time, ex, ey, eyaw, self.ego.speed, self.ego.accel, self.ego_yaw_rate,
                          objects, self.road)

    def _object_state(self, agent: Agent) -> ObjectState:
        x, y, yaw = agent.current_pose()
        vehicle = agent.kind in VEHICLE_KINDS
        signal = 0
        for start, end, direction in agent.turns:
            if start - SIGNAL_LEAD_DISTANCE <= agent.s <= end:
                signal = direction
        changing = agent.lane_change_span is not None and agent.lane_change_span[0] <= agent.s <= \
            agent.lane_change_span[1]
        braking = agent.accel < -BRAKE_LIGHT_DECELERATION and agent.speed >= SPEED_STOPPED
        stopped_in_lane = agent.speed < SPEED_STOPPED and not agent.parked
        return ObjectState(
            instance=agent.instance, kind=agent.kind, colour=agent.colour, x=x, y=y, yaw=yaw, size=agent.size,
            speed=agent.speed, accel=agent.accel, brake_lights=vehicle and (braking or stopped_in_lane),
            turn_signal=signal if vehicle else 0, walking=agent.kind == "pedestrian" and agent.speed > 0,
            parked=agent.parked, changing_lane=changing,
        )


# ---------------------------------------------------------------- scenario presets

def lane_y(lane: int) -> float:
    """Lateral centre of a lane: lanes 0, 1 drive towards +x (0 is next to the centre line), -1, -2 towards -x."""
    return -(lane + 0.5) * LANE_WIDTH if lane >= 0 else (-lane - 0.5) * LANE_WIDTH


def _straight_lane_path(lane: int, x_start: float, length: float) -> PathBuilder:
    yaw = 0.0 if lane >= 0 else math.pi
    return PathBuilder(x_start, lane_y(lane), yaw).straight(length)


def _vehicle(rng: np.random.Generator, instance: int, builder: PathBuilder, speed: float,
             kind: str | None = None, **kwargs) -> Agent:
    kind = kind or str(rng.choice(VEHICLE_KINDS, p=[0.75, 0.15, 0.10]))
    colour = str(rng.choice(list(COLOURS)))
    return Agent(instance, kind, colour, builder.build(), speed=speed, desired_speed=speed, turns=builder.turns,
                 **kwargs)


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    description: str
    build: Callable[[np.random.Generator, ScenarioParts], None]


@dataclass
class ScenarioParts:
    """What a preset fills in before ``build_world`` adds background traffic."""

    ego_builder: PathBuilder
    ego_speed: float
    road: RoadLayout
    agents: list[Agent] = field(default_factory=list)
    ego_start_speed: float | None = None  # None: start at the desired speed
    reserved_lane_spans: list[tuple[int, float, float]] = field(default_factory=list)  # (lane, x_from, x_to)

    def next_instance(self) -> int:
        return len(self.agents)


def _turning_traffic(rng: np.random.Generator, parts: ScenarioParts, intersection: float) -> None:
    """A car ahead in the right lane turning right and an oncoming car turning left, both signalling."""
    radius = 6.0
    approach = intersection - LANE_WIDTH * 1.5 - radius - rng.uniform(15, 35)
    right = PathBuilder(approach, lane_y(1), 0.0).straight(intersection - LANE_WIDTH * 1.5 - radius - approach)
    parts.agents.append(_vehicle(rng, parts.next_instance(), right.arc(radius, -math.pi / 2).straight(300),
                                 rng.uniform(6, 9)))
    radius = LANE_WIDTH * 2.5
    turn_start = intersection - LANE_WIDTH / 2 + radius
    start = turn_start + rng.uniform(20, 45)
    left = PathBuilder(start, lane_y(-1), math.pi).straight(start - turn_start)
    parts.agents.append(_vehicle(rng, parts.next_instance(), left.arc(radius, math.pi / 2).straight(300),
                                 rng.uniform(6, 9)))
    parts.reserved_lane_spans += [(1, approach - 15, intersection + 15), (-1, intersection - 15, start + 15)]


def _cruise(rng: np.random.Generator, parts: ScenarioParts) -> None:
    intersection = rng.uniform(60, 110)
    parts.road = replace(parts.road, intersection_x=intersection)
    _turning_traffic(rng, parts, intersection)
    parts.ego_builder.straight(600)


def _queue(rng: np.random.Generator, parts: ScenarioParts) -> None:
    """The ego waits behind stopped cars (brake lights on) that pull away one after another."""
    parts.ego_builder.straight(600)
    parts.ego_start_speed = 0.0
    x, start = rng.uniform(10.5, 12.0), rng.uniform(2.0, 6.0)  # just clear of the ego at x = 0
    for _ in range(int(rng.integers(1, 4))):
        car = _vehicle(rng, parts.next_instance(), _straight_lane_path(0, x, 600), 0.0, kind="car")
        car.desired_speed, car.start_time = rng.uniform(8, 12), start
        parts.agents.append(car)
        x, start = x + rng.uniform(7.0, 9.0), start - rng.uniform(0.5, 1.5)
    parts.reserved_lane_spans.append((0, -30, 300))


def _lead_brake(rng: np.random.Generator, parts: ScenarioParts) -> None:
    parts.ego_builder.straight(600)
    gap = rng.uniform(15, 25)
    lead = _vehicle(rng, parts.next_instance(), _straight_lane_path(0, gap, 600), parts.ego_speed, kind="car")
    brake_time = rng.uniform(3.0, 8.0)
    lead.stop_points.append((brake_time, parts.ego_speed * brake_time + rng.uniform(20, 35)))
    parts.agents.append(lead)
    parts.reserved_lane_spans.append((0, -30, 300))


def _pedestrian_crossing(rng: np.random.Generator, parts: ScenarioParts) -> None:
    crosswalk = rng.uniform(45, 70)
    parts.road = replace(parts.road, crosswalk_x=crosswalk)
    parts.ego_builder.straight(600)
    for i in range(int(rng.integers(1, 4))):
        side = 1 if rng.random() < 0.5 else -1
        y0 = side * (SIDEWALK_EDGE - 1.0)
        x0 = crosswalk + rng.uniform(-1.5, 1.5)
        path = PathBuilder(x0, y0, -side * math.pi / 2).straight(2 * SIDEWALK_EDGE - 2.0).straight(3.0).build()
        walker = Agent(parts.next_instance(), "pedestrian", str(rng.choice(list(COLOURS))), path,
                       desired_speed=rng.uniform(1.1, 1.6), start_time=rng.uniform(0.5, 6.0) + 1.5 * i)
        parts.agents.append(walker)


def _cut_in(rng: np.random.Generator, parts: ScenarioParts) -> None:
    parts.ego_builder.straight(600)
    x0 = rng.uniform(-8, 5)
    change_at = rng.uniform(20, 45)
    builder = _straight_lane_path(1, x0, change_at).lane_change(LANE_WIDTH, 25).straight(500)
    start = change_at
    cutter = _vehicle(rng, parts.next_instance(), builder, parts.ego_speed + rng.uniform(1.5, 3.5), kind="car",
                      lane_change_span=(start, start + 25))
    parts.agents.append(cutter)
    parts.reserved_lane_spans.append((1, -30, 200))


def _stopped_obstacle(rng: np.random.Generator, parts: ScenarioParts) -> None:
    obstacle_x = rng.uniform(55, 80)
    parts.agents.append(Agent(parts.next_instance(), "car", str(rng.choice(list(COLOURS))), None,
                              pose=(obstacle_x, lane_y(0), 0.0)))
    for k in range(3):  # cones behind the broken-down car
        cone_pose = (obstacle_x - 6 - 2.5 * k, lane_y(0) + 0.6 * (k - 1), 0.0)
        parts.agents.append(Agent(parts.next_instance(), "cone", "orange", None, pose=cone_pose))
    # ego goes around it through the right lane, signalling like a lane change
    parts.ego_builder.straight(obstacle_x - 45).lane_change(-LANE_WIDTH, 25).straight(40).lane_change(
        LANE_WIDTH, 25).straight(500)
    parts.reserved_lane_spans += [(0, -30, obstacle_x + 60), (1, obstacle_x - 80, obstacle_x + 60)]


def _turn(direction: int) -> Callable[[np.random.Generator, ScenarioParts], None]:
    def build(rng: np.random.Generator, parts: ScenarioParts) -> None:
        intersection = rng.uniform(40, 90)
        parts.road = replace(parts.road, intersection_x=intersection)
        radius = LANE_WIDTH * 1.5 if direction < 0 else LANE_WIDTH * 2.5
        approach = intersection + (-LANE_WIDTH / 2 if direction < 0 else LANE_WIDTH / 2) - radius
        parts.ego_builder.straight(approach).arc(radius, direction * math.pi / 2).straight(400)
        _turning_traffic(rng, parts, intersection)
        parts.reserved_lane_spans.append((0, -30, intersection + 10))
    return build


SCENARIOS: dict[str, ScenarioSpec] = {spec.name: spec for spec in (
    ScenarioSpec("cruise", "The ego vehicle drives along a four-lane urban road with traffic.", _cruise),
    ScenarioSpec("queue", "The ego vehicle waits behind stopped cars that then drive off.", _queue),
    ScenarioSpec("lead_brake", "The car ahead of the ego vehicle brakes to a stop and the ego vehicle stops behind it.",
                 _lead_brake),
    ScenarioSpec("pedestrian_crossing", "Pedestrians cross the road at a crosswalk ahead of the ego vehicle.",
                 _pedestrian_crossing),
    ScenarioSpec("cut_in", "A car from the right lane cuts in ahead of the ego vehicle.", _cut_in),
    ScenarioSpec("stopped_obstacle", "A broken-down car with cones blocks the ego lane; the ego vehicle passes it "
                 "through the right lane.", _stopped_obstacle),
    ScenarioSpec("turn_left", "The ego vehicle turns left at an intersection.", _turn(1)),
    ScenarioSpec("turn_right", "The ego vehicle turns right at an intersection.", _turn(-1)),
)}


def _lane_free(parts: ScenarioParts, lane: int, x: float) -> bool:
    return not any(lane == rl and lo <= x <= hi for rl, lo, hi in parts.reserved_lane_spans)


def _add_background(rng: np.random.Generator, parts: ScenarioParts, density: float) -> None:
    """Traffic in the other lanes, parked cars, sidewalk pedestrians, a cyclist, roadside barriers."""
    for lane in (1, -1, -2, 0):
        x = rng.uniform(-60, -20)
        while x < 260:
            if _lane_free(parts, lane, x) and rng.random() < density:
                speed = rng.uniform(7, 13)
                parts.agents.append(_vehicle(rng, parts.next_instance(), _straight_lane_path(lane, x, 700.0), speed))
            x += rng.uniform(18, 45)
    for side in (1, -1):  # parked cars in the parking strips
        x = rng.uniform(-40, 0)
        while x < 200:
            if rng.random() < density:
                pose = (x, side * (ROAD_HALF_WIDTH + 1.25), 0.0 if side < 0 else math.pi)
                car = Agent(parts.next_instance(), "car", str(rng.choice(list(COLOURS))), None, pose=pose, parked=True)
                parts.agents.append(car)
            x += rng.uniform(7, 20)
    for _ in range(int(rng.integers(2, 6))):  # sidewalk walkers and standers
        side = 1 if rng.random() < 0.5 else -1
        x0 = rng.uniform(-20, 120)
        y0 = side * (PARKING_EDGE + rng.uniform(0.7, 2.3))
        walking = rng.random() < 0.6
        path = PathBuilder(x0, y0, 0.0 if rng.random() < 0.5 else math.pi).straight(80).build()
        parts.agents.append(Agent(parts.next_instance(), "pedestrian", str(rng.choice(list(COLOURS))), path,
                                  desired_speed=rng.uniform(1.0, 1.5) if walking else 0.0))
    if rng.random() < 0.5:  # a cyclist along the kerb
        x0 = rng.uniform(10, 60)
        path = PathBuilder(x0, -(ROAD_HALF_WIDTH - 0.8), 0.0).straight(300).build()
        parts.agents.append(Agent(parts.next_instance(), "cyclist", str(rng.choice(list(COLOURS))), path,
                                  speed=4.5, desired_speed=rng.uniform(3.5, 5.5)))
    for _ in range(int(rng.integers(0, 3))):  # barriers on the sidewalk edge
        side = 1 if rng.random() < 0.5 else -1
        pose = (rng.uniform(10, 120), side * (PARKING_EDGE + 0.5), 0.0)
        parts.agents.append(Agent(parts.next_instance(), "barrier", "white", None, pose=pose))


def build_world(scenario: str, seed: int, density: float = 0.5) -> World:
    """A deterministic world for a scenario preset; the same (scenario, seed, density) gives the same world."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario: expected one of {sorted(SCENARIOS)}, got '{scenario}'")
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density: expected a traffic density between 0 and 1, got {density}")
    rng = np.random.default_rng(seed)
    ego_speed = float(rng.uniform(3.0, 15.0))
    parts = ScenarioParts(PathBuilder(0.0, lane_y(0), 0.0), ego_speed, RoadLayout(-200.0, 800.0))
    SCENARIOS[scenario].build(rng, parts)
    _add_background(rng, parts, density)
    parts.agents = [a for a in parts.agents if not _overlaps_ego_start(a) and not _parked_in_cross_street(a, parts.road)]
    for i, agent in enumerate(parts.agents):
        agent.instance = i
    ego_path = parts.ego_builder.build()
    start_speed = ego_speed if parts.ego_start_speed is None else parts.ego_start_speed
    return World(parts.road, ego_path, start_speed, ego_speed, parts.agents, scenario, SCENARIOS[scenario].description)


def _parked_in_cross_street(agent: Agent, road: RoadLayout) -> bool:
    """A parked car whose box reaches into the cross street would block turning traffic (the ego's too)."""
    return agent.parked and road.intersection_x is not None and abs(agent.pose[0] - road.intersection_x) < \
        PARKING_EDGE + agent.size[0] / 2


def _overlaps_ego_start(agent: Agent) -> bool:
    x, y, _ = agent.current_pose()
    return abs(y - lane_y(0)) < 2.5 and -12 < x < 10
