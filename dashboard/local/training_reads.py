"""The local provider's training reads and control (docs/training.md): the running run's status and phase,
a run started or stopped (the logic lives in dashboard/training/control.py), sessions, the runs' history and
one run's record, the schedule in words."""
from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from typing import Optional

from cron_descriptor import get_description

import database
from dashboard import caching
from dashboard.contract import Answer, Payload, StartTraining
from dashboard.local import run_record, training_progress
from dashboard.local.orchestrator_state import OrchestratorState
from dashboard.local.runs import runs_from_files, runs_history
from dashboard.store import history_reads
from dashboard.web import auth
from dashboard.web.errors import ApiError

_descriptions = caching.Cache(64)


def describe_schedule(expression: str) -> str:
    """The cron expression in words (cron_descriptor, which loads its translations on every call: kept)."""
    return _descriptions.get_or_compute(expression, lambda: get_description(expression))


class TrainingReads:
    """A mixin of LocalDataProvider: training status, control, sessions, runs and schedule."""

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
