"""What the orchestrator's files hold: each source parsed once, kept while the files are unchanged.

One OrchestratorFiles is shared by every request of a process until `current()` says a file it reads
changed (requests of the same moment parse nothing again). Each source's problems are kept with it, so
a request says only what it could not read of the sources it used.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Callable, Optional

import data_loader as dl
from dashboard.local.analytics import natural_key
from dashboard.local.parse_cache import ParseCache

QUALITY_KEY = re.compile(r"^(agent_[A-Za-z0-9]+)_quality$")
LOG_WINDOW_EVENTS = 5000
# Reports read per request: twice the orchestrator's 30-day retention. History reaches further back
# through the database, which records every report once (history_store).
REPORT_WINDOW = 60
# The newest reports whose own change is noticed here at once; an older one rewritten in place is
# noticed when the ingester records it (the database changes, and so does the caller's token).
HOT_REPORTS = 3
_FIXED = ("", "training", "training/config.json", "holistic_training_result.json", "logs",
          "logs/training_metrics.json", "agents")


def _stat(path: str) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class OrchestratorFiles:
    """A lazily parsed view of one orchestrator folder, with the file signatures it was read at; each file
    is parsed through `cache` (a ParseCache, so unchanged files are not parsed again), if given."""

    def __init__(self, root: Path, recorded_metrics: Optional[dict] = None, cache: Optional[ParseCache] = None):
        self.root = Path(root)
        self.cache = cache
        # The metrics file's recent points as the database holds them, for a file too large to read here.
        self.recorded_metrics = recorded_metrics
        self._values: dict[str, tuple] = {}
        self._lock = threading.RLock()
        self._collecting: list[list[str]] = []
        # {name: (instant, value)}: a value that holds from that instant (UTC) until the value itself.
        self.spans: dict[str, tuple] = {}
        base = os.fspath(self.root)
        self._hot = [os.path.join(base, rel) if rel else base for rel in _FIXED]
        self._signature = [_stat(p) for p in self._hot]  # taken before anything is read
        derived = [os.fspath(p) for p in self.log_files[:1]]
        derived += [os.fspath(p) for _day, p in self.report_files[-HOT_REPORTS:]]
        derived += [os.fspath(self.root / "agents" / m["file"]) for m in self.modules.values() if m.get("file")]
        self._hot += derived
        self._signature += [_stat(p) for p in derived]

    def unchanged(self) -> bool:
        """True while every file this view watches has the (inode, mtime, size) it was read at."""
        return [_stat(p) for p in self._hot] == self._signature

    def get(self, name: str, compute: Callable):
        """(value, warnings) of source `name`, computed once; the warnings also count for a source whose
        computation is reading this one."""
        with self._lock:
            if name not in self._values:
                self._collecting.append([])
                try:
                    value = compute()
                finally:
                    warnings = self._collecting.pop()
                self._values[name] = (value, list(dict.fromkeys(warnings)))
            value, warnings = self._values[name]
            if self._collecting:
                self._collecting[-1].extend(warnings)
            return value, warnings

    def forget(self, name) -> None:
        """Compute source `name` again when next asked for."""
        with self._lock:
            self._values.pop(name, None)

    def warnings_of(self, name: str) -> list[str]:
        """The problems met reading source `name` (none before it was read)."""
        with self._lock:
            return self._values.get(name, (None, []))[1]

    def _warn(self, *warnings: str) -> None:
        if self._collecting:
            self._collecting[-1].extend(warnings)

    # --- the sources ---

    def _path(self, relpath: str) -> Optional[Path]:
        path = dl.resolve_inside(self.root, relpath)
        if path is None:
            self._warn(f"{relpath}: refused (outside the orchestrator folder)")
        return path

    def _parse(self, parser, relpath: str, default):
        path = self._path(relpath)
        if path is None:
            return default
        value, warnings = parser(path, cache=self.cache)
        self._warn(*warnings)
        return default if value is None else value

    def _logs_dir(self) -> Optional[Path]:
        logs = self._path("logs")
        return logs if logs is not None and logs.is_dir() else None

    @property
    def config(self) -> dict:
        return self.get("config", lambda: self._parse(dl.parse_config, "training/config.json", {}))[0]

    @property
    def result(self) -> dict:
        return self.get("result", lambda: self._parse(dl.parse_training_result, "holistic_training_result.json", {}))[0]

    @property
    def metrics(self) -> dict:
        if self.recorded_metrics is not None:
            return self.recorded_metrics
        return self.get("metrics", lambda: self._parse(dl.parse_training_metrics, "logs/training_metrics.json", {}))[0]

    @property
    def modules(self) -> dict:
        def read():
            path = self._path("agents")
            if path is None:
                return {}
            modules, warnings = dl.parse_agent_modules(path, cache=self.cache)
            self._warn(*warnings)
            return modules
        return self.get("modules", read)[0]

    def _listed_in_logs(self, name: str, listing: Callable) -> list:
        """`listing(the logs folder)`, kept as source `name`; [] without a logs folder."""
        def read():
            logs = self._logs_dir()
            return listing(logs) if logs else []
        return self.get(name, read)[0]

    @property
    def report_files(self) -> list[tuple]:
        """[(date, path)] of every daily report on disk, oldest first (listed, not read)."""
        return self._listed_in_logs("report_files", lambda logs: dl.list_daily_reports(logs, cache=self.cache))

    @property
    def reports(self) -> list[dict]:
        """The newest REPORT_WINDOW daily reports, parsed, oldest first (older ones live in the database)."""
        def read():
            parsed = []
            for _day, path in self.report_files[-REPORT_WINDOW:]:  # the listing keeps only files inside
                report, warnings = dl.parse_daily_report(path, cache=self.cache)
                self._warn(*warnings)
                if report and report.get("date"):
                    parsed.append(report)
            return parsed
        return self.get("reports", read)[0]

    @property
    def log_files(self) -> list[Path]:
        """Run logs, newest first."""
        return self._listed_in_logs("log_files", lambda logs: list(reversed(dl.list_log_files(logs))))

    def log_events(self, path: Path, limit: int = LOG_WINDOW_EVENTS) -> list[dict]:
        """The newest `limit` events of one log, oldest first."""
        def read():
            events, warnings = dl.read_log_events(path, limit, cache=self.cache)
            self._warn(*warnings)
            return events
        return self.get(f"log_events:{path}:{limit}", read)[0]

    @property
    def recent_events(self) -> list[dict]:
        """The newest events of the newest log, oldest first."""
        return self.get("recent_events", lambda: self.log_events(self.log_files[0]) if self.log_files else [])[0]

    @property
    def agent_ids(self) -> list[str]:
        """Agents named by the reports, metrics, config or agents/ folder, naturally sorted."""
        def read():
            ids = set(self.modules) | set(self.config.get("agents", {}))
            ids |= {m.group(1) for key in self.metrics if (m := QUALITY_KEY.match(key))}
            for report in self.reports:
                ids |= {agent["id"] for agent in report["agents"]}
            return sorted((i for i in ids if dl.AGENT_ID_RE.match(i)), key=natural_key)
        return self.get("agent_ids", read)[0]
