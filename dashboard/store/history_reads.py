"""The history the ingester recorded, read back: daily quality, points, runs, how far a file is recorded."""
from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Optional

from dashboard.store.history_store import DAILY_REPORT, TRAINING_METRICS, file_signature
from dashboard.store.run_ids import base_run_id
from dashboard.timestamps import parse_iso, to_iso

def recorded(conn: sqlite3.Connection, path: Path) -> bool:
    """Whether the file at `path`, as it is now, has been recorded completely."""
    row = conn.execute("SELECT mtime_ns, size FROM ingested_files WHERE path = ?", (str(path),)).fetchone()
    return row is not None and (row["mtime_ns"], row["size"]) == file_signature(path)


def cursor_positions(conn: sqlite3.Connection, path: Path) -> tuple:
    """How far the ingester has recorded each series of the file at `path`: changes whenever it records."""
    return tuple(conn.execute("SELECT series, position FROM ingest_cursors WHERE path = ? ORDER BY series",
                              (str(path),)).fetchall())


def recent_metrics(conn: sqlite3.Connection, path: Path, tz: tzinfo, since: datetime, per_series: int = 30) -> dict:
    """The metrics file's series as recorded, in parse_training_metrics' shape (naive local times,
    oldest first): each series' points since `since` (aware) and at least its newest `per_series`."""
    cutoff = to_iso(since)
    series = [r[0] for r in conn.execute("SELECT series FROM ingest_cursors WHERE path = ?", (str(path),))]
    metrics = {}
    for name in series:
        if name == "training_history":
            continue  # its runs are in training_sessions
        query = ("SELECT timestamp, agent_id, value, notes FROM metrics WHERE source = ? AND metric_type = ?"
                 " AND {} ORDER BY timestamp DESC")
        rows = {r["timestamp"]: r for r in conn.execute(query.format("timestamp >= ?"), (TRAINING_METRICS, name, cutoff))}
        rows.update((r["timestamp"], r) for r in conn.execute(query.format("1") + " LIMIT ?",
                                                              (TRAINING_METRICS, name, per_series)))
        metrics[name] = [_as_point(name, rows[t], tz) for t in sorted(rows)]
    return metrics


def _as_point(series: str, row: sqlite3.Row, tz: tzinfo) -> dict:
    point = {"timestamp": parse_iso(row["timestamp"]).astimezone(tz)
             .replace(tzinfo=None), **json.loads(row["notes"] or "{}")}
    if row["agent_id"]:
        point["agent"] = row["agent_id"]
    if series == "success_rate":
        point["success"] = None if row["value"] is None else bool(row["value"])
    elif series.endswith("_quality"):
        point["score"] = row["value"]
    else:
        point.setdefault("time_ms", None if row["value"] is None else int(row["value"]))
    return point

def _local_date(iso: str, tz: tzinfo) -> date:
    return parse_iso(iso).astimezone(tz).date()


def daily_quality(conn: sqlite3.Connection, metric_type: str, tz: tzinfo, first_day: date) -> dict[date, Optional[float]]:
    """{local date: quality} from the reports, overlaid by the day's last metrics point."""
    since = datetime.combine(first_day - timedelta(days=1), datetime.min.time(), timezone.utc)
    rows = conn.execute(
        "SELECT timestamp, value, source FROM metrics WHERE metric_type = ? AND timestamp >= ?"
        " AND source IN (?, ?) ORDER BY source = ?, timestamp",
        (metric_type, to_iso(since), DAILY_REPORT, TRAINING_METRICS, TRAINING_METRICS))
    days: dict[date, Optional[float]] = {}
    for row in rows:
        days[_local_date(row["timestamp"], tz)] = row["value"]
    return {d: v for d, v in days.items() if d >= first_day}


# Each distinct metric type by one index seek (a loose index scan), not by reading every row.
_METRIC_TYPES = (
    "WITH RECURSIVE t(m) AS (SELECT MIN(metric_type) FROM metrics UNION ALL"
    " SELECT (SELECT MIN(metric_type) FROM metrics WHERE metric_type > t.m) FROM t WHERE t.m IS NOT NULL)"
    " SELECT m FROM t WHERE m IS NOT NULL")


def quality_agents(conn: sqlite3.Connection, since_iso: str) -> set[str]:
    """Agents with quality rows since `since_iso`."""
    agents = set()
    for (metric_type,) in conn.execute(_METRIC_TYPES).fetchall():
        agent = metric_type[: -len("_quality")]
        if metric_type.endswith("_quality") and agent.startswith("agent_") and conn.execute(
                "SELECT 1 FROM metrics WHERE metric_type = ? AND timestamp >= ? AND agent_id = ? LIMIT 1",
                (metric_type, since_iso, agent)).fetchone():
            agents.add(agent)
    return agents


def metric_points(conn: sqlite3.Connection, metric_type: str, since_iso: str) -> Optional[list[dict]]:
    """A metric's points since `since_iso`, oldest first, from the metrics file or else from the daily
    reports (a metrics file too large to read still leaves the reports' scores); None when never recorded."""
    for source in (TRAINING_METRICS, DAILY_REPORT):
        if conn.execute("SELECT 1 FROM metrics WHERE metric_type = ? AND source = ? LIMIT 1",
                        (metric_type, source)).fetchone() is not None:
            break
    else:
        return None
    rows = conn.execute("SELECT timestamp, agent_id, value FROM metrics WHERE metric_type = ? AND source = ?"
                        " AND timestamp >= ? ORDER BY timestamp", (metric_type, source, since_iso))
    return [{"timestamp": r["timestamp"], "agent": r["agent_id"], "value": r["value"]} for r in rows]


def runs_since(conn: sqlite3.Connection, since_iso: str, tz: tzinfo) -> list[dict]:
    """Training runs (from the files and started here) that started or ended since `since_iso`, newest first."""
    rows = conn.execute(
        "SELECT id, run_id, session_number, origin, start_time, end_time, duration_seconds, overall_quality, overall_improvement,"
        " agents_trained, agents_failed, status, error_message, started_by, stopped_by FROM training_sessions"
        " WHERE COALESCE(end_time, start_time) >= ? ORDER BY COALESCE(end_time, start_time) DESC, id DESC",
        (since_iso,))
    runs = []
    for r in rows:
        stamp = r["start_time"] or r["end_time"]
        duration = r["duration_seconds"]
        if duration is None and r["start_time"] and r["end_time"]:
            end = parse_iso(r["end_time"])
            duration = round((end - parse_iso(r["start_time"])).total_seconds(), 2)
        runs.append({"date": _local_date(stamp, tz).isoformat(), "started_at": r["start_time"],
                     "finished_at": r["end_time"], "duration_seconds": duration,
                     "overall_quality": r["overall_quality"], "quality_change_percent": r["overall_improvement"],
                     "agents_trained": r["agents_trained"], "agents_failed": r["agents_failed"],
                     "status": r["status"], "error": r["error_message"],
                     "run_id": r["run_id"] or base_run_id(r["start_time"], r["end_time"]),
                     "session_id": r["session_number"], "origin": r["origin"],
                     "started_by": r["started_by"], "stopped_by": r["stopped_by"]})
    return runs
