"""LocalDataProvider: every read from the orchestrator's own files under ORCHESTRATOR_PATH, with history
recorded into SQLite. Here: the request's view of the files (state()) and the derivations the reads share,
the dashboard, agents, system and storyboard reads; the training, metric and log reads, and notifications,
are mixins of their own modules (training_reads.py, metric_reads.py, log_reads.py, notifications.py)."""
from __future__ import annotations

import os
import sqlite3
from datetime import date, datetime, timedelta
from typing import Callable, Optional

from flask import current_app

import data_loader
import database
from dashboard.config import DEFAULT_MAX_AGENTS
from dashboard.contract import NewProject, Payload
from dashboard.local import alert_rules, training_progress
from dashboard.local.agent_rows import agent_row, agent_rows
from dashboard.local.analytics import daily_last, natural_key, trend_direction
from dashboard.local.log_reads import LogReads
from dashboard.local.metric_reads import STILL_RECORDING, MetricReads
from dashboard.local.notifications import Notifications
from dashboard.local.orchestrator_files import OrchestratorFiles
from dashboard.local.orchestrator_state import SYSTEM_KEY, OrchestratorState, orchestrator_zone, wall_clock
from dashboard.local.parse_cache import ParseCache
from dashboard.local.training_reads import TrainingReads
from dashboard.ops import host_health as health
from dashboard.ops import sampler
from dashboard.store import alert_acks, events, history_reads, history_store, storyboard_store
from dashboard.store.generations import generations
from dashboard.store.versioned_memo import VersionedMemo
from dashboard.timestamps import to_iso
from dashboard.training import control as training_control
from dashboard.web.errors import ApiError
from data_providers import DataProvider

# A metrics file too large to read per request is read from the database: its points of this long.
RECENT_METRICS_WINDOW = timedelta(days=8)
DB_WARNING = "database unavailable"


class LocalDataProvider(TrainingReads, MetricReads, LogReads, Notifications, DataProvider):
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
        return generations(self.db_path).reads_version()

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

    # --- system ---

    def system_health(self) -> Payload:
        return Payload(health.current(self.disk_path), [])

    def health_history(self, hours: int) -> Payload:
        samples = sampler.history(database.get_db(), hours, now=self.clock())
        warnings = [] if samples else ["no health samples stored yet (HEALTH_SAMPLE_SECONDS=0 turns the sampler off)"]
        return Payload({"hours": hours, "sample_seconds": current_app.config["HEALTH_SAMPLE_SECONDS"] or None,
                        "samples": samples}, warnings)

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
