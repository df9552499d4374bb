"""gunicorn settings for production (`gunicorn --config gunicorn.conf.py app:app`); values from .env/environment."""
import os
import shutil
import sys
from pathlib import Path

from dotenv import load_dotenv

from dashboard.ops import instance_lock, malloc_tuning, startup
from dashboard.config import PROJECT_DIR, load_config

load_dotenv(PROJECT_DIR / ".env")
_settings = load_config(os.environ)

bind = f"{_settings['HOST']}:{_settings['PORT']}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Threads, not sync workers: an open /api/stream holds a thread, and a sync worker would be killed
# by `timeout` mid-stream. STREAM_MAX_CLIENTS keeps threads free for REST calls.
# gunicorn_worker.JsonErrorWorker is gthread whose own refusals (414, 431, 400) are JSON like the app's errors.
worker_class = "dashboard.web.gunicorn_worker.JsonErrorWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 30  # under gthread, a heartbeat check of the worker, not a limit per request
graceful_timeout = 20  # stopping: requests in flight get this long; open streams end at once (below)
keepalive = 5
# Recycle workers now and then so slow leaks cannot grow. Rarely: the caches are bounded in bytes, and a
# replacement costs a worker's capacity for a second or two (under 1,000 requests a second, 100,000 meant one
# every two minutes). The workers share the load evenly, so they reach the count together: a jitter of half
# keeps them from being replaced at the same moment, which leaves no worker to answer.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000000"))
max_requests_jitter = max_requests // 2
# Requests per kept-alive connection, then it is closed (the worker class reads it; a bad value stops the start here).
_keepalive_requests = int(os.environ.get("GUNICORN_KEEPALIVE_REQUESTS", "100"))
limit_request_line = 4094
limit_request_fields = 100
# gunicorn believes no forwarded header itself (its default trusts X-Forwarded-Proto from 127.0.0.1, and
# FORWARDED_ALLOW_IPS in the environment): the app's TRUSTED_PROXY_HOPS decides, for the client's address
# and scheme alike, the same under gunicorn and `python app.py` (docs/operations.md "Behind nginx").
forwarded_allow_ips = ""
# Off, so that a reload (SIGHUP) loads new code. The app is fork-safe all the same (tests/test_database_reliability.py
# runs it with --preload): no SQLite connection, lock or thread of the master reaches a worker (see post_fork).
preload_app = False
# The app logs one line per request itself; set GUNICORN_ACCESS_LOG=- for gunicorn's access log too.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"

# The state folder (DATABASE_PATH's) holds everything of this instance: one instance per folder (on_starting).
_state_dir = instance_lock.state_folder(_settings)
# Prometheus multiprocess mode: each worker writes its counters here; /metrics sums them.
# Must be in the environment before any worker imports prometheus_client.
_metrics_dir = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or _state_dir / "prometheus")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)
# gunicorn's control socket (gunicornc -s <path>), one per instance: gunicorn's default is one path for
# every server of the user ($XDG_RUNTIME_DIR/gunicorn.ctl), which the first to stop removes for all.
control_socket = str(_state_dir / "gunicorn.ctl")

# Set in the master, inherited by every worker it forks: freed parse buffers go back to the system.
malloc_tuning.keep_heap_small()


def on_starting(server):
    """Claim the state folder for this instance (or stop, naming the instance that has it), and start
    with empty metric files (counters restart with the process, as Prometheus expects) when this start
    took the folder fresh: a re-exec (USR2) or a restart whose predecessor still runs keeps them."""
    try:
        claim = startup.start_instance(_settings, server.log)
    except instance_lock.StateFolderInUse as err:
        server.log.error("refusing to start: %s", err)
        sys.exit(1)
    if claim.fresh:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
    _metrics_dir.mkdir(parents=True, exist_ok=True)


def pre_exec(server):
    """USR2: the new master inherits this instance's state lock across the exec."""
    instance_lock.keep_across_exec()


def post_fork(server, worker):
    """Log an error when the master had SQLite connections open at the fork (this worker now shares them)."""
    database = sys.modules.get("database")  # imported in the master only under --preload
    inherited = database.open_connections() if database else []
    if inherited:
        server.log.error("fork safety: %d SQLite connection(s) open in the master at the fork of worker %s: %s",
                         len(inherited), worker.pid, ", ".join(f"{path} (opened by pid {pid})" for pid, path in inherited))


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the multiprocess files."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """End this worker's open event streams as soon as it stops, instead of waiting out graceful_timeout.

    A worker stops on SIGTERM (shutdown, reload) and also after max_requests, which sends no signal; both
    clear `worker.alive`, which a thread watches."""
    import threading
    import time

    from dashboard.web import stream
    def watch():
        while worker.alive:
            time.sleep(stream.WAKE_SECONDS)
        stream.shutting_down.set()

    threading.Thread(target=watch, name="stream-shutdown-watch", daemon=True).start()
