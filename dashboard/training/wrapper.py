#!/usr/bin/env python3
"""Runs one dashboard-started training command and records how it ended.

Started by training_control.start() as `python dashboard/training/wrapper.py <run_dir>/spec.json`, in a new
session of its own, so a restart of the dashboard (gunicorn workers dying) does not touch it. It:

1. waits until the dashboard has committed the session row that names this process (a start that
   was rolled back never launches anything);
2. starts the training command in a process group of its own (output to <run_dir>/output.log) and
   records the child in <run_dir>/child.json;
3. on a stop request (SIGTERM or SIGUSR1 to this process, or a <run_dir>/stop_requested file) sends
   SIGTERM to the child's group and SIGKILL to the group after the grace period, even if the group
   leader has already exited;
4. writes the outcome to <run_dir>/exit_status.json (atomically), then to the training_sessions row,
   then records a training event.

Only the standard library, psutil and `timestamps` are imported up front; `database` when the database
is opened, `events` at the end.
"""
from __future__ import annotations

import signal
import sys
import time

# Handlers first: a stop request that arrives while Python is still importing must not kill us. The
# dashboard spawns this process with STOP_SIGNALS blocked (training_control.stop_signals_blocked), so a
# signal sent before this point is pending, not fatal; it is delivered when they are unblocked below.
_STOP_REQUESTED_AT: list[float] = []
STOP_SIGNALS = {signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP}


def _on_stop(_signum, _frame) -> None:
    if not _STOP_REQUESTED_AT:
        _STOP_REQUESTED_AT.append(time.monotonic())


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGUSR1, _on_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # the command inherits an unblocked mask

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import psutil  # noqa: E402

if __name__ == "__main__":  # started by path (training.control): the checkout is not on sys.path by itself
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dashboard.timestamps import utc_now  # noqa: E402

SPEC_FILE = "spec.json"
WRAPPER_FILE = "wrapper.json"
CHILD_FILE = "child.json"
EXIT_FILE = "exit_status.json"
STOP_FILE = "stop_requested"
OUTPUT_FILE = "output.log"
POLL_SECONDS = 0.1
COMMIT_WAIT_SECONDS = 30.0
DB_RETRY_SECONDS = 60.0
DB_WAIT_SECONDS = 30.0  # busy_timeout of the wrapper's connection
NOTE_PREFIX = "[training-wrapper]"
# The "last ERROR line" of a failed run: a log level word, FAILED, or a Python exception line.
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL|FATAL|FAILED)\b|^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception)\b")
TAIL_BYTES = 64 * 1024


def write_json_atomic(path: Path, value: dict) -> None:
    """Write `value` to `path` through a temporary file and os.replace: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[dict]:
    """A JSON object from `path`, or None when missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def process_alive(pid: Optional[int], create_time: Optional[float]) -> bool:
    """Whether `pid` runs and is the same process (same create time), not a zombie or a reused pid."""
    if not pid:
        return False
    try:
        proc = psutil.Process(int(pid))
        if create_time is not None and abs(proc.create_time() - float(create_time)) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to process group `pgid`; False when the group is already empty."""
    try:
        os.killpg(pgid, signum)
        return True
    except ProcessLookupError:
        return False


def last_error_line(output: Path) -> tuple[Optional[str], Optional[str]]:
    """(last ERROR-like line, last non-empty line) of the command's output, ignoring our own notes."""
    try:
        with open(output, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None, None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(NOTE_PREFIX)]
    error = next((line for line in reversed(lines) if ERROR_LINE.search(line)), None)
    return (error[:500] if error else None), (lines[-1][:500] if lines else None)


def describe_failure(exit_code: int, output: Path) -> str:
    """The error message of a failed run: its last ERROR line, else the exit code (and last output line)."""
    error, last = last_error_line(output)
    if error:
        return error
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        reason = f"killed by {name} (exit code {exit_code})"
    else:
        reason = f"exit code {exit_code}"
    return f"{reason}; last output: {last}" if last else reason


