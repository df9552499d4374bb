"""Records every POST under /api/ (any outcome: 2xx, 4xx, 401, 403, 5xx) in the audit (dashboard/store/audit.py):
the key's name (auth.caller), the client's address and the status answered.

A POST that writes carries its audit row in the same commit (database.ride_with_the_requests_write), with
the status its route answers on success; the rare answer that turns out otherwise corrects the row after.
A POST refused before it writes (401, 400, 429...) is recorded once its answer is made; of a flood of POSTs
refused by the rate limit, the first refusal of each client, endpoint and minute."""
from __future__ import annotations

import logging
import sqlite3

from flask import Flask, current_app, request

import database
from dashboard.store import audit
from dashboard.web import auth, endpoints, hardening

log = logging.getLogger(__name__)
RIDER = "audit"


def init_app(app: Flask) -> None:
    """Ride each audited POST's write; record or correct it after its answer is made (a failure to record
    is logged, never fails the answer). Set up after the hooks that may refuse a POST before its view
    (auth, the rate limit), so their own writes do not carry the row."""

    @app.before_request
    def ride_with_the_write():
        if audited():
            database.ride_with_the_requests_write(RIDER, record_expected)

    @app.after_request
    def record_write(response):
        if audited() and not (response.status_code == 429 and hardening.refused_before()):
            try:
                settle(response.status_code)
            except (sqlite3.Error, database.DatabaseUnavailable) as err:
                log.warning("write not recorded in the audit: %s %s answered %s: %s", request.method,
                            request.path, response.status_code, err)
        return response


def audited() -> bool:
    """Whether this request is a write the audit records: a POST under /api/."""
    return request.method == "POST" and (request.path == "/api" or request.path.startswith("/api/"))


def record_expected(conn: sqlite3.Connection) -> tuple[int, int]:
    """The rider: this write as its route answers on success (the first of its row's codes); (row id, status)."""
    row = endpoints.rows_of(current_app).get(request.endpoint)
    status = row.codes[0] if row else 200
    return audit.insert(conn, *_who(), status), status


def settle(status: int) -> None:
    """Record this write with the status answered: alone if no write carried it, else correct it if needed."""
    carried = database.carried(RIDER)
    if carried is None:  # refused before it wrote, wrote nothing here (cloud mode), or its rider failed
        database.drop_rider(RIDER)
        audit.record(database.get_db(), *_who(), status)
    elif carried[1] != status:
        audit.correct(database.get_db(), carried[0], *_who(), status)


def _who() -> tuple:
    return auth.caller(), request.remote_addr, request.method, request.path
