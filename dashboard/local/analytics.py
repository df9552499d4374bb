"""Pure computations over metric history: daily series, moving averages, trends, ranks."""
from __future__ import annotations

import re
from datetime import date
from typing import Iterable, Optional

# A day-over-day slope (points on a 0-10 scale) below this is "stable".
TREND_SLOPE = 0.05


def natural_key(agent_id: str) -> tuple:
    """Sort key that puts agent_2 before agent_10 and agent_5 before agent_5a."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.findall(r"\d+|\D+", agent_id))


def daily_last(points: Iterable[dict], value_key: str = "score") -> dict[date, Optional[float]]:
    """The last value of each calendar day, from points with naive `timestamp`s."""
    days: dict[date, Optional[float]] = {}
    for point in sorted(points, key=lambda p: p["timestamp"]):
        days[point["timestamp"].date()] = point.get(value_key)
    return days


def moving_average(values: list[Optional[float]], window: int = 7) -> list[Optional[float]]:
    """Trailing mean of the non-null values in each `window`; null where the window has none."""
    result: list[Optional[float]] = []
    for i in range(len(values)):
        seen = [v for v in values[max(0, i - window + 1): i + 1] if v is not None]
        result.append(round(sum(seen) / len(seen), 3) if seen else None)
    return result


def trend_direction(values: list[Optional[float]]) -> Optional[str]:
    """improving / stable / declining from the least-squares slope of the non-null values; null if < 2."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / var
    if slope > TREND_SLOPE:
        return "improving"
    if slope < -TREND_SLOPE:
        return "declining"
    return "stable"


def rank_desc(values: dict[str, Optional[float]]) -> dict[str, Optional[int]]:
    """Competition ranks (1 = highest); equal values share a rank; null values get no rank."""
    first: dict[float, int] = {}
    for position, value in enumerate(sorted((v for v in values.values() if v is not None), reverse=True), 1):
        first.setdefault(value, position)
    return {k: first.get(v) if v is not None else None for k, v in values.items()}


def quality_trends(lead: list[date], days: int, system: dict, agents: dict[str, dict]) -> dict:
    """/api/metrics/trends from daily quality ({date: score}) of the system and each agent over `lead`:
    the last `days` days and six before them, so the first 7-day average covers a full week."""
    window = lead[-days:]
    values = [system.get(d) for d in window]
    seen = [v for v in values if v is not None]
    rows = {}
    for agent_id, daily in agents.items():
        agent_values = [daily.get(d) for d in lead]
        known = [v for v in agent_values if v is not None]
        rows[agent_id] = {"latest": known[-1] if known else None,
                          "moving_average_7d": moving_average(agent_values)[-1],
                          "direction": trend_direction(agent_values[6:])}
    return {"timestamps": [d.isoformat() for d in window], "system": values,
            "moving_average_7d": moving_average([system.get(d) for d in lead])[6:],
            "direction": trend_direction(values),
            "change": round(seen[-1] - seen[0], 3) if len(seen) >= 2 else None, "agents": rows}