def apply_outcome(conn: sqlite3.Connection, row_id: int, outcome: dict) -> bool:
    """Close the session's row (training_sessions.id `row_id`) with `outcome` if it is still running; True when this call closed it."""
    ended = outcome.get("ended_at") or utc_now()
    deadline = time.monotonic() + DB_RETRY_SECONDS
    from database import transaction  # here, not up front: see the imports above

    def close_row() -> bool:
        return conn.execute(
            "UPDATE training_sessions SET status = ?, exit_code = ?, error_message = ?, end_time = ?,"
            " duration_seconds = COALESCE(duration_seconds,"  # the run's own figure, if ingested, wins
            " ROUND((julianday(?) - julianday(start_time)) * 86400, 1))"
            " WHERE id = ? AND status = 'running'",
            (outcome["status"], outcome.get("exit_code"), outcome.get("error_message"), ended, ended,
             row_id)).rowcount == 1

    if conn.in_transaction:  # the caller's (the ingester's reconcile): it commits, and counts the commit
        return close_row()
    while True:
        try:
            with transaction(conn):  # counted, so every worker's kept derivations see the session end
                return close_row()
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def finish_event(outcome: dict) -> tuple[str, str, str]:
    """(event_type, severity, message) of a session's end."""
    status, sid = outcome["status"], outcome["session_id"]
    if status == "completed":
        return "training_completed", "info", f"training session {sid} completed"
    if status == "stopped":
        return "training_stopped", "info", f"training run stopped from the dashboard (session {sid})" + (
            f": {outcome['error_message']}" if outcome.get("error_message") else "")
    return "training_failed", "error", f"training session {sid} failed: {outcome.get('error_message')}"


def record_finish_event(conn: sqlite3.Connection, outcome: dict) -> None:
    """Record the end of a session once (the event key makes a second recording a no-op)."""
    from dashboard.store import events  # imported late: it brings the app's modules in

    event_type, severity, message = finish_event(outcome)
    metadata = {k: outcome.get(k) for k in ("session_id", "status", "exit_code", "killed", "lost")}
    events.record_event(conn, event_type, message, severity=severity, source="training", metadata=metadata,
                        # "number": the key's ids before migration 7 were row ids, which new numbers repeat
                        key=f"training-session-end:number:{outcome['session_id']}")


