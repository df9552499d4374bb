"""The Flask app factory: `gunicorn app:app` or `python app.py`."""
from __future__ import annotations

import logging
import os
import time

from dotenv import load_dotenv
from flask import Flask

import database
from dashboard.config import PROJECT_DIR, load_config
from dashboard.notify.notifier import Notifier
from dashboard.notify.targets import targets_of
from dashboard.ops.ingester import Ingester
from dashboard.ops import startup
from dashboard.ops.instance_lock import StateFolderInUse
from dashboard.ops.logging_setup import configure_logging
from dashboard.ops.sampler import Sampler
from dashboard.web import audit, auth, endpoints, errors, hardening, monitoring, response_cache, routes, validation
from dashboard.web.cors import enable_cors
from data_providers import DataProviderFactory

log = logging.getLogger("dashboard")


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment (or from `test_config` over the defaults, for tests)."""
    if test_config is None:
        load_dotenv(PROJECT_DIR / ".env")
        settings = load_config(os.environ)
    else:
        settings = {**load_config({}), **test_config}
    app = Flask(__name__)
    # Paths are matched as sent: "//" is no route (a 404, not a redirect to the merged path), and an
    # <int:...> part takes ASCII digits only; a <project:...> part is never the route beside it (`create`).
    # Set before the routes are added.
    app.url_map.merge_slashes = False
    app.url_map.converters["int"] = validation.AsciiIntegerConverter
    app.url_map.converters["project"] = validation.ProjectIdConverter
    app.config.from_mapping(settings)
    app.json.sort_keys = False
    configure_logging(app)
    if test_config is None:
        # One instance per state folder. Under gunicorn the master has claimed it (on_starting) and this
        # worker, forked from it, shares that claim; `python app.py` and `flask run` claim it here.
        startup.start_instance(settings, log)
    database.init_app(app)
    errors.init_app(app)
    auth.init_app(app)
    monitoring.observe_requests(app)  # before hardening, so it sees the final status (a 304, say)
    hardening.init_app(app)
    audit.init_app(app)  # after auth and the rate limit: a write refused there carries no audit row
    response_cache.init_app(app)  # after auth: a cached answer is only for those allowed to read
    hardening.trust_proxy(app)  # last WSGI layer added, so the outermost: everything sees the client's address
    app.extensions["provider"] = DataProviderFactory.get_provider(settings["ENVIRONMENT"], settings)
    app.extensions["started_at"] = time.monotonic()
    routes.register(app, endpoints.TABLE)
    enable_cors(app)
    start_sampler(app)
    start_ingester(app)
    start_notifier(app)
    return app


def start_sampler(app: Flask) -> None:
    """Run the health sampler thread (HEALTH_SAMPLE_SECONDS > 0); one process across workers samples."""
    if app.config["HEALTH_SAMPLE_SECONDS"] <= 0:
        return
    app.extensions["sampler"] = Sampler(
        app.config["DATABASE_PATH"], app.config["HEALTH_SAMPLE_SECONDS"], app.config["HEALTH_RETENTION_DAYS"],
        app.config["HEALTH_DISK_PATH"]).start()


def start_ingester(app: Flask) -> None:
    """For a provider that reads files: the ingester (extensions["ingester"]), its thread running when
    INGEST_SECONDS > 0; one process across workers records."""
    if not app.extensions["provider"].reads_files:
        return
    ingester = app.extensions["ingester"] = Ingester(app.config)
    if app.config["INGEST_SECONDS"] > 0:
        ingester.start()


def start_notifier(app: Flask) -> None:
    """For a provider that reads files, with ALERT_WEBHOOK_URLS set: the notifier (extensions["notifier"]), its
    thread running when NOTIFY_SECONDS > 0; one process across workers sends. A bad URL stops the start."""
    targets = targets_of(app.config)
    if not targets or not app.extensions["provider"].reads_files:
        return
    notifier = app.extensions["notifier"] = Notifier(app.config)
    if app.config["NOTIFY_SECONDS"] > 0:
        notifier.start()


def __getattr__(name: str):
    # `gunicorn app:app` reads this attribute; building the app lazily keeps imports free of side effects.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)


if __name__ == "__main__":
    try:
        server = create_app()
    except StateFolderInUse as refusal:
        raise SystemExit(f"refusing to start: {refusal}") from None
    debug = server.config["DEBUG"] and server.config["HOST"] in ("127.0.0.1", "localhost", "::1")
    if server.config["DEBUG"] and not debug:
        log.warning("DEBUG ignored: the debugger is only allowed on a loopback HOST")
    server.run(host=server.config["HOST"], port=server.config["PORT"], debug=debug)
