"""History that outlives the orchestrator's log retention: its files ingested into SQLite, and read back.

Ingestion is idempotent: every row has a natural key (metric type + time, run end time, log line
fingerprint), so reading the same file twice adds nothing and a changed file updates its rows.
A file is only re-read when its (mtime, size) differs from the last ingestion.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Iterable, Optional

from database import transaction
from dashboard.store.events import fingerprint, insert_events
from dashboard.store.run_ids import new_run_id
import data_loader as dl
from dashboard.local.log_reader import MAX_LINE_BYTES, LongLine
from dashboard.local.metrics_stream import MetricsStream
from dashboard.local.orchestrator_state import OrchestratorState
from dashboard.local.runs import RUN_STATUS, history_run, runs_from_files, session_window
from dashboard.timestamps import utc_now

log = logging.getLogger(__name__)

TRAINING_METRICS = "training_metrics"
DAILY_REPORT = "daily_report"
EVENT_SEVERITY = {"WARNING": "warning", "ERROR": "error", "CRITICAL": "critical"}
# Rows per transaction while streaming a large file: the write lock is never held for long.
BATCH_ROWS = 5000


def file_signature(path: Path) -> Optional[tuple[int, int]]:
    """(mtime_ns, size) of `path`, or None when it cannot be stat-ed: what tells a file changed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


METRICS_FILE = "logs/training_metrics.json"


def metrics_path(root: Path) -> Optional[Path]:
    """The real path of the orchestrator's metrics file (the key its rows are recorded under), or None
    when it leads out of the orchestrator folder."""
    return dl.resolve_inside(root, METRICS_FILE)


def _sources(s: OrchestratorState) -> dict[str, Path]:
    """The files to record, by their real paths; none that leads out of the orchestrator folder."""
    sources = {"metrics": metrics_path(s.root), "result": dl.resolve_inside(s.root, "holistic_training_result.json")}
    if s.log_files:
        sources["log"] = dl.resolve_inside(s.root, f"logs/{s.log_files[0].name}")
    sources = {name: path for name, path in sources.items() if path is not None}
    for day, path in s.report_files:  # the listing keeps only files inside the folder
        sources[f"report:{day.isoformat()}"] = path
    return sources


def changed_sources(conn: sqlite3.Connection, s: OrchestratorState) -> dict[str, tuple[Path, tuple[int, int]]]:
    """The orchestrator files whose (mtime, size) differs from their last ingestion."""
    known = {r["path"]: (r["mtime_ns"], r["size"]) for r in conn.execute("SELECT path, mtime_ns, size FROM ingested_files")}
    changed = {}
    for name, path in _sources(s).items():
        signature = file_signature(path)
        if signature is not None and known.get(str(path)) != signature:
            changed[name] = (path, signature)
    return changed


def ingest(conn: sqlite3.Connection, s: OrchestratorState) -> int:
    """Record every changed orchestrator file into the database; return how many rows were written.

    The metrics file and the log are streamed in batches, each its own short transaction, from where
    the last ingest stopped (ingest_cursors); a file that was not read to its end (being rewritten) is
    read again on the next round, and nothing already recorded is lost.
    """
    changed = changed_sources(conn, s)
    if not changed:
        return 0
    written, finished = 0, dict(changed)
    if "metrics" in changed:
        count, complete = _ingest_metrics(conn, s, changed["metrics"][0])
        written += count
        if not complete:
            del finished["metrics"]
    if "log" in changed:
        written += _ingest_log_events(conn, s, changed["log"][0])
    with transaction(conn):
        if any(k in changed for k in ("metrics", "result", "log")):
            written += _ingest_runs(conn, runs_from_files(s))
        reports = [path for name, (path, _sig) in changed.items() if name.startswith("report:")]
        if reports:
            written += _ingest_reports(conn, s, reports)
        now = utc_now()
        conn.executemany(
            "INSERT INTO ingested_files (path, mtime_ns, size, ingested_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (path) DO UPDATE SET mtime_ns = excluded.mtime_ns, size = excluded.size,"
            " ingested_at = excluded.ingested_at",
            [(str(path), sig[0], sig[1], now) for path, sig in finished.values()])
    return written


_UPSERT_METRIC = (
    "INSERT INTO metrics (timestamp, agent_id, metric_type, value, notes, source) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (source, metric_type, timestamp, COALESCE(agent_id, '')) DO UPDATE SET"
    " value = excluded.value, notes = excluded.notes"
    " WHERE metrics.value IS NOT excluded.value OR metrics.notes IS NOT excluded.notes")
