"""Run ids: a training run's natural key, its start (else its end) in UTC, as an id the API's id check
accepts ("20261207T030001Z"); a second run that started in the same second gets ".2", then ".3"."""
from __future__ import annotations

import sqlite3
from datetime import timezone
from typing import Optional

from dashboard.timestamps import parse_iso

RUN_ID_FORMAT = "%Y%m%dT%H%M%SZ"  # the same as migration 7's strftime


def base_run_id(started_at: Optional[str], finished_at: Optional[str]) -> Optional[str]:
    """The id of a run that started (ISO UTC) at `started_at`, else ended at `finished_at`; None without either."""
    stamp = started_at or finished_at
    if not stamp:
        return None
    try:
        return parse_iso(stamp).astimezone(timezone.utc).strftime(RUN_ID_FORMAT)
    except ValueError:
        return None


def new_run_id(conn: sqlite3.Connection, started_at: Optional[str], finished_at: Optional[str]) -> Optional[str]:
    """The id for a run about to be recorded: its base id, or the base with ".N" when that is taken."""
    base = base_run_id(started_at, finished_at)
    if base is None:
        return None
    taken = {r[0] for r in conn.execute("SELECT run_id FROM training_sessions WHERE run_id = ? OR run_id LIKE ?",
                                        (base, base + ".%"))}
    n = 1
    while (candidate := base if n == 1 else f"{base}.{n}") in taken:
        n += 1
    return candidate
