"""The API's timestamps: ISO 8601 in UTC to the second, "%Y-%m-%dT%H:%M:%SZ" ("2025-11-14T03:00:01Z")."""
from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """Now, as the API's ISO 8601 UTC string."""
    return to_iso(datetime.now(timezone.utc))


def to_iso(dt: datetime) -> str:
    """`dt` as the API's string: an aware time converted to UTC, a naive one taken as UTC already;
    fractions of a second dropped."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.isoformat(timespec="seconds") + "Z"  # strftime would not pad a year before 1000


def parse_iso(text: str) -> datetime:
    """The datetime of an ISO 8601 string ("Z" or an offset gives an aware one); ValueError if not one."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
