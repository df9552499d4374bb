"""gunicorn settings; bind address from HOST/PORT (.env or environment)."""
import os
import signal

from dotenv import load_dotenv

from config import PROJECT_DIR, load_config

load_dotenv(PROJECT_DIR / ".env")
_settings = load_config(os.environ)

bind = f"{_settings['HOST']}:{_settings['PORT']}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
# Each open /api/stream holds a thread; STREAM_MAX_CLIENTS keeps some free for REST calls.
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 30
graceful_timeout = 20
accesslog = None  # the app logs one line per request itself


def post_worker_init(worker):
    """On SIGTERM, end this worker's open event streams at once instead of waiting out graceful_timeout."""
    import stream

    stop_worker = worker.handle_exit

    def handle_exit(sig, frame):
        stream.shutting_down.set()
        stop_worker(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)
