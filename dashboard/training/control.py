"""Training control: start and stop real orchestrator runs from the dashboard, one at a time.

- **Single flight.** A start holds an OS lock (`flock` on `<DATABASE_PATH>.training.lock`, shared by
  every gunicorn worker and thread) only while it checks the database for an active session, checks
  that session's process, launches, and inserts the row (BEGIN IMMEDIATE). The partial unique index
  `idx_sessions_one_running` backs this up: the database cannot hold two `running` rows.
- **Exit recording.** The command is launched through `dashboard/training/wrapper.py` in a new session (so a
  dashboard restart does not signal it). The wrapper waits for the command and writes its outcome to
  `<run dir>/exit_status.json` and to the session row, whatever happened to the worker that started it.
- **Reconciling.** A `running` row whose wrapper is gone (pid dead, a zombie, or reused: the create
  time in `wrapper.json` differs) is closed from `exit_status.json` when present, else as `failed`
  with "lost: ..." (an orphaned command is killed first). Done by the ingester every second and by
  every start and stop; reads show such a row as ended already (`view`) and never write.
- **Stop.** SIGTERM to the wrapper (and a `stop_requested` file); the wrapper forwards SIGTERM to the
  command's process group and SIGKILLs the group after TRAINING_STOP_GRACE_SECONDS.

Run folder `<TRAINING_RUNS_DIR>/<session_id>/`: spec.json (what to run), wrapper.json (wrapper pid and
create time), child.json (the command's pid/pgid and create time), output.log, stop_requested,
exit_status.json.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import psutil

import database
from dashboard.store import events
from dashboard.store.run_ids import new_run_id
from dashboard.training import wrapper as tw
from dashboard.web.errors import ApiError
from dashboard.ops.file_lock import flock_within
from dashboard.timestamps import utc_now

log = logging.getLogger(__name__)

WRAPPER = Path(tw.__file__).resolve()
LOCK_TIMEOUT_SECONDS = 10.0
MAX_STOP_WAIT_SECONDS = 5.0
SESSION_COLUMNS = ("id, session_number, run_id, status, origin, start_time, end_time, duration_seconds, exit_code, error_message, pid,"
                   " command, output_path, started_by, stopped_by")


def command_argv(command: str) -> list[str]:
    """TRAINING_COMMAND split like a shell would; a leading `python`/`python3` becomes this interpreter."""
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise ValueError(f"TRAINING_COMMAND cannot be parsed: {err}") from None
    if not argv:
        raise ValueError("TRAINING_COMMAND is empty")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def session_view(row) -> dict:
    """A training_sessions row as the API shows it (contract.TrainingSession)."""
    return {"session_id": row["session_number"], "status": row["status"], "origin": row["origin"],
            "started_at": row["start_time"], "ended_at": row["end_time"],
            "duration_seconds": row["duration_seconds"], "exit_code": row["exit_code"],
            "error_message": row["error_message"], "pid": row["pid"], "command": row["command"],
            "output_path": row["output_path"], "started_by": row["started_by"], "stopped_by": row["stopped_by"]}


@contextlib.contextmanager
def stop_signals_blocked():
    """Block the wrapper's stop signals in this thread while it spawns the wrapper."""
    # A stop that comes right after a start would otherwise reach the wrapper while Python is still
    # starting, before dashboard/training/wrapper.py has installed its handler, and SIGTERM's default action kills
    # it without a word (the session ends "lost"). The signal mask is per thread, is copied by fork and
    # kept across exec, so the wrapper starts with these signals blocked: one sent early stays pending
    # until the wrapper has installed its handlers and unblocks them. Only this thread's mask changes
    # (pthread_sigmask), so the worker's other threads, and signals sent to the worker, are unaffected.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, tw.STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class TrainingController:
    """Starts, stops and watches dashboard training sessions for one database and orchestrator folder."""

    def __init__(self, config: dict):
        self.db_path = Path(config["DATABASE_PATH"])
        self.runs_dir = Path(config["TRAINING_RUNS_DIR"])
        self.cwd = Path(config["ORCHESTRATOR_PATH"])
        self.command = config["TRAINING_COMMAND"]
        self.argv = command_argv(self.command)
        self.grace = float(config["TRAINING_STOP_GRACE_SECONDS"])

    # --- locking and rows ---

    @contextlib.contextmanager
    def _lock(self):
        """The cross-process start lock (flock on a file next to the database); 503 if busy for long."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.db_path}.training.lock", "a+") as handle:
            if not flock_within(handle, LOCK_TIMEOUT_SECONDS, poll=0.02):
                raise ApiError(503, "training control is busy; try again")
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _row(conn: sqlite3.Connection, session_id: int):
        """The dashboard session numbered `session_id` (the API's id), or None."""
        return conn.execute(f"SELECT {SESSION_COLUMNS} FROM training_sessions WHERE session_number = ?"
                            " AND origin = 'dashboard'", (session_id,)).fetchone()

    @staticmethod
    def _running_row(conn: sqlite3.Connection):
        return conn.execute(f"SELECT {SESSION_COLUMNS} FROM training_sessions WHERE status = 'running'"
                            " ORDER BY id DESC LIMIT 1").fetchone()

    def run_dir(self, row) -> Path:
        """The session's run folder (from its output path, so a changed TRAINING_RUNS_DIR still finds it)."""
        if row["output_path"]:
            return Path(row["output_path"]).parent
        return self.runs_dir / str(row["session_number"])

    def _wrapper_alive(self, row) -> bool:
        info = tw.read_json(self.run_dir(row) / tw.WRAPPER_FILE)
        if info is not None:
            return tw.process_alive(row["pid"], info.get("create_time"))
        # No wrapper.json (run folder removed): accept the pid only if it is still a wrapper.
        try:
            return tw.process_alive(row["pid"], None) and any(
                str(WRAPPER) in part for part in psutil.Process(row["pid"]).cmdline())
        except psutil.Error:
            return False

    # --- reconciling ---

    def reconcile(self, conn: sqlite3.Connection) -> None:
        """Close every dashboard `running` row whose wrapper is gone (from exit_status.json, else as lost)."""
        rows = conn.execute(f"SELECT {SESSION_COLUMNS} FROM training_sessions"
                            " WHERE status = 'running' AND origin = 'dashboard'").fetchall()
        for row in rows:
            if self._wrapper_alive(row):
                continue
            run_dir = self.run_dir(row)
            outcome = tw.read_json(run_dir / tw.EXIT_FILE)
            if outcome is None or outcome.get("status") not in ("completed", "failed", "stopped"):
                outcome = self._lost(row, run_dir)
            outcome["session_id"] = row["session_number"]
            with database.transaction(conn):
                closed = tw.apply_outcome(conn, row["id"], outcome)
            if closed:
                log.warning("training session %s reconciled as %s: %s", row["session_number"], outcome["status"],
                            outcome.get("error_message"))
                self._event(conn, lambda: tw.record_finish_event(conn, outcome))

    def _lost(self, row, run_dir: Path) -> dict:
        """The outcome of a session whose wrapper vanished without writing one; kills an orphaned command."""
        reason = f"lost: the wrapper process {row['pid']} is gone and recorded no exit status"
        child = tw.read_json(run_dir / tw.CHILD_FILE)
        if child and tw.process_alive(child.get("pid"), child.get("create_time")):
            tw.signal_group(int(child["pgid"]), signal.SIGKILL)
            reason += f"; its orphaned process group {child['pgid']} was killed"
        stop = (run_dir / tw.STOP_FILE).exists()
        outcome = {"session_id": row["session_number"], "status": "stopped" if stop else "failed", "exit_code": None,
                   "error_message": reason, "ended_at": utc_now(), "stop_requested": stop,
                   "killed": False, "lost": True}
        with contextlib.suppress(OSError):
            tw.write_json_atomic(run_dir / tw.EXIT_FILE, outcome)
        return outcome

    @staticmethod
    def _event(conn: sqlite3.Connection, record) -> None:
        """Record an event; a failure to record is logged, never fails the request."""
        try:
            record()
        except sqlite3.Error as err:
            log.warning("training event not recorded: %s", err)

    # --- reads (they never write: the ingester reconciles) ---

    def view(self, row) -> dict:
        """A session as the API shows it; a `running` row whose wrapper is gone shows how it ended (its
        exit_status.json, else as lost) before the ingester records that."""
        view = session_view(row)
        if row["status"] != "running" or row["origin"] != "dashboard" or self._wrapper_alive(row):
            return view
        run_dir = self.run_dir(row)
        outcome = tw.read_json(run_dir / tw.EXIT_FILE)
        if outcome is None or outcome.get("status") not in ("completed", "failed", "stopped"):
            outcome = {"status": "stopped" if (run_dir / tw.STOP_FILE).exists() else "failed", "exit_code": None,
                       "error_message": f"lost: the wrapper process {row['pid']} is gone and recorded no exit status"}
        view.update(status=outcome["status"], exit_code=outcome.get("exit_code"),
                    error_message=outcome.get("error_message"), ended_at=outcome.get("ended_at") or view["ended_at"])
        return view

    def running_session(self, conn: sqlite3.Connection) -> Optional[dict]:
        """The running session (any origin), or None."""
        row = self._running_row(conn)
        view = self.view(row) if row else None
        return view if view and view["status"] == "running" else None

    def session(self, conn: sqlite3.Connection, session_id: int) -> Optional[dict]:
        """One session, or None."""
        row = self._row(conn, session_id)
        return self.view(row) if row else None

    def recent_sessions(self, conn: sqlite3.Connection, limit: int = 5) -> list[dict]:
        """The newest dashboard sessions, newest first, as reads see them (OrchestratorState matches the
        log's unfinished run to them)."""
        rows = conn.execute(f"SELECT {SESSION_COLUMNS} FROM training_sessions WHERE origin = 'dashboard'"
                            " ORDER BY start_time DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return [self.view(row) for row in rows]

    # --- start ---

    def start(self, conn: sqlite3.Connection, force: bool = False, log_running: bool = False,
              by: Optional[str] = None) -> dict:
        """Launch TRAINING_COMMAND as a new session; 409 (ApiError) while one runs. {session_id, status, started_at}.

        `log_running`: the orchestrator's log shows a run no dashboard session owns (started by cron or by
        hand, or left without a final line); it blocks the start unless `force`. A running session whose
        process is alive is never overridden.
        """
        with self._lock():
            self.reconcile(conn)
            running = self._running_row(conn)
            if running is not None:
                raise ApiError(409, f"training session {running['session_number']} is already running"
                                    f" (started {running['start_time']}); stop it first",
                               extra={"session_id": running["session_number"]})
            if log_running and not force:
                raise ApiError(409, "the orchestrator's log shows a training run in progress that the dashboard"
                                    " did not start; send {\"force\": true} if it is stale",
                               extra={"session_id": None})
            started_at = utc_now()
            try:
                with database.transaction(conn):
                    row_id, session_id = self._insert_session(conn, started_at, by)
                    run_dir = self._prepare_run_dir(session_id)
                    output = run_dir / tw.OUTPUT_FILE
                    proc = self._launch(row_id, session_id, run_dir, output)
                    try:
                        conn.execute("UPDATE training_sessions SET pid = ?, output_path = ? WHERE id = ?",
                                     (proc.pid, str(output), row_id))
                    except BaseException:
                        tw.signal_group(proc.pid, signal.SIGKILL)
                        raise
            except sqlite3.IntegrityError:
                # idx_sessions_one_running: a running row appeared that this lock does not cover.
                running = self._running_row(conn)
                raise ApiError(409, "a training session is already running",
                               extra={"session_id": running["session_number"] if running else None}) from None
            except OSError as err:
                raise ApiError(503, f"cannot launch the training command: {err}") from None
        self._event(conn, lambda: events.record_event(
            conn, "training_started", f"training session {session_id} started",  # its command line is this host's: the log has it
            source="training", metadata={"session_id": session_id, "pid": proc.pid, "force": force}))
        log.info("training session %s started (wrapper pid %s): %s", session_id, proc.pid, self.command)
        return {"session_id": session_id, "status": "running", "started_at": started_at}

    def _insert_session(self, conn: sqlite3.Connection, started_at: str, by: Optional[str]) -> tuple[int, int]:
        """Record a new running dashboard session (in the caller's transaction): (row id, session number)."""
        number = conn.execute("SELECT COALESCE(MAX(session_number), 0) + 1 FROM training_sessions").fetchone()[0]
        row_id = conn.execute(
            "INSERT INTO training_sessions (start_time, status, origin, command, session_number, run_id, started_by)"
            " VALUES (?, 'running', 'dashboard', ?, ?, ?, ?)",
            (started_at, self.command, number, new_run_id(conn, started_at, None), by)).lastrowid
        return row_id, number

    def _prepare_run_dir(self, session_id: int) -> Path:
        run_dir = self.runs_dir / str(session_id)
        if run_dir.exists():  # left by an older database with the same ids: keep it, out of the way
            run_dir.rename(run_dir.with_name(f"{session_id}.old-{int(time.time())}"))
        run_dir.mkdir(parents=True)
        return run_dir

    def _launch(self, row_id: int, session_id: int, run_dir: Path, output: Path) -> subprocess.Popen:
        """Start the wrapper in a new session (its stderr to wrapper.log) and reap it from a thread."""
        tw.write_json_atomic(run_dir / tw.SPEC_FILE, {
            "session_id": session_id, "row_id": row_id, "argv": self.argv, "cwd": str(self.cwd), "command": self.command,
            "database": str(self.db_path), "grace_seconds": self.grace, "output_path": str(output)})
        output.touch()
        with open(run_dir / "wrapper.log", "ab") as wrapper_log, stop_signals_blocked():
            proc = subprocess.Popen([sys.executable, str(WRAPPER), str(run_dir / tw.SPEC_FILE)], cwd=run_dir,
                                    stdin=subprocess.DEVNULL, stdout=wrapper_log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        threading.Thread(target=proc.wait, name=f"training-wrapper-{session_id}", daemon=True).start()
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = None
        try:
            tw.write_json_atomic(run_dir / tw.WRAPPER_FILE, {"pid": proc.pid, "create_time": create_time})
        except BaseException:
            tw.signal_group(proc.pid, signal.SIGKILL)
            raise
        return proc

    # --- stop ---

    def stop(self, conn: sqlite3.Connection, by: Optional[str] = None) -> dict:
        """Ask the running session to stop (the first asker, `by`, is recorded as stopped_by); wait up to
        min(grace + 1, 5) s. The session, or status 'stopping'."""
        self.reconcile(conn)
        row = self._running_row(conn)
        if row is None:
            raise ApiError(409, "no training run is active")
        if row["origin"] != "dashboard":
            raise ApiError(409, "the running training was not started by the dashboard; stop it where"
                                " it was started", extra={"session_id": None})
        run_dir = self.run_dir(row)
        first = not (run_dir / tw.STOP_FILE).exists()
        with contextlib.suppress(OSError):
            (run_dir / tw.STOP_FILE).write_text(utc_now() + "\n", encoding="utf-8")
        if self._wrapper_alive(row):
            with contextlib.suppress(ProcessLookupError):
                os.kill(row["pid"], signal.SIGTERM)
        if by is not None:
            with database.transaction(conn):
                conn.execute("UPDATE training_sessions SET stopped_by = ? WHERE id = ? AND stopped_by IS NULL",
                             (by, row["id"]))
        if first:
            self._event(conn, lambda: events.record_event(
                conn, "training_stop_requested", f"stop requested for training session {row['session_number']}",
                source="training", metadata={"session_id": row["session_number"], "grace_seconds": self.grace}))
        deadline = time.monotonic() + min(self.grace + 1.0, MAX_STOP_WAIT_SECONDS)
        while True:
            self.reconcile(conn)
            current = self._row(conn, row["session_number"])
            if current["status"] != "running":
                return session_view(current)
            if time.monotonic() >= deadline:
                return {**session_view(current), "status": "stopping"}
            time.sleep(0.1)

