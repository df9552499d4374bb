"""What the orchestrator's files say right now: one lazily-read view per request.

Each source is parsed on first use (parsers cache unchanged files), and every
problem met is added to `warnings`, so a response can say what it could not read.
"""
from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone, tzinfo
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from typing import Iterable, Optional

from croniter import CroniterBadDateError, croniter

import data_loader as dl
from analytics import natural_key

QUALITY_KEY = re.compile(r"^(agent_[A-Za-z0-9]+)_quality$")
SYSTEM_KEY = "system_overall_quality"
LOG_WINDOW_EVENTS = 5000
DEFAULT_RUN_TIMEOUT = 1800.0
# Reports read per request: twice the orchestrator's 30-day retention. History reaches further back
# through the database, which records every report once (history_store).
REPORT_WINDOW = 60
# A dashboard session starts a moment before the log shows its run (both clocks are this host's).
SESSION_SKEW = timedelta(seconds=2)


def _parse_utc(text: Optional[str]) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def local_instant(naive: datetime, tz: tzinfo) -> datetime:
    """The real (UTC) instant of a naive wall time in `tz`, as cron reads it: the first of the two
    when the clocks go back; the end of the gap when the clocks skip it."""
    first = naive.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    if first.astimezone(tz).replace(tzinfo=None) == naive.replace(fold=0):
        return first
    # Skipped: fold=1 reads it with the offset after the switch (an instant before the switch), fold=0
    # with the one before (an instant after it); bisect for the switch, to the second.
    lo, hi = int(naive.replace(tzinfo=tz, fold=1).timestamp()), int(first.timestamp())
    after = first.astimezone(tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if datetime.fromtimestamp(mid, tz).utcoffset() == after else (mid, hi)
    return datetime.fromtimestamp(hi, timezone.utc)


def orchestrator_zone(name: str):
    """The orchestrator's time zone: a tz database name, or this server's local zone when empty."""
    if not name:
        return server_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"ORCHESTRATOR_TIMEZONE {name!r} is not a known time zone") from None


def server_zone():
    """This server's zone with its DST rules (TZ, else /etc/localtime), else its current UTC offset."""
    key = os.environ.get("TZ", "").removeprefix(":")
    try:
        if key:
            return ZoneInfo(key)
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return datetime.now().astimezone().tzinfo  # a fixed offset: right only until the next DST switch


def wall_clock() -> datetime:
    """Now, as an aware UTC datetime (the provider's default clock)."""
    return datetime.now(timezone.utc)


