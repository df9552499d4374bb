"""LocalDataProvider: every read from the orchestrator's own files under ORCHESTRATOR_PATH, with history
recorded into SQLite."""
from __future__ import annotations

import os
import sqlite3
from datetime import date, datetime, timedelta
from typing import Callable, Iterator, Optional

from cron_descriptor import get_description
from flask import current_app

from dashboard.local import alert_rules
from dashboard import caching
import data_loader
import database
from dashboard.store import audit, events
from dashboard.ops import host_health as health
from dashboard.store import history_reads
from dashboard.store import history_store
from dashboard.local import log_views, run_record
from dashboard.local.notifications import Notifications
from dashboard.ops import sampler
from dashboard.store import alert_acks, storyboard_store
from dashboard.training import control as training_control
from dashboard.local import training_progress
from dashboard.local.agent_rows import agent_row, agent_rows
from dashboard.local.analytics import daily_last, natural_key, quality_trends, rank_desc, trend_direction
from dashboard.config import DEFAULT_MAX_AGENTS
from dashboard.contract import Answer, NewProject, Payload, StartTraining
from data_providers import DataProvider
from dashboard.web import auth
from dashboard.web.errors import ApiError
from dashboard.local.orchestrator_files import OrchestratorFiles
from dashboard.local.orchestrator_state import SYSTEM_KEY, OrchestratorState, orchestrator_zone, wall_clock
from dashboard.local.parse_cache import ParseCache
from dashboard.local.runs import runs_from_files, runs_history
from dashboard.store.versioned_memo import VersionedMemo
from dashboard.timestamps import to_iso


ERROR_LEVELS = ("ERROR", "CRITICAL", "WARNING")
# A metrics file too large to read per request is read from the database: its points of this long.
RECENT_METRICS_WINDOW = timedelta(days=8)
DB_WARNING = "database unavailable"
STILL_RECORDING = "its history is still being recorded"

_descriptions = caching.Cache(64)


def describe_schedule(expression: str) -> str:
    """The cron expression in words (cron_descriptor, which loads its translations on every call: kept)."""
    return _descriptions.get_or_compute(expression, lambda: get_description(expression))


