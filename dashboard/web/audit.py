"""Records every POST under /api/ (any outcome: 2xx, 4xx, 401, 403, 5xx) in the audit (dashboard/store/audit.py):
the key's name (auth.caller), the client's address and the status answered."""
from __future__ import annotations

import logging
import sqlite3

from flask import Flask, request

import database
from dashboard.store import audit
from dashboard.web import auth

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Record each write after its answer is made (a failure to record is logged, never fails the answer)."""

    @app.after_request
    def record_write(response):
        if request.method == "POST" and (request.path == "/api" or request.path.startswith("/api/")):
            try:
                audit.record(database.get_db(), auth.caller(), request.remote_addr, request.method, request.path,
                             response.status_code)
            except (sqlite3.Error, database.DatabaseUnavailable) as err:
                log.warning("write not recorded in the audit: %s %s answered %s: %s", request.method,
                            request.path, response.status_code, err)
        return response
