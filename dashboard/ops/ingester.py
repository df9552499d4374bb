"""The ingester: the one writer of what the orchestrator's files say.

Every INGEST_SECONDS one process (background.LeaderLoop) closes training sessions whose process is
gone, records what changed in the files into SQLite (history_store.ingest: metric points, daily
reports, runs, log events; idempotent by natural keys) and settles the alerts (when each began and
ended, as events). Requests only read: orchestrator files -> ingester -> SQLite -> provider -> JSON.
"""
from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime
from typing import Callable

from dashboard.local import alert_rules
import database
from dashboard.store import events
from dashboard.store import history_store
from dashboard.ops import sampler
from dashboard.training import control as training_control
from dashboard.local.agent_rows import agent_rows
from dashboard.ops.background import LeaderLoop
from dashboard.local.orchestrator_state import OrchestratorState, orchestrator_zone, wall_clock
from dashboard.local.parse_cache import ParseCache


class Ingester(LeaderLoop):
    """Records the orchestrator folder of `config` into its database, one round per interval."""

    name, label = "ingester", "ingester"

    def __init__(self, config: dict, clock: Callable[[], datetime] = wall_clock):
        super().__init__(config["DATABASE_PATH"], config["INGEST_SECONDS"])
        self.root = config["ORCHESTRATOR_PATH"]
        self.tz = orchestrator_zone(config.get("ORCHESTRATOR_TIMEZONE", ""))
        self.threshold = float(config["QUALITY_THRESHOLD"])
        self.max_agents = config["MAX_AGENTS"]  # alerts are settled for the listed agents only
        self.limits = {k: v for k, v in config.items() if k.startswith("ALERT_")}
        self.disk_path = config["HEALTH_DISK_PATH"]
        self.training = training_control.TrainingController(config)
        self.clock = clock
        # So an idle round parses nothing again.
        self.parse_cache = ParseCache(config["PARSE_CACHE_MAX_BYTES"])

    def tick(self, conn: sqlite3.Connection) -> None:
        """Close lost sessions, record changed files, settle alerts."""
        self.training.reconcile(conn)
        s = OrchestratorState(self.root, self.tz, now=self.clock(), sessions=self.training.recent_sessions(conn),
                              cache=self.parse_cache, max_agents=self.max_agents)
        history_store.ingest(conn, s)
        sample = sampler.alert_sample(conn, self.disk_path, s.now_utc)
        events.sync_alerts(conn, alert_rules.current_alerts(s, agent_rows(s), self.threshold, sample, self.limits))

    def run_once(self) -> None:
        """One round now, on a connection of its own (the CLI, tests, and before the first tick)."""
        with contextlib.closing(database.connect(self.db_path)) as conn:
            self.tick(conn)
