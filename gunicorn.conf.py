"""gunicorn settings; bind address from HOST/PORT (.env or environment)."""
import os

from dotenv import load_dotenv

from config import PROJECT_DIR, load_config

load_dotenv(PROJECT_DIR / ".env")
_settings = load_config(os.environ)

bind = f"{_settings['HOST']}:{_settings['PORT']}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 20
accesslog = None  # the app logs one line per request itself
