"""What the orchestrator's files say at one instant: a request's view, in the orchestrator's zone.

The files come parsed from an OrchestratorFiles (shared while unchanged); what depends on the
instant (is the run still running, when is the next start) is worked out here, and every problem
met is added to `warnings`, so a response can say what it could not read.
"""
from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from typing import Iterable, Optional

from croniter import CroniterBadDateError, croniter

import data_loader as dl
from dashboard.config import DEFAULT_MAX_AGENTS
from dashboard.local.orchestrator_files import LOG_WINDOW_EVENTS, OrchestratorFiles
from dashboard.local.parse_cache import ParseCache
from dashboard.timestamps import parse_iso

SYSTEM_KEY = "system_overall_quality"
DEFAULT_RUN_TIMEOUT = 1800.0
# A dashboard session starts a moment before the log shows its run (both clocks are this host's).
SESSION_SKEW = timedelta(seconds=2)
# Ids of the agents left out by MAX_AGENTS that its warning names.
CAP_WARNING_IDS = 5


def _parse_utc(text: Optional[str]) -> Optional[datetime]:
    try:
        return parse_iso(text) if text else None
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


class cached_property:  # noqa: N801  (functools.cached_property without its lock)
    """A value computed on first access and kept on the instance. functools.cached_property in Python
    3.11 holds one lock per attribute for every instance: two requests, each inside the other's lock
    (this one and OrchestratorFiles'), would wait for each other. A state belongs to one request, so
    it needs none."""

    def __init__(self, func):
        self.func, self.__doc__ = func, func.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


