"""The Flask app factory: `gunicorn app:app` or `python app.py`."""
from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import time

from dotenv import load_dotenv
from flask import Flask, request
from flask_cors import CORS

from dashboard.web import auth
import database
from dashboard.web import endpoints
from dashboard.web import errors
from dashboard.web import hardening
from dashboard.web import monitoring
from dashboard.web import response_cache
from dashboard.web import routes
from dashboard.web import validation
from dashboard.config import PROJECT_DIR, load_config
from data_providers import DataProviderFactory
from dashboard.ops.ingester import Ingester
from dashboard.ops.sampler import Sampler

log = logging.getLogger("dashboard")
_log_listener: logging.handlers.QueueListener | None = None


def configure_logging(app: Flask) -> None:
    """Log to the console and, when LOG_FILE is set, to that file (reopened after logrotate).

    Requests only put records on a queue; one thread per process formats and writes them, so a
    request never waits on the disk or the journal.
    """
    global _log_listener
    root = logging.getLogger()
    root.setLevel(app.config["LOG_LEVEL"])
    formatter = logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if app.config.get("LOG_FILE"):
        os.makedirs(os.path.dirname(app.config["LOG_FILE"]), exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(app.config["LOG_FILE"], encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
    if _log_listener is not None:
        _log_listener.stop()
    for handler in list(root.handlers):
        if getattr(handler, "_dashboard", False):
            root.removeHandler(handler)
    records: queue.SimpleQueue = queue.SimpleQueue()
    to_queue = logging.handlers.QueueHandler(records)
    to_queue._dashboard = True
    root.addHandler(to_queue)
    _log_listener = logging.handlers.QueueListener(records, *handlers)
    _log_listener.start()


@atexit.register
def _flush_logs() -> None:
    if _log_listener is not None:
        _log_listener.stop()


def _listen_again_after_fork() -> None:
    # The listener thread stays in the parent (gunicorn's master under --preload): a child needs its own.
    global _log_listener
    if _log_listener is not None:
        records: queue.SimpleQueue = queue.SimpleQueue()
        for handler in logging.getLogger().handlers:
            if getattr(handler, "_dashboard", False):
                handler.queue = records
        _log_listener = logging.handlers.QueueListener(records, *_log_listener.handlers)
        _log_listener.start()


os.register_at_fork(after_in_child=_listen_again_after_fork)


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
    database.init_app(app)
    errors.init_app(app)
    auth.init_app(app)
    monitoring.observe_requests(app)  # before hardening, so it sees the final status (a 304, say)
    hardening.init_app(app)
    response_cache.init_app(app)  # after auth: a cached answer is only for those allowed to read
    hardening.trust_proxy(app)  # last WSGI layer added, so the outermost: everything sees the client's address
    app.extensions["provider"] = DataProviderFactory.get_provider(settings["ENVIRONMENT"], settings)
    app.extensions["started_at"] = time.monotonic()
    routes.register(app, endpoints.TABLE)
    enable_cors(app)
    start_sampler(app)
    start_ingester(app)
    return app


def enable_cors(app: Flask) -> None:
    """Let the browsers of CORS_ORIGINS (exact strings) call /api/; never credentials, never others."""
    origins = app.config["CORS_ORIGINS"]
    if not origins:
        return
    if "*" not in origins:
        @app.after_request  # registered first, so it runs after flask-cors' own hook
        def exact_origins_only(response):
            # flask-cors compares origins case-insensitively; browsers send them lower-case, so an
            # origin that differs from the configured string in any way is refused.
            vary = response.headers.get("Vary", "")
            if "Origin" not in vary:
                response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
            origin = request.headers.get("Origin")
            if origin is not None and origin not in origins:
                for header in [h for h in response.headers.keys() if h.lower().startswith("access-control-")]:
                    del response.headers[header]
            return response
    CORS(app, resources={r"/api/*": {"origins": "*" if "*" in origins else origins}},
         methods=["GET", "POST", "OPTIONS"], supports_credentials=False, expose_headers=["X-Data-Warnings", "Content-Disposition"], max_age=600)


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


def __getattr__(name: str):
    # `gunicorn app:app` reads this attribute; building the app lazily keeps imports free of side effects.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)


if __name__ == "__main__":
    server = create_app()
    debug = server.config["DEBUG"] and server.config["HOST"] in ("127.0.0.1", "localhost", "::1")
    if server.config["DEBUG"] and not debug:
        log.warning("DEBUG ignored: the debugger is only allowed on a loopback HOST")
    server.run(host=server.config["HOST"], port=server.config["PORT"], debug=debug)