_UPSERT_CURSOR = (
    "INSERT INTO ingest_cursors (path, series, position, last_key) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (path, series) DO UPDATE SET position = excluded.position, last_key = excluded.last_key")
# The run of a training_history entry gets the system quality point stamped with its end.
_RUN_QUALITY = (
    "UPDATE training_sessions SET overall_quality = (SELECT value FROM metrics WHERE source = ?"
    " AND metric_type = 'system_overall_quality' AND timestamp = training_sessions.run_key)"
    " WHERE origin = 'orchestrator' AND overall_quality IS NULL AND run_key IS NOT NULL")


def point_value(point: dict) -> Optional[float]:
    """The number a metrics point stands for: its score, else its time, else its success flag."""
    value = next((point[k] for k in ("score", "time_ms", "success") if point.get(k) is not None), None)
    return float(value) if value is not None else None


def _metric_row(metric_type: str, p: dict, stamp: str, value: Optional[float]) -> tuple:
    extra = {k: p[k] for k in ("improvement", "time_ms") if p.get(k) is not None}
    from_key = metric_type[: -len("_quality")] if metric_type.endswith("_quality") else None
    agent = p.get("agent") or (from_key if from_key and from_key.startswith("agent_") else None)
    return (stamp, agent, metric_type, value, json.dumps(extra) if extra else None,
            TRAINING_METRICS)


def _ingest_metrics(conn: sqlite3.Connection, s: OrchestratorState, path: Path) -> tuple[int, bool]:
    """Stream the points after each series' cursor into the database; (rows written, read to the end).

    A series whose point at its cursor is not the one recorded there was rewritten: it is recorded
    again from the start (the upserts keep that idempotent).
    """
    cursors = {r["series"]: (r["position"], r["last_key"]) for r in conn.execute(
        "SELECT series, position, last_key FROM ingest_cursors WHERE path = ?", (str(path),))}
    seen: dict[str, int] = {}
    rows, runs, positions, rewritten, written = [], [], {}, set(), 0
    stream = MetricsStream(path)
    for series, point in stream:
        index = seen[series] = seen.get(series, 0) + 1
        position, last_key = cursors.get(series, (0, None))
        stamp, value = (s.iso(point["timestamp"]), point_value(point)) if point is not None else (None, None)
        key = f"{stamp}={value}" if point is not None else None
        if index < position:
            continue
        if index == position:
            if key != last_key:
                rewritten.add(series)
            continue
        positions[series] = (index, key)
        if point is None:
            continue
        if series == "training_history":
            run = history_run(s, point)
            if run is not None:
                runs.append(run)
        else:
            rows.append(_metric_row(series, point, stamp, value))
        if len(rows) + len(runs) >= BATCH_ROWS:
            written += _write_batch(conn, path, rows, runs, positions)
            rows, runs, positions = [], [], {}
    written += _write_batch(conn, path, rows, runs, positions)
    if stream.problem:
        s.warnings.append(f"ingest: {stream.problem}; read again on the next change")
    if rewritten and stream.complete:
        with transaction(conn):
            conn.executemany("DELETE FROM ingest_cursors WHERE path = ? AND series = ?",
                             [(str(path), series) for series in rewritten])
        again, complete = _ingest_metrics(conn, s, path)  # no cursor there now: cannot recurse further
        return written + again, complete
    return written, stream.complete


def _write_batch(conn: sqlite3.Connection, path: Path, rows: list, runs: list, positions: dict) -> int:
    if not (rows or runs or positions):
        return 0
    with transaction(conn):
        before = conn.total_changes
        conn.executemany(_UPSERT_METRIC, rows)
        written = conn.total_changes - before + _ingest_runs(conn, runs)
        if runs:
            conn.execute(_RUN_QUALITY, (TRAINING_METRICS,))
        conn.executemany(_UPSERT_CURSOR, [(str(path), k, i, key) for k, (i, key) in positions.items()])
    return written


def _ingest_reports(conn: sqlite3.Connection, s: OrchestratorState, paths: list[Path]) -> int:
    rows = []
    for path in paths:
        report, warnings = dl.parse_daily_report(path)
        s.warnings.extend(warnings)
        if not report or not report.get("date"):
            continue
        stamp = s.iso(datetime.combine(report["date"], datetime.min.time()))
        rows.append((stamp, None, "system_overall_quality", report.get("system_quality"), None, DAILY_REPORT))
        for agent in report["agents"]:
            notes = {k: agent[k] for k in ("name", "processing_ms") if agent.get(k) is not None}
            rows.append((stamp, agent["id"], f"{agent['id']}_quality", agent.get("quality"),
                         json.dumps(notes) if notes else None, DAILY_REPORT))
    before = conn.total_changes
    conn.executemany(_UPSERT_METRIC, rows)
    return conn.total_changes - before