class OrchestratorState:
    """One request's view of an orchestrator folder, in the orchestrator's time zone: the files as
    `files` (an OrchestratorFiles, shared while unchanged) hold them, at the instant `now`."""

    def __init__(self, root: Path, tz: tzinfo, now: Optional[datetime] = None, sessions: Iterable[dict] = (),
                 recorded_metrics: Optional[dict] = None, files: Optional[OrchestratorFiles] = None,
                 cache: Optional[ParseCache] = None, max_agents: int = DEFAULT_MAX_AGENTS):
        self.root = Path(root)
        self.max_agents = max_agents  # agents listed one by one in an answer (MAX_AGENTS)
        self.tz = tz
        self.files = files or OrchestratorFiles(self.root, recorded_metrics, cache)
        # The newest dashboard training sessions (TrainingController.recent_sessions), newest first: a run
        # the log shows unfinished has ended when the session that started it has (killed, no final line).
        self.sessions = list(sessions)
        self.now_utc = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        self.now = self.now_utc.astimezone(tz).replace(tzinfo=None)  # naive local, like the files' times
        self.warnings: list[str] = []
        self._used: set[str] = set()
        self.store_version = None  # the database version this request reads at (set by the provider)
        self._day_starts: dict[date, Optional[str]] = {}

    # --- reading (the files' sources, each adding its problems to this request's warnings once) ---

    def _source(self, name: str):
        value = getattr(self.files, name)
        if name not in self._used:
            self._used.add(name)
            self.warnings.extend(self.files.warnings_of(name))
        return value

    def iso(self, dt: Optional[datetime]) -> Optional[str]:
        """A naive orchestrator-local time as ISO 8601 UTC with Z."""
        return dl.to_utc_iso(dt, self.tz)

    def day_start_iso(self, day: date) -> Optional[str]:
        """The local midnight starting `day` as ISO 8601 UTC (once per day and request: every agent of a
        report shares its date)."""
        if day not in self._day_starts:
            self._day_starts[day] = self.iso(datetime.combine(day, datetime.min.time()))
        return self._day_starts[day]

    @property
    def root_exists(self) -> bool:
        return self.root.is_dir()

    @property
    def recorded_metrics(self) -> Optional[dict]:
        return self.files.recorded_metrics

    # Kept on the view for the request (the files' view does not change under it): read once per agent.
    config = cached_property(lambda self: self._source("config"))
    result = property(lambda self: self._source("result"))
    metrics = cached_property(lambda self: self._source("metrics") if self.files.recorded_metrics is None
                              else self.files.recorded_metrics)
    modules = cached_property(lambda self: self._source("modules"))
    report_files = property(lambda self: self._source("report_files"),
                            doc="[(date, path)] of every daily report on disk, oldest first (listed, not read).")
    reports = property(lambda self: self._source("reports"),
                       doc="The newest REPORT_WINDOW daily reports, parsed, oldest first.")
    log_files = property(lambda self: self._source("log_files"), doc="Run logs, newest first.")
    recent_events = property(lambda self: self._source("recent_events"),
                             doc="The newest events of the newest log, oldest first.")
    agent_ids = property(lambda self: self._source("agent_ids"),
                         doc="Agents named by the reports, metrics, config or agents/ folder, naturally sorted.")

    def log_events(self, path: Path, limit: int = LOG_WINDOW_EVENTS) -> list[dict]:
        """The newest `limit` events of one log, oldest first."""
        events = self.files.log_events(path, limit)
        self.warnings.extend(self.files.warnings_of(f"log_events:{path}:{limit}"))
        return events

    # --- agents ---

    @property
    def listed_agent_ids(self) -> list[str]:
        """The agents an answer lists one by one: the first `max_agents` of agent_ids (natural id order),
        with a warning naming the rest when there are more."""
        return self.capped(self.agent_ids)

    def capped(self, agent_ids: list[str]) -> list[str]:
        """The first `max_agents` of `agent_ids` (naturally sorted); a warning names those left out."""
        if len(agent_ids) <= self.max_agents:
            return agent_ids
        dropped = agent_ids[self.max_agents:]
        more = f" and {len(dropped) - CAP_WARNING_IDS} more" if len(dropped) > CAP_WARNING_IDS else ""
        warning = (f"agents: {len(agent_ids)} known, only the first {self.max_agents} in id order are listed "
                   f"(MAX_AGENTS={self.max_agents}); left out: {', '.join(dropped[:CAP_WARNING_IDS])}{more}")
        if warning not in self.warnings:
            self.warnings.append(warning)
        return agent_ids[:self.max_agents]

    def agent_name(self, agent_id: str) -> str:
        """Display name: the newest report's, else the module title, else the id."""
        entry = self._report_agents.get(agent_id)
        if entry is not None and entry["name"]:
            return entry["name"]
        title = self.modules.get(agent_id, {}).get("title")
        return title or agent_id

    def quality_points(self, agent_id: Optional[str]) -> list[dict]:
        """Quality points of an agent (or the system when None), oldest first."""
        return self.metrics.get(f"{agent_id}_quality" if agent_id else SYSTEM_KEY, [])

    def report_quality(self, agent_id: Optional[str]) -> dict:
        """{date: score} from the daily reports, for the days the metrics file lacks."""
        if agent_id is None:
            return {report["date"]: report.get("system_quality") for report in self.reports}
        entry = self._report_agents.get(agent_id)
        return dict(entry["quality"]) if entry is not None else {}

    def latest_report_agent(self, agent_id: str) -> Optional[dict]:
        """The agent's section in the newest report that mentions it."""
        entry = self._report_agents.get(agent_id)
        if entry is None:
            return None
        day, section = entry["latest"]
        return dict(section, date=day)

    def attempts(self, agent_id: str) -> list[dict]:
        """The agent's training attempts from `success_rate`, oldest first (shared: do not change it)."""
        return self._attempts.get(agent_id, [])

    @cached_property
    def _attempts(self) -> dict[str, list[dict]]:
        return self.memo("attempts", self._attempts_by_agent)

    def _attempts_by_agent(self) -> dict[str, list[dict]]:
        by_agent: dict[str, list[dict]] = {}
        for point in self.metrics.get("success_rate", []):
            by_agent.setdefault(point.get("agent"), []).append(point)
        return by_agent

    @cached_property
    def _report_agents(self) -> dict[str, dict]:
        """{agent_id: {"name", "latest": (date, section), "quality": {date: score}}} over the reports."""
        return self.memo("report_agents", self._index_report_agents)

    def _index_report_agents(self) -> dict[str, dict]:
        index: dict[str, dict] = {}
        for report in self.reports:  # oldest first: a newer report's word replaces an older one's
            first = set()
            for agent in report["agents"]:
                entry = index.setdefault(agent["id"], {"name": None, "latest": None, "quality": {}})
                if agent["id"] not in first:  # an agent named twice in one report: its first section counts
                    first.add(agent["id"])
                    entry["latest"] = (report["date"], agent)
                    entry["name"] = agent.get("name") or entry["name"]
                if agent.get("quality") is not None:
                    entry["quality"][report["date"]] = agent["quality"]
        return index

    # --- runs ---

    @cached_property
    def run_timeout(self) -> float:
        return float(self.config.get("timeout_total_seconds") or DEFAULT_RUN_TIMEOUT)

    @cached_property
    def progress(self) -> dict:
        """The newest run in the newest log (parse_run_progress), with `running` resolved."""
        progress = dict(self.memo("run_progress", lambda: dl.parse_run_progress(self.recent_events)))
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
        session ran it and has ended since."""
        session = self.session_at(started)
        if session is None or session["status"] == "running" or _parse_utc(session["ended_at"]) is None:
            return None
        return f"dashboard session {session['session_id']} that ran it ended ({session['status']}) at {session['ended_at']}"

    def session_at(self, when: Optional[datetime]) -> Optional[dict]:
        """The dashboard session that was running at `when` (naive local), if one was: the newest that
        started before it (within SESSION_SKEW), unless it had ended before it (whole seconds, one clock)."""
        instant = local_instant(when, self.tz) if when else None
        for session in self.sessions:
            begun = _parse_utc(session["started_at"])
            if instant is None or begun is None or begun > instant + SESSION_SKEW:
                continue
            ended = _parse_utc(session["ended_at"]) if session["status"] != "running" else None
            return session if ended is None or ended >= instant.replace(microsecond=0) else None
        return None

    def memo(self, name: str, compute):
        """compute(), worked out once while the files are unchanged: it may depend on them and the zone,
        never on the instant. The value is shared: callers copy before changing it."""
        value = self.files.get(name, compute)[0]
        if name not in self._used:
            self._used.add(name)
            self.warnings.extend(self.files.warnings_of(name))
        return value

    def log_runs(self) -> list[dict]:
        """Every run visible in the newest log window, each described by parse_run_progress."""
        return self.memo("log_runs", self._log_runs)

    def _log_runs(self) -> list[dict]:
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
        expression, problem = self.memo("schedule", self._checked_schedule)
        if problem:
            self.warnings.append(problem)
        return expression

    def _checked_schedule(self) -> tuple[Optional[str], Optional[str]]:
        expression = self.config.get("schedule")
        if expression and not croniter.is_valid(expression):
            return None, f"training/config.json: schedule {expression!r} is not a valid cron expression"
        try:
            if expression:
                croniter(expression, self.now.replace(fold=0)).get_next(datetime)
        except CroniterBadDateError:  # valid fields, but no such date (30 February)
            return None, f"training/config.json: schedule {expression!r} never fires (no such date)"
        return expression, None

    def next_run(self) -> Optional[datetime]:
        """The next scheduled start after now (aware UTC), or None when unscheduled.

        A wall time the clocks skip fires when the gap ends; one they pass twice, the first time only.
        """
        if not self.schedule or self.config.get("enabled") is False:
            return None
        asked_at, start = self.files.spans.get("next_run", (None, None))
        if asked_at is not None and asked_at <= self.now_utc < start:  # nothing starts in between
            return start
        starts = croniter(self.schedule, self.now.replace(fold=0))
        while True:  # past the now only in the hour the clocks repeat
            start = local_instant(starts.get_next(datetime), self.tz)
            if start > self.now_utc:
                self.files.spans["next_run"] = (self.now_utc, start)
                return start

    def schedule_interval(self, after: datetime) -> Optional[timedelta]:
        """The gap between the two scheduled starts that follow `after`."""
        if not self.schedule:
            return None

        def interval():
            it = croniter(self.schedule, after)
            first = it.get_next(datetime)
            return it.get_next(datetime) - first
        return self.memo(("schedule_interval", after), interval)