class Wrapper:
    """One supervised run, described by its spec.json."""

    def __init__(self, spec_path: Path):
        self.run_dir = spec_path.parent
        self.spec = json.loads(spec_path.read_text(encoding="utf-8"))
        self.session_id = int(self.spec["session_id"])  # the session's number (the API's session_id)
        self.row_id = int(self.spec.get("row_id", self.session_id))  # its training_sessions row
        self.grace = float(self.spec.get("grace_seconds", 10))
        self.output = Path(self.spec.get("output_path") or self.run_dir / OUTPUT_FILE)

    # --- helpers ---

    def stop_requested(self) -> bool:
        if not _STOP_REQUESTED_AT and (self.run_dir / STOP_FILE).exists():
            _STOP_REQUESTED_AT.append(time.monotonic())
        return bool(_STOP_REQUESTED_AT)

    def note(self, text: str) -> None:
        """A line of ours in the output log (marked, so it is never taken for the command's error)."""
        try:
            with open(self.output, "a", encoding="utf-8") as handle:
                handle.write(f"{NOTE_PREFIX} {utc_now()} {text}\n")
        except OSError:
            pass
        print(f"{NOTE_PREFIX} session {self.session_id}: {text}", file=sys.stderr, flush=True)

    def wait_for_commit(self, conn: sqlite3.Connection) -> bool:
        """True once the session row names this process; False if it never does (the start rolled back)."""
        deadline = time.monotonic() + COMMIT_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                row = conn.execute("SELECT pid, status FROM training_sessions WHERE id = ?",
                                   (self.row_id,)).fetchone()
            except sqlite3.OperationalError:
                row = None
            if row is not None and row["pid"] == os.getpid():
                return row["status"] == "running"
            time.sleep(0.02)
        return False

    # --- the run ---

    def run(self) -> int:
        import database  # here, not up front: see the imports above

        conn = database.connect(self.spec["database"], busy_timeout=DB_WAIT_SECONDS)  # waits for writers
        if not self.wait_for_commit(conn):
            print(f"{NOTE_PREFIX} session {self.session_id} was never committed; nothing started",
                  file=sys.stderr, flush=True)
            return 2
        # A stop that came before this point still starts the command, and supervise() sends it SIGTERM at
        # once: the session then ends with the command's real exit code, like any other stop.
        argv, cwd = self.spec["argv"], self.spec["cwd"]
        try:
            with open(self.output, "ab") as out:
                child = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, process_group=0, close_fds=True)
        except OSError as err:
            if not os.path.isdir(cwd):
                reason = f"working directory not found: {cwd}"
            elif isinstance(err, FileNotFoundError):
                reason = f"command not found: {argv[0]}"
            else:
                reason = f"cannot start {argv[0]}: {err.strerror or err}"
            self.note(reason)
            return self.finish(conn, "failed", None, reason)
        try:
            create_time = psutil.Process(child.pid).create_time()
        except psutil.Error:
            create_time = None
        write_json_atomic(self.run_dir / CHILD_FILE,
                          {"pid": child.pid, "pgid": child.pid, "create_time": create_time, "started_at": utc_now()})
        exit_code, stopped, killed = self.supervise(child)
        if stopped:
            how = f"SIGKILL after the {self.grace:g} s grace period" if killed else "SIGTERM"
            return self.finish(conn, "stopped", exit_code, f"stopped on request ({how})", killed=killed)
        if exit_code == 0:
            return self.finish(conn, "completed", 0, None, killed=killed)
        return self.finish(conn, "failed", exit_code, describe_failure(exit_code, self.output), killed=killed)

    def supervise(self, child: subprocess.Popen) -> tuple[int, bool, bool]:
        """Wait for the child, forwarding a stop request; then empty its group. (exit code, stopped, killed)."""
        pgid, term_at, killed = child.pid, None, False
        while True:
            try:
                exit_code = child.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            if term_at is None and self.stop_requested():
                term_at = time.monotonic()
                signal_group(pgid, signal.SIGTERM)
                self.note(f"stop requested: SIGTERM sent to process group {pgid}")
            if term_at is not None and not killed and time.monotonic() - term_at >= self.grace:
                signal_group(pgid, signal.SIGKILL)
                killed = True
                self.note(f"still running {self.grace:g} s after SIGTERM: SIGKILL sent to process group {pgid}")
        stopped = term_at is not None
        # The leader is gone; whatever it left in its group goes too (TERM, then KILL after the grace).
        if group_alive(pgid) and not killed:
            if term_at is None:
                term_at = time.monotonic()
                signal_group(pgid, signal.SIGTERM)
                self.note(f"the command exited but left processes in group {pgid}: SIGTERM sent")
            while group_alive(pgid):
                if time.monotonic() - term_at >= self.grace:
                    signal_group(pgid, signal.SIGKILL)
                    killed = True
                    self.note(f"SIGKILL sent to what was left of process group {pgid}")
                    break
                time.sleep(POLL_SECONDS)
        return exit_code, stopped, killed

    def finish(self, conn: sqlite3.Connection, status: str, exit_code: Optional[int], error: Optional[str],
               killed: bool = False) -> int:
        """Write the outcome to exit_status.json, then to the session row, then as an event."""
        outcome = {"session_id": self.session_id, "status": status, "exit_code": exit_code, "error_message": error,
                   "ended_at": utc_now(), "stop_requested": bool(_STOP_REQUESTED_AT), "killed": killed}
        write_json_atomic(self.run_dir / EXIT_FILE, outcome)
        self.note(f"session ended: {status}" + (f", exit code {exit_code}" if exit_code is not None else ""))
        try:
            if apply_outcome(conn, self.row_id, outcome):
                record_finish_event(conn, outcome)
        except Exception as err:  # the file above still has the outcome; the dashboard reconciles from it
            print(f"{NOTE_PREFIX} could not record the outcome in the database: {err}", file=sys.stderr, flush=True)
        finally:
            conn.close()
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: dashboard/training/wrapper.py <run_dir>/spec.json", file=sys.stderr)
        return 2
    return Wrapper(Path(argv[1])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