def _ingest_runs(conn: sqlite3.Connection, runs: Iterable[dict]) -> int:
    written = 0
    for run in runs:
        key = run["finished_at"]
        if key is None:
            continue
        values = dict(start_time=run["started_at"], end_time=run["finished_at"],
                      duration_seconds=run["duration_seconds"], overall_quality=run["overall_quality"],
                      overall_improvement=run["quality_change_percent"], agents_trained=run["agents_trained"],
                      agents_failed=run["agents_failed"], error_message=run["error"])
        status = RUN_STATUS.get(run["status"], run["status"])
        existing = conn.execute("SELECT id FROM training_sessions WHERE run_key = ?", (key,)).fetchone()
        if existing is None:
            existing = _matching_dashboard_session(conn, run)
        if existing is None:
            run_id = new_run_id(conn, values["start_time"], key)
            columns = ["run_key", "run_id", "status", "origin", *values]
            conn.execute(f"INSERT INTO training_sessions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                         (key, run_id, status, "orchestrator", *values.values()))
            written += 1
            continue
        # A dashboard session keeps its own start, status and error; the files add what the run achieved.
        conn.execute(
            "UPDATE training_sessions SET run_key = ?, duration_seconds = ?, overall_quality = ?,"
            " overall_improvement = ?, agents_trained = ?, agents_failed = ?,"
            " start_time = CASE WHEN origin = 'dashboard' THEN start_time ELSE ? END,"
            " end_time = COALESCE(end_time, ?),"
            " status = CASE WHEN origin = 'dashboard' THEN status ELSE ? END,"
            " error_message = CASE WHEN origin = 'dashboard' THEN COALESCE(error_message, ?) ELSE ? END"
            " WHERE id = ?",
            (key, values["duration_seconds"], values["overall_quality"], values["overall_improvement"],
             values["agents_trained"], values["agents_failed"], values["start_time"], values["end_time"], status,
             values["error_message"], values["error_message"], existing["id"]))
        written += 1
    return written


def _matching_dashboard_session(conn: sqlite3.Connection, run: dict) -> Optional[sqlite3.Row]:
    """The dashboard-started session this run from the files is, if any (it started or ended with it)."""
    return conn.execute(
        "SELECT id FROM training_sessions WHERE origin = 'dashboard' AND run_key IS NULL"
        " AND start_time BETWEEN ? AND ? ORDER BY start_time DESC LIMIT 1", session_window(run)).fetchone()


LOG_CURSOR = "bytes"  # the log's cursor: bytes read so far, with the file's inode as its key


def _ingest_log_events(conn: sqlite3.Connection, s: OrchestratorState, path: Path) -> int:
    """Record the log's WARNING and worse events from where the last ingest stopped (from the start
    again when the log was truncated or replaced); return how many were new."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    row = conn.execute("SELECT position, last_key FROM ingest_cursors WHERE path = ? AND series = ?",
                       (str(path), LOG_CURSOR)).fetchone()
    start = row["position"] if row and row["last_key"] == str(st.st_ino) and row["position"] <= st.st_size else 0
    rows, written, end = [], 0, start
    for event, end in dl.log_events_from(path, start, frozenset(EVENT_SEVERITY)):
        if isinstance(event, LongLine):
            message = (f"{path.name}: skipped a line of {event.size} bytes at byte {event.offset}"
                       f" (longer than {MAX_LINE_BYTES} bytes)")
            log.warning("log ingest: %s", message)
            rows.append(dict(event_type="log_line_skipped", message=message, severity="warning", source="ingester",
                             key=fingerprint("log-skip", str(path), st.st_ino, event.offset, event.size)))
        elif event is not None and (stamp := s.iso(event["timestamp"])) is not None:  # no time: not recorded
            rows.append(dict(timestamp=stamp, event_type="orchestrator_log", message=event["message"],
                             severity=EVENT_SEVERITY[event["level"]], source=event["source"],
                             key=fingerprint("log", stamp, event["level"], event["source"], event["message"])))
        if len(rows) >= BATCH_ROWS:
            written += _write_events(conn, path, rows, end, st.st_ino)
            rows = []
    return written + _write_events(conn, path, rows, end, st.st_ino)


def _write_events(conn: sqlite3.Connection, path: Path, rows: list, end: int, inode: int) -> int:
    with transaction(conn):
        written = insert_events(conn, rows)
        conn.execute(_UPSERT_CURSOR, (str(path), LOG_CURSOR, end, str(inode)))
    return written
