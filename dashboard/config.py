"""Typed configuration read once from the environment (see .env.example)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

PROJECT_DIR = Path(__file__).resolve().parents[1]  # the checkout: .env, var/, examples/
VERSION = "2.0.0"
# Agents an answer lists one by one (MAX_AGENTS); the rest are counted and named in a warning.
DEFAULT_MAX_AGENTS = 1000

# The React dev servers (create-react-app and Vite) on this machine.
DEV_ORIGINS = "http://localhost:3000,http://127.0.0.1:3000,http://localhost:5173,http://127.0.0.1:5173"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A configuration variable has a value the app cannot use."""


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _number(environ: Mapping[str, str], name: str, default: float, lo: float, hi: float, kind=float):
    raw = environ.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {raw!r}")
    return value


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (case-insensitive); the first when unset."""
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _path(environ: Mapping[str, str], name: str, default: Path) -> Path:
    raw = environ.get(name, "").strip()
    path = Path(raw).expanduser() if raw else default
    return path if path.is_absolute() else (PROJECT_DIR / path)


def load_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """Return every setting from `environ`, typed and defaulted; raise ConfigError on a bad value."""
    return {
        "ENVIRONMENT": environ.get("ENVIRONMENT", "local").strip().lower() or "local",
        "HOST": environ.get("HOST", "127.0.0.1").strip() or "127.0.0.1",
        "PORT": _number(environ, "PORT", 5000, 1, 65535, int),
        "DEBUG": _bool(environ, "DEBUG", False),
        "ORCHESTRATOR_PATH": _path(environ, "ORCHESTRATOR_PATH", PROJECT_DIR / "examples" / "orchestrator"),
        "ORCHESTRATOR_TIMEZONE": environ.get("ORCHESTRATOR_TIMEZONE", "").strip(),
        "DATABASE_PATH": _path(environ, "DATABASE_PATH", PROJECT_DIR / "var" / "dashboard.db"),
        "LOG_LEVEL": environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO",
        "LOG_FILE": _path(environ, "LOG_FILE", PROJECT_DIR / "var" / "dashboard.log")
        if environ.get("LOG_FILE", None) != "" else None,
        "QUALITY_THRESHOLD": _number(environ, "QUALITY_THRESHOLD", 7.0, 0, 10),
        "MAX_AGENTS": _number(environ, "MAX_AGENTS", DEFAULT_MAX_AGENTS, 1, 1_000_000, int),
        "HEALTH_DISK_PATH": environ.get("HEALTH_DISK_PATH", "/").strip() or "/",
        "MAX_CONTENT_LENGTH": _number(environ, "MAX_CONTENT_LENGTH", 1024 * 1024, 1024, 100 * 1024 * 1024, int),
        # Persistence and alerts
        "INGEST_SECONDS": _number(environ, "INGEST_SECONDS", 1, 0, 3600),
        "HEALTH_SAMPLE_SECONDS": _number(environ, "HEALTH_SAMPLE_SECONDS", 30, 0, 3600, int),
        "HEALTH_RETENTION_DAYS": _number(environ, "HEALTH_RETENTION_DAYS", 30, 1, 3650, int),
        **{f"ALERT_{res}_{level}": _number(environ, f"ALERT_{res}_{level}", default, 0, 100)
           for res in ("CPU", "MEMORY", "DISK") for level, default in (("WARNING", 85.0), ("CRITICAL", 95.0))},
        # Alert notifications (docs/notifications.md); the URLs are checked by dashboard/notify/targets.py
        "ALERT_WEBHOOK_URLS": [u.strip() for u in environ.get("ALERT_WEBHOOK_URLS", "").split(",") if u.strip()],
        "ALERT_WEBHOOK_FORMAT": _choice(environ, "ALERT_WEBHOOK_FORMAT", ("json", "slack")),
        "ALERT_WEBHOOK_SECRET": environ.get("ALERT_WEBHOOK_SECRET", "").strip(),
        "ALERT_WEBHOOK_MIN_SEVERITY": _choice(environ, "ALERT_WEBHOOK_MIN_SEVERITY", ("warning", "info", "critical")),
        "ALERT_WEBHOOK_TIMEOUT_SECONDS": _number(environ, "ALERT_WEBHOOK_TIMEOUT_SECONDS", 10, 0.1, 120),
        "ALERT_WEBHOOK_NOTIFY_COMPLETED": _bool(environ, "ALERT_WEBHOOK_NOTIFY_COMPLETED", False),
        "ALERT_WEBHOOK_REPEAT_MINUTES": _number(environ, "ALERT_WEBHOOK_REPEAT_MINUTES", 240, 0, 10080),
        "ALERT_WEBHOOK_RETRY_HOURS": _number(environ, "ALERT_WEBHOOK_RETRY_HOURS", 48, 24, 720),
        "ALERT_WEBHOOK_BACKOFF_MAX_SECONDS": _number(environ, "ALERT_WEBHOOK_BACKOFF_MAX_SECONDS", 900, 0.1, 86400),
        "NOTIFY_SECONDS": _number(environ, "NOTIFY_SECONDS", 1, 0, 3600),
        "DASHBOARD_PUBLIC_URL": environ.get("DASHBOARD_PUBLIC_URL", "").strip().rstrip("/"),
        # Training control
        "TRAINING_COMMAND": environ.get("TRAINING_COMMAND", "").strip() or "python orchestrator.py train --verbose",
        "TRAINING_STOP_GRACE_SECONDS": _number(environ, "TRAINING_STOP_GRACE_SECONDS", 10, 0, 3600),
        "TRAINING_RUNS_DIR": _path(environ, "TRAINING_RUNS_DIR", PROJECT_DIR / "var" / "runs"),
        # Cloud provider and API keys
        "CLOUD_API_URL": environ.get("CLOUD_API_URL", "").strip().rstrip("/"),
        "CLOUD_API_KEY": environ.get("CLOUD_API_KEY", "").strip(),
        "CLOUD_TIMEOUT_SECONDS": _number(environ, "CLOUD_TIMEOUT_SECONDS", 10, 0.1, 300),
        "CLOUD_ALLOW_INSECURE_HTTP": _bool(environ, "CLOUD_ALLOW_INSECURE_HTTP", False),
        "CLOUD_CACHE_SECONDS": _number(environ, "CLOUD_CACHE_SECONDS", 2, 0, 3600),
        "CLOUD_CONNECT_TIMEOUT_SECONDS": _number(environ, "CLOUD_CONNECT_TIMEOUT_SECONDS", 3.05, 0.1, 60),
        "CLOUD_BREAKER_FAILURES": _number(environ, "CLOUD_BREAKER_FAILURES", 5, 0, 1000, int),
        "CLOUD_BREAKER_RESET_SECONDS": _number(environ, "CLOUD_BREAKER_RESET_SECONDS", 30, 0.1, 3600),
        "CLOUD_MAX_RESPONSE_BYTES": _number(environ, "CLOUD_MAX_RESPONSE_BYTES", 8 << 20, 1024, 1 << 30, int),
        "CLOUD_MAX_CONCURRENT_CALLS": _number(environ, "CLOUD_MAX_CONCURRENT_CALLS", 4, 1, 256, int),
        # A cloud proxy takes writes without keys of its own only when this says so (docs/access.md)
        "CLOUD_ALLOW_ANONYMOUS_WRITES": _bool(environ, "CLOUD_ALLOW_ANONYMOUS_WRITES", False),
        # Browser access: exact origins allowed to call the API (comma list); live stream limits
        "CORS_ORIGINS": [o.strip().rstrip("/") for o in environ.get("CORS_ORIGINS", DEV_ORIGINS).split(",") if o.strip()],
        "STREAM_MAX_CLIENTS": _number(environ, "STREAM_MAX_CLIENTS", 4, 0, 1000, int),
        "STREAM_HEARTBEAT_SECONDS": _number(environ, "STREAM_HEARTBEAT_SECONDS", 15, 0.1, 300),
        "STREAM_HEALTH_SECONDS": _number(environ, "STREAM_HEALTH_SECONDS", 5, 0.1, 3600),
        "STREAM_MAX_SECONDS": _number(environ, "STREAM_MAX_SECONDS", 600, 1, 86400),
        "RESPONSE_CACHE_SECONDS": _number(environ, "RESPONSE_CACHE_SECONDS", 1, 0, 60),
        "RESPONSE_CACHE_MAX_BYTES": _number(environ, "RESPONSE_CACHE_MAX_BYTES", 32 << 20, 64 << 10, 1 << 40, int),
        "PARSE_CACHE_MAX_BYTES": _number(environ, "PARSE_CACHE_MAX_BYTES", 64 << 20, 1 << 20, 1 << 40, int),
        "POST_RATE_LIMIT": _number(environ, "POST_RATE_LIMIT", 30, 0, 100000, int),
        # Reverse proxies in front whose X-Forwarded-For / -Proto are believed (0: none, a direct client)
        "TRUSTED_PROXY_HOPS": _number(environ, "TRUSTED_PROXY_HOPS", 0, 0, 5, int),
        "API_KEY": environ.get("API_KEY", "").strip(),
        "REQUIRE_AUTH_FOR_READS": _bool(environ, "REQUIRE_AUTH_FOR_READS", False),
        # How often each worker writes the `last used` time of the keys it checked (docs/access.md)
        "API_KEY_LAST_USED_SECONDS": _number(environ, "API_KEY_LAST_USED_SECONDS", 60, 0.1, 3600),
    }
