"""Closed-loop report: results.json, report.md (planners side by side per scenario and overall) and one top-down PNG
per scenario (route, each planner's ego trajectory, nearby objects' tracks, infractions)."""

from __future__ import annotations

import json
from pathlib import Path

from ..evaluation.report import MISSING, cell
from .scoring import PENALTY, Score, overall
from .simulator import Episode

PLANNER_COLOURS = {"oracle": "tab:green", "blind": "tab:red", "node": "tab:blue"}
INFRACTION_SHORT = {
    "collision_pedestrian": "ped",
    "collision_vehicle": "veh",
    "collision_static": "static",
    "lane_departure": "lane",
    "ran_stop": "stop",
}


def _infractions(score: Score) -> str:
    return ", ".join(f"{INFRACTION_SHORT[k]} {n}" for k, n in score.infractions.items() if n) or "none"


def _row(planner: str, s: Score) -> list[str]:
    ttc = MISSING if s.min_ttc is None else f"{s.min_ttc:.1f}"
    return [
        s.scenario,
        planner,
        f"{s.route_completion:.1f}",
        f"{s.penalty:.2f}",
        f"{s.driving_score:.1f}",
        _infractions(s),
        ttc,
        f"{s.max_jerk:.1f}",
        f"{s.max_lateral_accel:.1f}",
        f"{s.duration:.1f}",
        s.end_reason,
        str(s.counters.get("planner timeouts", 0)),
        str(s.counters.get("commands clamped", 0)),
        str(s.counters.get("answers missing", MISSING)),
    ]


def markdown(scores: dict[str, list[Score]], settings: dict) -> str:
    columns = (
        "scenario",
        "planner",
        "RC %",
        "penalty",
        "DS %",
        "infractions",
        "min TTC s",
        "max jerk m/s³",
        "max lat. acc m/s²",
        "sim s",
        "end",
        "planner timeouts",
        "clamped",
        "answers missing",
    )
    lines = [
        "# Closed-loop driving",
        "",
        f"Settings: {', '.join(f'{k}={v}' for k, v in settings.items() if k != 'out')}.",
        "",
        "CARLA leaderboard terms: RC = route completion (distance off the route's lane subtracted), penalty = "
        "product of " + ", ".join(f"{k} {v}" for k, v in PENALTY.items()) + " per infraction, DS = RC x penalty.",
        "",
        "## Overall (mean over scenarios)",
        "",
        "| planner | RC % | penalty | DS % | infractions | min TTC s | max jerk | max lat. acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for planner, runs in scores.items():
        total = overall(runs)
        infractions = ", ".join(f"{INFRACTION_SHORT[k]} {n}" for k, n in total["infractions"].items() if n) or "none"
        lines.append(
            f"| {planner} | {total['route_completion']:.1f} | {cell(total['penalty'], 2)} | "
            f"{total['driving_score']:.1f} | {infractions} | {cell(total['min_ttc'], 1)} | "
            f"{total['max_jerk']:.1f} | {total['max_lateral_accel']:.1f} |"
        )
    lines += ["", "## Per scenario", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    scenarios = list(dict.fromkeys(s.scenario for runs in scores.values() for s in runs))
    for scenario in scenarios:
        for planner, runs in scores.items():
            lines += ["| " + " | ".join(_row(planner, s)) + " |" for s in runs if s.scenario == scenario]
    lines += ["", "## Top-down plots", ""] + [f"![{s}]({s}.png)" for s in scenarios]
    return "\n".join(lines) + "\n"


def plot_scenario(scenario: str, episodes: dict[str, Episode], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5))
    first = next(iter(episodes.values()))
    route = list(zip(*first.route, strict=True))
    axes.plot(route[0], route[1], color="lightgrey", linewidth=6, label="route", zorder=1)
    tracks: dict[int, list[tuple[float, float]]] = {}
    for _, instance, kind, x, y in first.tracks:
        if kind != "pedestrian" or abs(y) < 12:
            tracks.setdefault(instance, []).append((x, y))
    for points in tracks.values():
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, color="grey", linewidth=0.7, alpha=0.6, zorder=2)
    for planner, episode in episodes.items():
        colour = PLANNER_COLOURS.get(planner, "black")
        axes.plot([s.x for s in episode.samples], [s.y for s in episode.samples], color=colour, label=planner, zorder=3)
        for event in episode.events:
            if event.kind != "planner_timeout":
                axes.scatter(event.x, event.y, marker="x", s=60, color=colour, zorder=4)
                axes.annotate(
                    INFRACTION_SHORT.get(event.kind, event.kind), (event.x, event.y), fontsize=7, color=colour
                )
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_xlabel("x (m, map)")
    axes.set_ylabel("y (m, map)")
    axes.set_title(f"{scenario} (seed {first.seed}): grey = objects within 40 m of the ego, x = infraction")
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_report(
    episodes: dict[str, list[Episode]], scores: dict[str, list[Score]], out: Path, settings: dict
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    results = {
        planner: {"overall": overall(runs), "scenarios": [s.to_dict() for s in runs]}
        for planner, runs in scores.items()
    }
    paths = [out / "report.md", out / "results.json"]
    paths[0].write_text(markdown(scores, settings), encoding="utf-8")
    paths[1].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    scenarios = list(dict.fromkeys(e.scenario for runs in episodes.values() for e in runs))
    for scenario in scenarios:
        by_planner = {p: e for p, runs in episodes.items() for e in runs if e.scenario == scenario}
        paths.append(out / f"{scenario}.png")
        plot_scenario(scenario, by_planner, paths[-1])
    return paths