class OrchestratorState:
    """A read-only view of one orchestrator folder, in the orchestrator's time zone."""

    def __init__(self, root: Path, tz: tzinfo, now: Optional[datetime] = None, sessions: Iterable[dict] = (),
                 recorded_metrics: Optional[dict] = None):
        self.root = Path(root)
        self.tz = tz
        # The metrics file's recent points as the database holds them, for a file too large to read here.
        self.recorded_metrics = recorded_metrics
        # The newest dashboard training sessions (TrainingController.recent_sessions), newest first: a run
        # the log shows unfinished has ended when the session that started it has (killed, no final line).
        self.sessions = list(sessions)
        self.now_utc = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        self.now = self.now_utc.astimezone(tz).replace(tzinfo=None)  # naive local, like the files' times
        self.warnings: list[str] = []

    # --- reading ---

    def _path(self, relpath: str) -> Optional[Path]:
        path = dl.resolve_inside(self.root, relpath)
        if path is None:
            self.warnings.append(f"{relpath}: refused (outside the orchestrator folder)")
        return path

    def _parse(self, parser, relpath: str, default=None):
        path = self._path(relpath)
        if path is None:
            return default
        value, warnings = parser(path)
        self.warnings.extend(warnings)
        return default if value is None else value

    def iso(self, dt: Optional[datetime]) -> Optional[str]:
        """A naive orchestrator-local time as ISO 8601 UTC with Z."""
        return dl.to_utc_iso(dt, self.tz)

    @property
    def root_exists(self) -> bool:
        return self.root.is_dir()

    @cached_property
    def config(self) -> dict:
        return self._parse(dl.parse_config, "training/config.json", {})

    @cached_property
    def result(self) -> dict:
        return self._parse(dl.parse_training_result, "holistic_training_result.json", {})

    @cached_property
    def metrics(self) -> dict:
        if self.recorded_metrics is not None:
            return self.recorded_metrics
        return self._parse(dl.parse_training_metrics, "logs/training_metrics.json", {})

    @cached_property
    def modules(self) -> dict:
        path = self._path("agents")
        if path is None:
            return {}
        modules, warnings = dl.parse_agent_modules(path)
        self.warnings.extend(warnings)
        return modules

    @cached_property
    def report_files(self) -> list[tuple]:
        """[(date, path)] of every daily report on disk, oldest first (listed, not read)."""
        logs = self._path("logs")
        if logs is None or not logs.is_dir():
            return []
        return dl.list_daily_reports(logs)

    @cached_property
    def reports(self) -> list[dict]:
        """The newest REPORT_WINDOW daily reports, parsed, oldest first (older ones live in the database)."""
        parsed = []
        for _day, path in self.report_files[-REPORT_WINDOW:]:  # the listing keeps only files inside the folder
            report, warnings = dl.parse_daily_report(path)
            self.warnings.extend(warnings)
            if report and report.get("date"):
                parsed.append(report)
        return parsed

    @cached_property
    def log_files(self) -> list[Path]:
        """Run logs, newest first."""
        logs = self._path("logs")
        if logs is None or not logs.is_dir():
            return []
        return list(reversed(dl.list_log_files(logs)))

    def log_events(self, path: Path, limit: int = LOG_WINDOW_EVENTS) -> list[dict]:
        """The newest `limit` events of one log, oldest first."""
        events, warnings = dl.read_log_events(path, limit)
        self.warnings.extend(warnings)
        return events

    @cached_property
    def recent_events(self) -> list[dict]:
        """The newest events of the newest log, oldest first."""
        return self.log_events(self.log_files[0]) if self.log_files else []

    # --- agents ---

    @cached_property
    def agent_ids(self) -> list[str]:
        """Agents named by the reports, metrics, config or agents/ folder, naturally sorted."""
        ids = set(self.modules) | set(self.config.get("agents", {}))
        ids |= {m.group(1) for key in self.metrics if (m := QUALITY_KEY.match(key))}
        for report in self.reports:
            ids |= {agent["id"] for agent in report["agents"]}
        return sorted((i for i in ids if dl.AGENT_ID_RE.match(i)), key=natural_key)

    def agent_name(self, agent_id: str) -> str:
        """Display name: the newest report's, else the module title, else the id."""
        for report in reversed(self.reports):
            for agent in report["agents"]:
                if agent["id"] == agent_id and agent.get("name"):
                    return agent["name"]
        title = self.modules.get(agent_id, {}).get("title")
        return title or agent_id

    def quality_points(self, agent_id: Optional[str]) -> list[dict]:
        """Quality points of an agent (or the system when None), oldest first."""
        return self.metrics.get(f"{agent_id}_quality" if agent_id else SYSTEM_KEY, [])

    def report_quality(self, agent_id: Optional[str]) -> dict:
        """{date: score} from the daily reports, for the days the metrics file lacks."""
        days = {}
        for report in self.reports:
            if agent_id is None:
                days[report["date"]] = report.get("system_quality")
            else:
                for agent in report["agents"]:
                    if agent["id"] == agent_id and agent.get("quality") is not None:
                        days[report["date"]] = agent["quality"]
        return days

    def latest_report_agent(self, agent_id: str) -> Optional[dict]:
        """The agent's section in the newest report that mentions it."""
        for report in reversed(self.reports):
            for agent in report["agents"]:
                if agent["id"] == agent_id:
                    return dict(agent, date=report["date"])
        return None

    def attempts(self, agent_id: str) -> list[dict]:
        """The agent's training attempts from `success_rate`, oldest first."""
        return [p for p in self.metrics.get("success_rate", []) if p.get("agent") == agent_id]

    # --- runs ---

    @cached_property
    def run_timeout(self) -> float:
        return float(self.config.get("timeout_total_seconds") or DEFAULT_RUN_TIMEOUT)

    @cached_property
    def progress(self) -> dict:
        """The newest run in the newest log (parse_run_progress), with `running` resolved."""
        progress = dict(dl.parse_run_progress(self.recent_events))
        running = progress.get("found") and progress.get("finished") is None
        last = progress.get("last_event_at")
        if running and last is not None and (self.now - last).total_seconds() > self.run_timeout:
            self.warnings.append(
                f"logs: the run started {self.iso(progress.get('started_at'))} never finished "
                f"(no log line since {self.iso(last)}); treated as not running")
            running = False
        if running:
            reason = self._ended_session(progress.get("started_at"))
            if reason:
                self.warnings.append(f"logs: the run started {self.iso(progress.get('started_at'))} has no final"
                                     f" line, but {reason}; treated as not running")
                running = False
        progress["running"] = bool(running)
        return progress

    def _ended_session(self, started: Optional[datetime]) -> Optional[str]:
        """Why the log's unfinished run that started at `started` (naive local) has ended, if a dashboard
        session ran it: the newest session that started before it (within SESSION_SKEW) has ended since."""
        start = local_instant(started, self.tz) if started else None
        for session in self.sessions:
            begun = _parse_utc(session["started_at"])
            if start is None or begun is None or begun > start + SESSION_SKEW:
                continue
            ended = _parse_utc(session["ended_at"]) if session["status"] != "running" else None
            if ended is None or ended < start.replace(microsecond=0):  # whole seconds, the same clock
                return None
            return f"dashboard session {session['session_id']} that ran it ended ({session['status']}) at {session['ended_at']}"
        return None

    def log_runs(self) -> list[dict]:
        """Every run visible in the newest log window, each described by parse_run_progress."""
        runs, current = [], []
        for event in self.recent_events:
            if event["message"].startswith("HOLISTIC TRAINING PIPELINE STARTED") and current:
                runs.append(dl.parse_run_progress(current))
                current = []
            current.append(event)
        if current:
            runs.append(dl.parse_run_progress(current))
        return [run for run in runs if run.get("found")]

    @cached_property
    def schedule(self) -> Optional[str]:
        """The cron expression, if the config has a valid one."""
        expression = self.config.get("schedule")
        if expression and not croniter.is_valid(expression):
            self.warnings.append(f"training/config.json: schedule {expression!r} is not a valid cron expression")
            return None
        try:
            if expression:
                croniter(expression, self.now.replace(fold=0)).get_next(datetime)
        except CroniterBadDateError:  # valid fields, but no such date (30 February)
            self.warnings.append(f"training/config.json: schedule {expression!r} never fires (no such date)")
            return None
        return expression

    def next_run(self) -> Optional[datetime]:
        """The next scheduled start after now (aware UTC), or None when unscheduled.

        A wall time the clocks skip fires when the gap ends; one they pass twice, the first time only.
        """
        if not self.schedule or self.config.get("enabled") is False:
            return None
        starts = croniter(self.schedule, self.now.replace(fold=0))
        while True:  # past the now only in the hour the clocks repeat
            start = local_instant(starts.get_next(datetime), self.tz)
            if start > self.now_utc:
                return start

    def schedule_interval(self, after: datetime) -> Optional[timedelta]:
        """The gap between the two scheduled starts that follow `after`."""
        if not self.schedule:
            return None
        it = croniter(self.schedule, after)
        first = it.get_next(datetime)
        return it.get_next(datetime) - first
