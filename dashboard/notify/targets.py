"""The webhook targets of ALERT_WEBHOOK_URLS, checked once at start-up.

A target is known in the database by a hash of its URL and shown by its host only: a webhook URL often
carries a token in its path (Slack's, Mattermost's), so the URL is never stored, logged or answered.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from dashboard.config import ConfigError


@dataclass(frozen=True)
class Target:
    """One webhook: its URL, the key its deliveries are stored under, and its host for display."""

    url: str
    key: str
    host: str

    def __repr__(self) -> str:  # never the URL, which may hold a token
        return f"Target({self.host})"


def target_of(url: str, allow_insecure_http: bool) -> Target:
    """A checked target: https (http only when CLOUD_ALLOW_INSECURE_HTTP), a host, no credentials or fragment."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("ALERT_WEBHOOK_URLS has an invalid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("ALERT_WEBHOOK_URLS: each URL must be https:// with a host "
                          f"(one for {parts.hostname!r} is not)")
    if parts.scheme == "http" and not allow_insecure_http:
        raise ConfigError(f"ALERT_WEBHOOK_URLS: the URL for {parts.hostname} must use https:// (alerts and their "
                          "signature would travel in clear text). Set CLOUD_ALLOW_INSECURE_HTTP=true only for a "
                          "trusted local network.")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ConfigError(f"ALERT_WEBHOOK_URLS: the URL for {parts.hostname} must not hold credentials or a fragment")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return Target(url, hashlib.sha256(url.encode("utf-8")).hexdigest()[:16], host)


def targets_of(config: dict) -> list[Target]:
    """Every target of ALERT_WEBHOOK_URLS (none: notifications are off); ConfigError naming a bad one."""
    seen: dict[str, Target] = {}
    for url in config.get("ALERT_WEBHOOK_URLS") or []:
        target = target_of(url, bool(config.get("CLOUD_ALLOW_INSECURE_HTTP")))
        seen.setdefault(target.key, target)
    return list(seen.values())