class LocalDataProvider(Notifications, DataProvider):
    """Reads the history the ingester recorded in SQLite, overlaid with what the orchestrator's files
    under ORCHESTRATOR_PATH say right now; stores projects. Reads never write."""

    name = "local"
    reads_files = True

    def __init__(self, config: dict):
        self.root = config["ORCHESTRATOR_PATH"]
        self.tz = orchestrator_zone(config.get("ORCHESTRATOR_TIMEZONE", ""))
        self.tz_name = config.get("ORCHESTRATOR_TIMEZONE") or str(datetime.now().astimezone().tzname())
        self.threshold = float(config.get("QUALITY_THRESHOLD", 7.0))
        self.max_agents = int(config.get("MAX_AGENTS", DEFAULT_MAX_AGENTS))
        self.disk_path = config.get("HEALTH_DISK_PATH", "/")
        self.training = training_control.TrainingController(config)
        self.alert_limits = {k: v for k, v in config.items() if k.startswith("ALERT_")}
        self.db_path = config["DATABASE_PATH"]
        self.init_notifications(config)
        # What the files hold, parsed, with the store version and day it was read at (see state()).
        self._files: tuple = (None, None, [])
        # Each file's parse (one version per file), kept while the file is unchanged.
        self.parse_cache = ParseCache(config["PARSE_CACHE_MAX_BYTES"])
        # Database reads, kept while the database is unchanged: room for a few windows of each listed agent.
        self._reads = VersionedMemo(max_entries=256 + 4 * self.max_agents)
        # What "now" is for every calendar decision of a request (tests set a fixed instant).
        self.clock: Callable[[], datetime] = wall_clock

    def state(self) -> OrchestratorState:
        """This request's view of the orchestrator folder: the files as parsed for an earlier request
        while neither they nor the database changed since, at this request's instant."""
        now = self.clock()
        key = (self._store_version(), now.date())
        cached_key, files, warnings = self._files
        if key[0] is None or cached_key != key or not files.unchanged():
            metrics, warnings = self._recorded_metrics(now)
            files = OrchestratorFiles(self.root, metrics, self.parse_cache)
            self._files = (key, files, warnings)
        sessions = self._from_db(None, self.training.recent_sessions, key="sessions", version=key[0]) or []
        state = OrchestratorState(self.root, self.tz, now=now, sessions=sessions, files=files,
                                  max_agents=self.max_agents)
        state.store_version = key[0]  # one database version for the whole request
        state.warnings.extend(warnings)
        if not state.root_exists:
            state.warnings.append(f"orchestrator folder not found: {os.fspath(self.root)} (set ORCHESTRATOR_PATH)")
        return state

    # --- shared derivations ---

    def _daily(self, s: OrchestratorState, agent_id: Optional[str], first_day: date) -> dict[date, Optional[float]]:
        """{date: quality}: the database's history (every report and point ever ingested), overlaid by
        what the files say now (so a change shows before the ingester has recorded it)."""
        return self._derived(s, ("daily", agent_id, first_day), lambda: self._daily_now(s, agent_id, first_day))

    def _daily_now(self, s: OrchestratorState, agent_id: Optional[str], first_day: date) -> dict:
        metric = f"{agent_id}_quality" if agent_id else SYSTEM_KEY
        days = dict(self._from_db(s, lambda db: history_reads.daily_quality(db, metric, self.tz, first_day),
                                  key=("daily", metric, first_day)) or {})
        days.update(s.report_quality(agent_id))
        days.update(daily_last(s.quality_points(agent_id)))
        return {d: v for d, v in sorted(days.items()) if d >= first_day}

    @staticmethod
    def _derived(s: OrchestratorState, key: tuple, compute):
        """compute(), kept with the files view: that lives while neither the files, the database nor the
        date change (state()), so a value derived from those three alone is reused as it is. A value
        computed while the database failed is not kept."""
        before = len(s.warnings)
        value = s.memo(key, compute)
        if any(w.startswith(DB_WARNING) for w in s.warnings[before:]):
            s.files.forget(key)
        return value

    def _store_version(self):
        return database.generations(self.db_path).reads_version()

    def _from_db(self, s: Optional[OrchestratorState], read, key=None, version=None):
        """`read(db)`, kept under `key` (when given) until the database changes (from `version`, else
        the request's); None (and a warning, when `s` is given) when the database fails."""
        try:
            if key is None:
                return read(database.get_db())
            if version is None:
                version = s.store_version if s is not None else self._store_version()
            return self._reads.get(key, version, lambda: read(database.get_db()))
        except (sqlite3.Error, database.DatabaseUnavailable) as err:
            if s is not None:
                self._db_warning(s, err)
            return None

    def _recorded_metrics(self, now: datetime) -> tuple[Optional[dict], list[str]]:
        """For a metrics file too large to read per request: its recent points from the database (the
        ingester streams the whole file there), and a warning while that is still under way."""
        path = history_store.metrics_path(self.root)
        try:
            if path is None or path.stat().st_size <= data_loader.MAX_FILE_BYTES:
                return None, []
            db = database.get_db()
            metrics = history_reads.recent_metrics(db, path, self.tz, now - RECENT_METRICS_WINDOW)
            done = history_reads.recorded(db, path)
        except (OSError, sqlite3.Error, database.DatabaseUnavailable):
            return None, []  # the file is read (and refused) as usual, which says why
        return metrics, [] if done else [f"{path.name}: large; {STILL_RECORDING}, so some "
                                         "figures may be missing for now"]

    @staticmethod
    def _db_warning(s: OrchestratorState, err: Exception) -> None:
        s.warnings.append(f"{DB_WARNING} ({err}); showing only what the orchestrator's files still hold")

    def _history_agents(self, s: OrchestratorState, first_day: date) -> list[str]:
        """Agents the files name now, plus those the database holds quality for since `first_day`: the
        first MAX_AGENTS of them in natural id order."""
        since = s.iso(datetime.combine(first_day, datetime.min.time()))

        def known() -> list[str]:  # the files' view lives only while the database is unchanged too
            stored = self._from_db(s, lambda db: history_reads.quality_agents(db, since)) or set()
            return sorted(set(s.agent_ids) | {a for a in stored if data_loader.AGENT_ID_RE.match(a)}, key=natural_key)
        return s.capped(self._derived(s, ("history_agents", since), known))

    def _window(self, s: OrchestratorState, days: int) -> list[date]:
        """The `days` days ending today in the orchestrator's zone, oldest first: every day series' axis."""
        today = s.now.date()
        return [today - timedelta(days=i) for i in range(days - 1, -1, -1)]

    def _overall_quality(self, s: OrchestratorState) -> Optional[float]:
        points = s.quality_points(None)
        if points:
            return points[-1].get("score")
        return s.reports[-1].get("system_quality") if s.reports else None

    # --- dashboard ---

    def dashboard_overview(self) -> Payload:
        s = self.state()
        result = s.result
        week = self._window(s, 7)
        system = self._daily(s, None, week[0])
        recent = [system.get(d) for d in week]
        improvements = {row["id"]: row["improvement"] for row in agent_rows(s)
                        if row["improvement"] is not None}
        data = {
            "current_phase": self._phase(s),
            "overall_quality": self._overall_quality(s),
            "last_training": s.iso(result.get("timestamp")),
            "next_training": s.iso(s.next_run()),
            "agents_trained": training_progress.last_success(s).get("agents_trained"),
            "training_speed_ms": training_progress.training_speed_ms(s),
            "improvements": improvements,
            "quality_trend": trend_direction(recent),
        }
        return Payload(data, s.warnings)

    def quick_stats(self) -> Payload:
        s = self.state()
        rows = agent_rows(s, s.agent_ids)  # the counts are over every agent, listed or not
        listed = rows[:len(s.listed_agent_ids)]
        cutoff = s.iso(s.now_utc - timedelta(hours=24))  # real hours, also on a 23- or 25-hour day
        errors = sum(1 for e in self._merged_events(s, 1000, ("ERROR", "CRITICAL")) if e["timestamp"] >= cutoff)
        data = {
            "agents_online": sum(1 for r in rows if r["status"] in ("online", "training")),
            "agents_total": len(rows),
            "overall_quality": self._overall_quality(s),
            "last_training": s.iso(s.result.get("timestamp")),
            # a run the dashboard started is running before the log shows it (as /api/training/status says)
            "training_running": s.progress["running"] or self._running_session(s) is not None,
            "active_alerts": len(self._active_alerts(s, listed)),
            "errors_24h": errors,
        }
        return Payload(data, s.warnings)

    # --- agents ---

    def agents_status(self) -> Payload:
        s = self.state()
        return Payload(agent_rows(s), s.warnings)

    def agent_detail(self, agent_id: str) -> Payload:
        s = self.state()
        if agent_id not in s.agent_ids:
            raise ApiError(404, f"unknown agent_id: {agent_id}")
        row = agent_row(s, agent_id, s.progress)
        config = s.config.get("agents", {}).get(agent_id, {})
        module = s.modules.get(agent_id, {})
        history = [{"timestamp": s.iso(p["timestamp"]), "score": p.get("score"),
                    "improvement": p.get("improvement"), "time_ms": p.get("time_ms")}
                   for p in s.quality_points(agent_id)[-30:]]
        row.update(title=module.get("title"), module=module.get("file"),
                   config={k: config.get(k) for k in ("enabled", "priority", "description")},
                   quality_history=history)
        return Payload(row, s.warnings)

    def agents_health(self) -> Payload:
        s = self.state()
        rows = agent_rows(s, s.agent_ids)  # the counts are over every agent, the list of ids over the listed
        listed = set(s.listed_agent_ids)
        by_status = {k: sum(1 for r in rows if r["status"] == k) for k in ("online", "offline", "training", "error")}
        below = [r["id"] for r in rows if r["quality_score"] is not None and r["quality_score"] < self.threshold]
        scores = [r["quality_score"] for r in rows if r["quality_score"] is not None]
        if by_status["error"] or (rows and len(below) * 2 > len(rows)):
            overall = "critical"
        elif below or by_status["offline"] or not rows:
            overall = "warning"
        else:
            overall = "healthy"
        data = {"overall_status": overall, "total": len(rows), "by_status": by_status,
                "quality_threshold": self.threshold, "below_threshold": [i for i in below if i in listed],
                "average_quality": round(sum(scores) / len(scores), 2) if scores else None}
        return Payload(data, s.warnings)

    # --- training ---

    def training_status(self) -> Payload:
        s = self.state()
        session = self._running_session(s)
        progress, durations = s.progress, training_progress.phase_durations(s)
        data = {"is_running": progress["running"], "current_phase": "idle", "progress_percent": None,
                "current_agent": None, "estimated_time_remaining_sec": None, "started_at": None,
                "phase_durations": durations,
                "session_id": session["session_id"] if session and session["origin"] == "dashboard" else None}
        if progress["running"]:
            percent, remaining = training_progress.estimate(s, progress)
            data.update(current_phase=training_progress.current_phase(progress),
                        current_agent=progress.get("current_agent"), progress_percent=percent,
                        estimated_time_remaining_sec=remaining, started_at=s.iso(progress.get("started_at")))
        elif session is not None and self._logged_run_of(s, session):  # ended in the log; its end being recorded
            data.update(is_running=True, current_phase=training_progress.current_phase(progress),
                        started_at=session["started_at"])
        elif session is not None:  # started, but not (yet) in the orchestrator's log
            percent, remaining = training_progress.estimate(s, {})
            data.update(is_running=True, current_phase="starting", progress_percent=percent,
                        estimated_time_remaining_sec=remaining, started_at=session["started_at"])
        return Payload(data, s.warnings)

    @staticmethod
    def _logged_run_of(s: OrchestratorState, session: dict) -> bool:
        """Whether the newest run in the log is the one `session` started."""
        ran = s.session_at(s.progress.get("started_at")) if s.progress.get("found") else None
        return ran is not None and ran["session_id"] == session["session_id"]

    def _phase(self, s: OrchestratorState) -> str:
        """The running run's phase (`starting` until the log shows its first), else `idle`."""
        if s.progress["running"]:
            return training_progress.current_phase(s.progress)
        session = self._running_session(s)
        if session is None:
            return "idle"
        return training_progress.current_phase(s.progress) if self._logged_run_of(s, session) else "starting"

    # --- training control (the logic lives in dashboard/training/control.py) ---

    def start_training(self, options: StartTraining) -> Payload:
        conn = database.get_db()
        self.training.reconcile(conn)
        s = self.state()
        data = self.training.start(conn, force=options.force, log_running=s.progress["running"], by=auth.caller())
        return Payload(data, s.warnings)

    def stop_training(self) -> Payload:
        data = self.training.stop(database.get_db(), by=auth.caller())
        return Answer(data, [], 202 if isinstance(data, dict) and data.get("status") == "stopping" else 200)

    def training_session(self, session_id: int) -> Payload:
        session = self.training.session(database.get_db(), session_id)
        if session is None:
            raise ApiError(404, f"unknown session_id: {session_id}")
        return Payload(session, [])

    def _running_session(self, s: OrchestratorState) -> Optional[dict]:
        try:
            return self._reads.get("running", s.store_version,
                                   lambda: self.training.running_session(database.get_db()))
        except (sqlite3.Error, database.DatabaseUnavailable) as err:
            s.warnings.append(f"training sessions unavailable: {err}")
            return None

    def training_history(self, days: int) -> Payload:
        s = self.state()
        first_day = s.now.date() - timedelta(days=days - 1)
        since = s.iso(datetime.combine(first_day, datetime.min.time()))
        runs = list(self._from_db(s, lambda db: history_reads.runs_since(db, since, self.tz), key=("runs", since)) or [])
        from_files = s.memo("runs", lambda: runs_from_files(s))
        return Payload(runs_history(runs, from_files, first_day), s.warnings)

    def training_run(self, run_id: str) -> Payload:
        s = self.state()
        recorded = self._from_db(s, lambda db: history_reads.runs_since(db, "", self.tz), key=("runs", "")) or []
        runs = runs_history(recorded, s.memo("runs", lambda: runs_from_files(s)), date.min)
        index = next((i for i, run in enumerate(runs) if run["run_id"] == run_id), None)
        if index is None:
            raise ApiError(404, f"unknown run_id: {run_id}")
        run, previous = runs[index], (runs[index + 1:] or [None])[0]
        session = None
        if run["session_id"] is not None:
            session = self._from_db(s, lambda db: self.training.session(db, run["session_id"]))
        return Payload(run_record.record(s, run, previous, session), s.warnings)

    def training_schedule(self) -> Payload:
        s = self.state()
        expression = s.schedule
        description = describe_schedule(expression) if expression else None
        data = {"schedule": expression, "description": description, "enabled": s.config.get("enabled"),
                "next_run": s.iso(s.next_run()), "timezone": self.tz_name}
        return Payload(data, s.warnings)

    # --- metrics ---

    def metrics_quality(self, days: int) -> Payload:
        s = self.state()
        return Payload(self._derived(s, ("quality", days), lambda: self._quality_series(s, days)), s.warnings)

    def _quality_series(self, s: OrchestratorState, days: int) -> dict:
        """Every day of the window, null where a series has no score that day."""
        window = self._window(s, days)
        series = {"system": self._daily(s, None, window[0])}
        series.update({agent_id: self._daily(s, agent_id, window[0]) for agent_id in self._history_agents(s, window[0])})
        data = {"timestamps": [d.isoformat() for d in window]}
        data.update({key: [values.get(d) for d in window] for key, values in series.items()})
        return data

    def metric_history(self, metric_name: str, days: int) -> Payload:
        s = self.state()
        points = self._derived(s, ("points", metric_name, days), lambda: self._metric_points(s, metric_name, days))
        return Payload({"metric": metric_name, "days": days, "points": points}, s.warnings)

    def _metric_points(self, s: OrchestratorState, metric_name: str, days: int) -> list[dict]:
        cutoff = datetime.combine(s.now.date() - timedelta(days=days - 1), datetime.min.time())
        points = self._from_db(s, lambda db: history_reads.metric_points(db, metric_name, s.iso(cutoff)),
                               key=("points", metric_name, cutoff))
        if metric_name in s.metrics and metric_name != "training_history":
            from_file = [{"timestamp": s.iso(p["timestamp"]), "agent": p.get("agent"),
                          "value": history_store.point_value(p)} for p in s.metrics[metric_name] if p["timestamp"] >= cutoff]
            by_time = {p["timestamp"]: p for p in points or []}
            by_time.update((p["timestamp"], p) for p in from_file)  # the file is the newest word
            points = sorted(by_time.values(), key=lambda p: p["timestamp"])
        if points is None:
            if any(STILL_RECORDING in w for w in s.warnings):
                return []  # not known yet: the warning says why
            # What could not be read may be why: say so with the 404.
            raise ApiError(404, f"unknown metric_name: {metric_name}", extra={"warnings": list(dict.fromkeys(s.warnings))})
        return points

    def metrics_comparison(self) -> Payload:
        s = self.state()
        rows = agent_rows(s, s.agent_ids)  # ranked among every agent; the listed ones shown
        ranks = rank_desc({r["id"]: r["quality_score"] for r in rows})
        table = [{"id": r["id"], "name": r["name"], "quality_score": r["quality_score"],
                  "processing_time_ms": r["processing_time_ms"], "improvement": r["improvement"],
                  "rank": ranks[r["id"]]} for r in rows[:len(s.listed_agent_ids)]]
        table.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, natural_key(r["id"])))
        return Payload(table, s.warnings)

    def metrics_trends(self, days: int) -> Payload:
        s = self.state()
        return Payload(self._derived(s, ("trends", days), lambda: self._trends(s, days)), s.warnings)

    def _trends(self, s: OrchestratorState, days: int) -> dict:
        lead = self._window(s, days + 6)  # six earlier days so the first average covers a full week
        system = self._daily(s, None, lead[0])
        agents = {agent_id: self._daily(s, agent_id, lead[0]) for agent_id in self._history_agents(s, lead[0])}
        return quality_trends(lead, days, system, agents)

    # --- system ---

    def system_health(self) -> Payload:
        return Payload(health.current(self.disk_path), [])

    def health_history(self, hours: int) -> Payload:
        samples = sampler.history(database.get_db(), hours, now=self.clock())
        warnings = [] if samples else ["no health samples stored yet (HEALTH_SAMPLE_SECONDS=0 turns the sampler off)"]
        return Payload({"hours": hours, "sample_seconds": current_app.config["HEALTH_SAMPLE_SECONDS"] or None,
                        "samples": samples}, warnings)

    def recent_logs(self, limit: int, level: Optional[str]) -> Payload:
        s = self.state()
        levels = (level.upper(),) if level else None
        return Payload(self._merged_events(s, limit, levels), s.warnings)

    def system_errors(self, limit: int) -> Payload:
        s = self.state()
        return Payload(self._merged_events(s, limit, ERROR_LEVELS), s.warnings)

    def _merged_events(self, s: OrchestratorState, limit: int, levels: Optional[tuple]) -> list[dict]:
        """The log files' newest events and the database's events (training, API, alerts), newest first."""
        severities = [lvl.lower() for lvl in levels] if levels else None
        stored = self._from_db(s, lambda db: events.newest_events(db, limit * 2, severities),
                               key=("events", limit, tuple(severities or ()))) or []
        # Kept with the files' view, which lives only while the database is unchanged too.
        return s.memo(("merged_events", limit, levels),
                      lambda: log_views.merged(log_views.newest_file_events(s, limit, levels), stored, limit))

    def system_audit(self, limit: int) -> Payload:
        return Payload(audit.entries(database.get_db(), limit), [])

    def system_alerts(self) -> Payload:
        s = self.state()
        return Payload(self._active_alerts(s), s.warnings)

    def _active_alerts(self, s: OrchestratorState, rows: Optional[list[dict]] = None) -> list[dict]:
        """Current alerts, each `since` when it began (as the ingester recorded it, else by its rule)."""
        sample = self._from_db(s, lambda db: sampler.alert_sample(db, self.disk_path, s.now_utc))
        current = alert_rules.current_alerts(s, rows or agent_rows(s), self.threshold,
                                             sample or health.current(self.disk_path), self.alert_limits)
        current = events.with_starts(current, self._from_db(s, events.alert_starts, key="alert_starts") or {})
        return alert_acks.with_acks(current, self._from_db(s, alert_acks.acks, key="alert_acks") or {}, to_iso(s.now_utc))

    # --- logs ---

    def training_logs(self, limit: int, offset: int) -> Payload:
        s = self.state()
        events = log_views.newest_file_events(s, limit + offset + 1)
        data = {"events": events[offset:offset + limit], "limit": limit, "offset": offset,
                "has_more": len(events) > offset + limit}
        return Payload(data, s.warnings)

    def export_logs(self, days: int) -> Iterator[dict]:
        s = self.state()
        cutoff = datetime.combine(s.now.date() - timedelta(days=days - 1), datetime.min.time())
        for path in reversed(s.log_files):
            for event in data_loader.iter_log_events(path, since=cutoff):
                if event["timestamp"] >= cutoff:
                    yield log_views.as_api_event(s, event)

    # --- storyboard ---

    def storyboard_projects(self, limit: int, offset: int) -> Payload:
        projects, total = storyboard_store.list_projects(database.get_db(), limit, offset)
        warnings = []
        if offset + len(projects) < total:
            warnings.append(f"storyboard projects: {offset + 1}-{offset + len(projects)} of {total} shown; "
                            f"the next ones with offset={offset + len(projects)}")
        return Payload(projects, warnings)

    def storyboard_project(self, project_id: str) -> Payload:
        project = storyboard_store.get_project(database.get_db(), project_id)
        if project is None:
            raise ApiError(404, f"unknown project_id: {project_id}")
        return Payload(project, [])

    def create_storyboard_project(self, project: NewProject) -> Payload:
        db = database.get_db()
        project_id = storyboard_store.create_project(db, project.name, project.description,
                                             [scene.model_dump() for scene in project.scenes])
        return Payload(storyboard_store.get_project(db, project_id), [])

    def source_status(self) -> str:
        s = self.state()
        if not s.root_exists:
            return "error"
        _ = s.config, s.result, s.metrics, s.reports
        return "degraded" if s.warnings else "ok"
