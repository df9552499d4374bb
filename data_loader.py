"""Readers for the files a training orchestrator leaves behind.

Every `parse_*` is pure and total: it returns `(value, warnings)`, never raises,
caches unchanged files, refuses anything that is not a regular file and caps the
bytes it reads. Timestamps come back as naive local datetimes; `to_utc_iso`
attaches the orchestrator's time zone. Standard library only.
"""
from __future__ import annotations

import ast
import functools
import json
import math
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Iterable, Iterator, Optional

MAX_FILE_BYTES = 10 * 1024 * 1024
TAIL_MAX_BYTES = 1024 * 1024
BLOCK_SIZE = 64 * 1024
CACHE_SIZE = 1024
JSON_RETRY_SECONDS = 0.05
MAX_EVENT_CHARS = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024
PHASES = [("harvesting", "Data Harvesting"), ("validation", "Data Validation"),
          ("agent_training", "Agent Training"), ("production", "Production Run"),
          ("monitoring", "Monitoring & Logging"), ("cleanup", "Cleanup & Archiving")]
PHASE_BY_NAME = {name.lower(): key for key, name in PHASES}
AGENT_ID_RE = re.compile(r"^agent_[A-Za-z0-9]+$")

LOG_LINE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:[,.]\d+)?) - (.+?) - ([A-Z]+) - (.*)$")
TIMESTAMP_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?$")
REPORT_NAME_RE = re.compile(r"^daily_report_(\d{4}-\d{2}-\d{2})\.txt$")
MODULE_NAME_RE = re.compile(r"^(agent_[A-Za-z0-9]+)_(.+)\.py$")
NUM = r"[+-]?\d+(?:\.\d+)?"
REPORT_LINES = {
    "date": re.compile(r"DAILY TRAINING REPORT\s*\[(\d{4}-\d{2}-\d{2})\]"),
    "duration": re.compile(rf"^Training Duration:\s*({NUM})\s*minutes"),
    "system": re.compile(rf"^Overall System Quality:\s*({NUM})\s*/\s*10(?:\s*\(\s*({NUM})\s*%\s*\))?"),
    "agent": re.compile(r"^(.*?)\s*\((agent_[A-Za-z0-9]+)\)$"),
    "quality": re.compile(rf"^Quality:\s*({NUM})\s*/\s*10(?:\s*\(\s*({NUM})\s*vs yesterday\s*\))?"),
    "processing": re.compile(rf"^Processing:\s*({NUM})\s*(ms|s)\b"),
    "status": re.compile(r"^Status:\s*(.+)$"),
    "trajectory": re.compile(r"Current trajectory:\s*(UP|DOWN|STABLE)", re.I),
}
PHASE_LINE_RE = re.compile(rf"^Phase\s+\d+:\s*(.+?)\s+-\s+(START|COMPLETE)\b(?:\s*\(\s*({NUM})\s*s\b)?")
AGENT_START_RE = re.compile(r"^Training (agent_[A-Za-z0-9]+)\b.*-\s*START\b")
AGENT_LINE_RE = re.compile(r"^(agent_[A-Za-z0-9]+) training\b(?:\s+(completed|failed)\b)?")
RUN_STARTED, RUN_OK, RUN_FAILED = ("HOLISTIC TRAINING PIPELINE STARTED", "Holistic training completed successfully",
                                   "Holistic training failed")

_lock = threading.Lock()
_cache: "OrderedDict[tuple, tuple]" = OrderedDict()
_last_good: "OrderedDict[str, object]" = OrderedDict()
_tails: "OrderedDict[tuple, tuple]" = OrderedDict()
_listings: "OrderedDict[tuple, tuple]" = OrderedDict()
TAIL_CACHE_SIZE = 16
BISECT_STOP_BYTES = 64 * 1024
BISECT_PROBE_LINES = 200


# --- paths, times, bytes ---

def resolve_inside(root, relpath) -> Optional[Path]:
    """The real path of root/relpath with symlinks resolved, or None if it leaves the real root."""
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, relpath))
        return Path(real) if os.path.commonpath([real_root, real]) == real_root else None
    except (OSError, ValueError, TypeError):
        return None


def parse_naive_timestamp(s) -> Optional[datetime]:
    """A naive datetime from ISO (optional fraction) or log format "2025-11-14 03:00:01,532", else None."""
    m = TIMESTAMP_RE.match(s.strip()) if isinstance(s, str) else None
    if not m:
        return None
    year, month, day, hour, minute, second, fraction = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro)
    except ValueError:
        return None


def to_utc_iso(dt, tz: tzinfo) -> Optional[str]:
    """`YYYY-MM-DDTHH:MM:SSZ` for dt (naive means local time in tz), or None."""
    if not isinstance(dt, datetime):
        return None
    try:
        if dt.tzinfo is None:
            dt = tz.localize(dt) if hasattr(tz, "localize") else dt.replace(tzinfo=tz)  # pytz needs localize
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):
        return None


def open_regular(path: Path):
    """(fd, stat, warnings): an open descriptor of a regular file, or (None, None, [why not])."""
    name = path.name
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None, None, [f"{name}: not a regular file, refused"]
        # O_NONBLOCK: if the file was swapped for a FIFO after the stat, open still cannot hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None, None, [f"{name}: missing"]
    except (OSError, ValueError) as exc:
        return None, None, [f"{name}: cannot open ({getattr(exc, 'strerror', None) or exc})"]
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, None, [f"{name}: not a regular file, refused"]
    return fd, st, []


def _read_file(path: Path, cap: int = MAX_FILE_BYTES):
    """(bytes|None, warnings): the whole file if it is regular and at most `cap` bytes."""
    fd, st, warnings = open_regular(path)
    if fd is None:
        return None, warnings
    too_large = [f"{path.name}: too large ({st.st_size} bytes, limit {cap})"]
    try:
        if st.st_size > cap:
            return None, too_large
        chunks, total = [], 0
        while total <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return (None, too_large) if total > cap else (b"".join(chunks), [])
    except OSError as exc:
        return None, [f"{path.name}: cannot read ({exc.strerror})"]
    finally:
        os.close(fd)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").removeprefix("\ufeff")


# --- cache and JSON ---

def _cache_key(kind: str, path: Path):
    try:
        st = os.stat(path)
        # The inode names the file wherever the path points (cheaper than realpath on every call).
        return (kind, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        return None


def _remember(store: OrderedDict, key, value) -> None:
    with _lock:
        store[key] = value
        store.move_to_end(key)
        while len(store) > CACHE_SIZE:
            store.popitem(last=False)


def _cached(parser):
    """Serve a parser's result from the cache while the file's mtime and size are unchanged; never raise."""
    @functools.wraps(parser)
    def wrapper(path):
        path = Path(path)
        key = _cache_key(parser.__name__, path)
        with _lock:
            hit = _cache.get(key) if key else None
            if hit is not None:
                _cache.move_to_end(key)
        if hit is not None:
            return hit[0], list(hit[1])
        try:
            value, warnings = parser(path)
        except Exception as exc:  # totality is the contract; name the bug rather than fail the request
            return None, [f"{path.name}: internal error while parsing ({type(exc).__name__})"]
        warnings = list(dict.fromkeys(warnings))
        if key is not None and _cache_key(parser.__name__, path) == key:  # not rewritten while we read
            _remember(_cache, key, (value, tuple(warnings)))
        return value, warnings
    return wrapper


def clear_cache() -> None:
    """Forget every cached parse and last good JSON copy (for tests)."""
    with _lock:
        for store in (_cache, _last_good, _tails, _listings):
            store.clear()


def _load_json(path: Path):
    """(object|None, warnings): the file's JSON, retried once, else the last good copy marked stale."""
    problem = "unreadable JSON"
    for attempt in range(2):
        data, warnings = _read_file(path)
        if data is None:
            return None, warnings
        try:
            obj = json.loads(_decode(data))
        except json.JSONDecodeError as exc:
            problem = "empty" if not data.strip() else f"unreadable JSON (line {exc.lineno})"
        except (ValueError, RecursionError):
            problem = "unreadable JSON"
        else:
            _remember(_last_good, os.path.realpath(path), obj)
            return obj, []
        if attempt == 0:  # the orchestrator rewrites in place: this may be a torn read
            time.sleep(JSON_RETRY_SECONDS)
    with _lock:
        good = _last_good.get(os.path.realpath(path))
    if good is not None:
        return good, [f"{path.name}: {problem}, serving last good copy (stale)"]
    return None, [f"{path.name}: {problem}"]


def _json_object(path: Path):
    """(dict|None, warnings): _load_json, refusing anything but a JSON object."""
    obj, warnings = _load_json(path)
    if (obj is None and not warnings) or (obj is not None and not isinstance(obj, dict)):
        return None, warnings + [f"{path.name}: not a JSON object"]
    return obj, warnings


def _num(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        v = float(v)
    except OverflowError:
        return None
    return v if math.isfinite(v) else None


def _int(v) -> Optional[int]:
    f = _num(v)
    return v if isinstance(v, int) and not isinstance(v, bool) else (None if f is None else int(round(f)))


_KINDS = {"bool": (lambda v: v if isinstance(v, bool) else None, "a boolean"),
          "str": (lambda v: v if isinstance(v, str) else None, "a string"),
          "num": (_num, "a number"), "int": (_int, "an integer"),
          "dict": (lambda v: v if isinstance(v, dict) else None, "an object"),
          "list": (lambda v: v if isinstance(v, list) else None, "a list"),
          "time": (parse_naive_timestamp, "a timestamp")}


def _field(obj, dotted: str, kind: str, name: str, warnings: list):
    """obj[a][b]... converted to `kind`; None (plus a warning if present but wrong) otherwise."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(obj, dict):
            if obj is not None:
                warnings.append(f"{name}: {'.'.join(parts[:i])} is not an object")
            return None
        obj = obj.get(part)
    convert, description = _KINDS[kind]
    value = None if obj is None else convert(obj)
    if obj is not None and value is None:
        warnings.append(f"{name}: {dotted} is not {description}")
    return value


# --- JSON files ---

@_cached
def parse_config(path):
    """(config dict|None, warnings) for training/config.json, current or legacy shape."""
    obj, warnings = _json_object(path)
    if obj is None:
        return None, warnings
    name = path.name
    legacy = "training" not in obj and any(k in obj for k in ("training_enabled", "agents", "holistic_training"))
    f = functools.partial(_field, name=name, warnings=warnings)
    if legacy:
        slugs = f(obj, "agents", "list") or []
        if any(not isinstance(s, str) for s in slugs):
            warnings.append(f"{name}: agents has entries that are not strings (ignored)")
        return {"shape": "legacy", "enabled": f(obj, "training_enabled", "bool"), "schedule": f(obj, "schedule", "str"),
                "timeout_total_seconds": f(obj, "timeout_total_seconds", "num"),
                "timeout_per_agent_seconds": f(obj, "timeout_per_agent_seconds", "num"),
                "log_retention_days": f(obj, "log_retention_days", "int"),
                "data_quality_threshold": f(obj, "holistic_training.quality_threshold", "num"),
                "production_enabled": None, "agents": {},
                "agent_slugs": [s for s in slugs if isinstance(s, str)]}, warnings
    if "training" not in obj:
        warnings.append(f"{name}: no 'training' section")
    agents = {}
    for agent_id, entry in (f(obj, "training.agent_training", "dict") or {}).items():
        if not AGENT_ID_RE.match(agent_id) or not isinstance(entry, dict):
            warnings.append(f"{name}: agent_training.{agent_id} ignored (bad id or not an object)")
            continue
        agents[agent_id] = {key: f(entry, key, kind) for key, kind in
                            (("enabled", "bool"), ("priority", "str"), ("description", "str"))}
    return {"shape": "current", "enabled": f(obj, "training.enabled", "bool"),
            "schedule": f(obj, "training.schedule", "str"),
            "timeout_total_seconds": f(obj, "training.timeout_total_seconds", "num"),
            "timeout_per_agent_seconds": f(obj, "training.timeout_per_agent_seconds", "num"),
            "log_retention_days": f(obj, "training.monitoring.log_retention_days", "int"),
            "data_quality_threshold": f(obj, "training.harvester.data_quality_threshold", "num"),
            "production_enabled": f(obj, "training.production_run.enabled", "bool"),
            "agents": agents, "agent_slugs": []}, warnings


@_cached
def parse_training_result(path):
    """(result dict|None, warnings) for holistic_training_result.json (success or failure shape)."""
    obj, warnings = _json_object(path)
    if obj is None:
        return None, warnings
    name = path.name
    f = functools.partial(_field, name=name, warnings=warnings)
    phases = {}
    for key, entry in (f(obj, "phases", "dict") or {}).items():
        if not isinstance(entry, dict):
            warnings.append(f"{name}: phases.{key} is not an object")
            continue
        phases[key] = {"status": f(entry, "status", "str"), "time_seconds": f(entry, "time_seconds", "num")}
    trained = f(obj, "agents_trained", "int")
    return {"status": f(obj, "status", "str"), "error": f(obj, "error", "str"),
            "total_time_seconds": f(obj, "total_time_seconds", "num"), "phases": phases,
            "agents_trained": trained if trained is not None else f(obj, "phases.training.agents_trained", "int"),
            "agents_failed": f(obj, "phases.training.agents_failed", "int"),
            "agent_results": f(obj, "phases.training.results", "dict") or {},
            "system_quality_delta": f(obj, "system_quality_delta", "num"),
            "timestamp": f(obj, "timestamp", "time"), "next_scheduled": f(obj, "next_scheduled", "time")}, warnings


_POINT_FIELDS = {"score": _num, "improvement": _num, "time_ms": _int, "success": _KINDS["bool"][0],
                 "agent": _KINDS["str"][0], "event_type": _KINDS["str"][0], "data": _KINDS["dict"][0]}


def metric_point(entry) -> tuple[Optional[dict], int]:
    """(one training_metrics.json point with its timestamp parsed and values typed, how many values had
    the wrong type and became null), or (None, 0) for an entry without a valid timestamp."""
    when = parse_naive_timestamp(entry.get("timestamp")) if isinstance(entry, dict) else None
    if when is None:
        return None, 0
    point, bad = dict(entry, timestamp=when), 0
    for field, convert in _POINT_FIELDS.items():
        if field in point and point[field] is not None:
            point[field] = convert(point[field])
            bad += point[field] is None
    return point, bad


@_cached
def parse_training_metrics(path):
    """(dict of metric key -> points sorted by timestamp, or None, warnings) for training_metrics.json."""
    obj, warnings = _json_object(path)
    if obj is None:
        return None, warnings
    name = path.name
    metrics = {}
    for key, entries in obj.items():
        if not isinstance(entries, list):
            continue
        points, dropped, bad = [], 0, 0
        for entry in entries:
            point, wrong = metric_point(entry)
            if point is None:
                dropped += 1
                continue
            bad += wrong
            points.append(point)
        if dropped:
            warnings.append(f"{name}: {key}: {dropped} entries without a valid timestamp dropped")
        if bad:
            warnings.append(f"{name}: {key}: {bad} values of the wrong type set to null")
        metrics[key] = sorted(points, key=lambda p: p["timestamp"])
    return metrics, warnings


@_cached
def parse_orchestration_report(path):
    """(production report dict|None, warnings) for orchestration_report.json."""
    obj, warnings = _json_object(path)
    if obj is None:
        return None, warnings
    name = path.name
    f = functools.partial(_field, name=name, warnings=warnings)
    meta = f(obj, "project_metadata", "dict") or {}
    workflow = {}
    for agent_id, value in (f(obj, "workflow_status", "dict") or {}).items():
        text = value.strip() if isinstance(value, str) else ""
        ok = True if text.startswith("✅") else False if text.startswith("❌") else None
        workflow[agent_id] = {"ok": ok, "name": text.lstrip("✅❌\ufe0f ") if ok is not None else text}
    version = meta.get("system_version")
    version = None if isinstance(version, bool) or not isinstance(version, (str, int, float)) else str(version)
    return {"timestamp": f(meta, "timestamp", "time"),
            "music_genre": f(meta, "music_genre", "str"), "mood": f(meta, "mood", "str"),
            "status": f(meta, "status", "str"),
            "system_version": version,
            "workflow": workflow, "system_summary": f(obj, "system_summary", "dict") or {},
            "next_steps": f(obj, "next_steps", "list") or []}, warnings


# --- daily reports and agent modules ---

def list_daily_reports(logs_dir) -> list:
    """[(date, Path)] of the regular daily_report_YYYY-MM-DD.txt files in logs_dir, oldest first.

    Remembered until the folder changes (a file added, removed or renamed changes its mtime).
    """
    try:
        st = os.stat(logs_dir)
        key = ("reports", st.st_dev, st.st_ino, st.st_mtime_ns)
    except (OSError, ValueError, TypeError):
        return []
    with _lock:
        hit = _listings.get(key)
    if hit is not None:
        return list(hit)
    found = _list_daily_reports(logs_dir)
    with _lock:
        _listings[key] = tuple(found)
        while len(_listings) > TAIL_CACHE_SIZE:
            _listings.popitem(last=False)
    return found


def _list_daily_reports(logs_dir) -> list:
    found = []
    try:
        with os.scandir(logs_dir) as entries:
            for entry in entries:
                m = REPORT_NAME_RE.match(entry.name)
                day = parse_naive_timestamp(m.group(1)) if m else None
                # A regular entry of the folder is inside it; only a symlink needs resolving.
                if day is not None and entry.is_file() and (not entry.is_symlink()
                                                            or resolve_inside(logs_dir, entry.name)):
                    found.append((day.date(), Path(entry.path)))
    except (OSError, ValueError, TypeError):
        return []
    return sorted(found)


def _report_status(text: str) -> Optional[str]:
    lowered = text.lower()
    for word, status in (("improved", "improved"), ("declined", "declined"), ("no data", "no_data")):
        if word in lowered:
            return status
    return None


@_cached
def parse_daily_report(path):
    """(report dict|None, warnings) for one daily_report_YYYY-MM-DD.txt; partial if truncated."""
    data, warnings = _read_file(path)
    if data is None:
        return None, warnings
    name = path.name
    report = {"date": None, "duration_minutes": None, "system_quality": None, "system_change_percent": None,
              "agents": [], "recommendations": [], "trajectory": None}
    agent, in_recommendations, closed, recognised = None, False, False, 0
    for raw in _decode(data).split("\n"):
        line = raw.strip()
        if line.startswith("╚"):
            closed = True
        if not line or line[0] in "╔╠╚":
            agent = None
            continue
        text = line.strip("║ \t\r")
        rx = {key: regex.search(text) for key, regex in REPORT_LINES.items()}
        recognised += 1
        if rx["date"]:
            day = parse_naive_timestamp(rx["date"].group(1))
            report["date"] = day.date() if day else None
        elif rx["duration"]:
            report["duration_minutes"] = float(rx["duration"].group(1))
        elif rx["system"]:
            report["system_quality"] = float(rx["system"].group(1))
            report["system_change_percent"] = float(rx["system"].group(2)) if rx["system"].group(2) else None
        elif text.startswith("RECOMMENDATIONS"):
            in_recommendations = True
        elif in_recommendations and text.startswith("-"):
            if len(report["recommendations"]) < 3:
                report["recommendations"].append(text[1:].strip())
            if rx["trajectory"]:
                report["trajectory"] = rx["trajectory"].group(1).lower()
        elif rx["agent"] and not in_recommendations:
            agent_id = rx["agent"].group(2)
            agent = {"id": agent_id, "name": rx["agent"].group(1) or agent_id, "quality": None, "change": None,
                     "processing_ms": None, "status": None}
            report["agents"].append(agent)
        elif agent is not None and rx["quality"]:
            agent["quality"] = float(rx["quality"].group(1))
            agent["change"] = float(rx["quality"].group(2)) if rx["quality"].group(2) else None
        elif agent is not None and rx["processing"]:
            value, unit = float(rx["processing"].group(1)), rx["processing"].group(2)
            agent["processing_ms"] = int(round(value * 1000 if unit == "s" else value))
        elif agent is not None and rx["status"]:
            agent["status"] = _report_status(rx["status"].group(1))
            if agent["status"] is None:
                warnings.append(f"{name}: {agent['id']}: unknown status {rx['status'].group(1)[:40]!r}")
        else:
            recognised -= 1
    if not recognised:
        return None, warnings + [f"{name}: {'empty' if not data.strip() else 'not a daily report'}"]
    if report["date"] is None and (m := REPORT_NAME_RE.match(name)):
        day = parse_naive_timestamp(m.group(1))
        report["date"] = day.date() if day else None
        warnings.append(f"{name}: no report header; date taken from the file name")
    if not closed:
        warnings.append(f"{name}: truncated (no closing border)")
    return report, warnings


@_cached
def _module_title(path):
    data, warnings = _read_file(path)
    if data is None:
        return None, warnings
    try:
        doc = ast.get_docstring(ast.parse(_decode(data)))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None, [f"{path.name}: does not parse as Python; no title"]
    lines = [line.strip() for line in (doc or "").splitlines() if line.strip()]
    return (lines[0] if lines else None), warnings


def parse_agent_modules(agents_dir) -> tuple:
    """({agent_id: {"slug", "title", "file"}}, warnings) from agents/agent_<id>_<slug>.py, never imported."""
    agents_dir = Path(agents_dir)
    if not agents_dir.is_dir():
        return {}, ["agents/: missing" if not agents_dir.exists() else "agents/: not a directory"]
    modules, warnings = {}, []
    try:
        names = sorted(os.listdir(agents_dir))
    except OSError as exc:
        return {}, [f"agents/: cannot list ({exc.strerror})"]
    for filename in names:
        m = MODULE_NAME_RE.match(filename)
        if not m:
            continue
        if m.group(1) in modules:
            warnings.append(f"{filename}: second module for {m.group(1)} ignored")
            continue
        real = resolve_inside(agents_dir, filename)
        if real is None:
            warnings.append(f"{filename}: refused (points outside agents/)")
            continue
        title, problems = _module_title(real)
        warnings.extend(problems)
        modules[m.group(1)] = {"slug": m.group(2), "title": title, "file": filename}
    return modules, warnings


# --- logs ---

def parse_log_line(line: str) -> Optional[dict]:
    """{"timestamp", "source", "level", "message"} for a logging line, None for a continuation line."""
    m = LOG_LINE_RE.match(line.rstrip("\r\n"))
    when = parse_naive_timestamp(m.group(1)) if m else None
    if when is None:
        return None
    return {"timestamp": when, "source": m.group(2), "level": m.group(3), "message": m.group(4)}


def list_log_files(logs_dir) -> list:
    """The regular *.log files in logs_dir, oldest modification time first."""
    found = []
    try:
        with os.scandir(logs_dir) as entries:
            for entry in entries:
                if entry.name.endswith(".log") and entry.is_file() and (not entry.is_symlink()
                                                                        or resolve_inside(logs_dir, entry.name)):
                    found.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
    except (OSError, ValueError, TypeError):
        return []
    return [path for _mtime, _name, path in sorted(found)]


def _tail(path: Path, n: int, max_bytes: int):
    """(lines, warnings, capped): up to n last complete lines; capped if max_bytes ran out first."""
    fd, _st, warnings = open_regular(Path(path))
    if fd is None or n <= 0:
        if fd is not None:
            os.close(fd)
        return [], warnings, False
    try:
        pos = os.lseek(fd, 0, os.SEEK_END)
        budget = max(max_bytes - 1, 0)  # one byte is kept to learn whether the window starts a line
        blocks, newlines = [], 0
        while pos > 0 and budget > 0 and newlines <= n:
            size = min(max(BLOCK_SIZE, 1), pos, budget)
            block = os.pread(fd, size, pos - size)
            if len(block) != size:
                warnings.append(f"{path.name}: file shrank while reading")
                break
            pos, budget = pos - size, budget - size
            blocks.append(block)
            newlines += block.count(b"\n")
        data = b"".join(reversed(blocks))  # joined before decoding: blocks can split a character
        lines = data[:data.rfind(b"\n") + 1].split(b"\n")[:-1]  # a last line without "\n" is still being written
        if pos > 0 and lines and (newlines > n or os.pread(fd, 1, pos - 1) != b"\n"):
            lines = lines[1:]
        capped = pos > 0 and newlines <= n
    except OSError as exc:
        return [], [f"{path.name}: cannot read ({exc.strerror})"], False
    finally:
        os.close(fd)
    text = [line.decode("utf-8", errors="replace").removesuffix("\r") for line in lines[-n:]]
    if pos == 0 and text:
        text[0] = text[0].removeprefix("\ufeff")
    return text, warnings, capped


def tail_lines(path, n, max_bytes=TAIL_MAX_BYTES) -> tuple:
    """(the last n complete lines, warnings), reading at most max_bytes backwards from the end."""
    lines, warnings, capped = _tail(Path(path), n, max_bytes)
    if capped:
        warnings.append(f"{Path(path).name}: only {len(lines)} of {n} lines within the last {max_bytes} bytes")
    return lines, warnings


def _group(lines: Iterable[str]) -> Iterator[dict]:
    """Events from lines: continuation lines join the previous event; leading ones are dropped."""
    event = None
    for line in lines:
        parsed = parse_log_line(line)
        if parsed is not None:
            if event is not None:
                yield event
            event = parsed
        elif event is not None and len(event["message"]) < MAX_EVENT_CHARS:
            event["message"] += "\n" + line
    if event is not None:
        yield event


def read_log_events(path, limit, max_bytes=TAIL_MAX_BYTES) -> tuple:
    """(the newest `limit` events of a log, oldest first, warnings), within a max_bytes tail window.

    An unchanged log (same inode, size and mtime) is answered from memory; the events are shared, so
    callers must not change them.
    """
    if limit <= 0:
        return [], []
    key = _cache_key(f"tail:{limit}:{max_bytes}", Path(path))
    with _lock:
        hit = _tails.get(key) if key else None
    if hit is not None:
        return list(hit[0]), list(hit[1])
    events, warnings = _read_log_events(path, limit, max_bytes)
    if key is not None and _cache_key(f"tail:{limit}:{max_bytes}", Path(path)) == key:
        with _lock:
            _tails[key] = (tuple(events), tuple(warnings))
            while len(_tails) > TAIL_CACHE_SIZE:
                _tails.popitem(last=False)
    return events, warnings


def _read_log_events(path, limit, max_bytes) -> tuple:
    n = limit * 2 + 16
    while True:
        lines, warnings, capped = _tail(Path(path), n, max_bytes)
        events = list(_group(lines))
        if len(events) >= limit or len(lines) < n:
            break
        n *= 4  # long tracebacks: widen the window
    if capped and len(events) < limit:
        warnings.append(f"{Path(path).name}: only {len(events)} events within the last {max_bytes} bytes")
    return events[-limit:], warnings


def _offset_near(f, size: int, since: datetime) -> int:
    """A line-start offset at or before the first line stamped `since` or later (bisection on the
    byte offsets: a log's lines are in time order), so a window of a huge log is read, not all of it."""
    lo, hi = 0, size
    while hi - lo > BISECT_STOP_BYTES:
        mid = (lo + hi) // 2
        f.seek(mid)
        f.readline(MAX_LINE_BYTES)  # the rest of the line `mid` fell in
        stamp = None
        for _ in range(BISECT_PROBE_LINES):
            raw = f.readline(MAX_LINE_BYTES)
            if not raw:
                break
            event = parse_log_line(raw.decode("utf-8", errors="replace"))
            if event is not None:
                stamp = event["timestamp"]
                break
        if stamp is not None and stamp < since:
            lo = mid
        else:
            hi = mid
    return lo


def iter_log_events(path, since: Optional[datetime] = None) -> Iterator[dict]:
    """Every event of a log (with `since`: from about that time on), oldest first, streamed; nothing
    for a missing or non-regular file."""
    fd, st, _warnings = open_regular(Path(path))
    if fd is None:
        return

    def lines(f):
        first = True
        if since is not None:
            start = _offset_near(f, st.st_size, since)
            f.seek(start)
            if start:
                f.readline(MAX_LINE_BYTES)  # a partial line
                first = False
        while raw := f.readline(MAX_LINE_BYTES):
            if not raw.endswith(b"\n") and len(raw) < MAX_LINE_BYTES:
                return  # the last line is still being written
            line = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
            yield line.removeprefix("\ufeff") if first else line
            first = False

    with os.fdopen(fd, "rb") as f:
        yield from _group(lines(f))


_OTHER_LEVEL = {}  # log_events_from: an event of a level not asked for (its lines are skipped)


def log_events_from(path, offset: int = 0, levels: Optional[frozenset] = None) -> Iterator[tuple[Optional[dict], int]]:
    """The events of a log (only those of `levels`, when given) from byte `offset` (a line start) on,
    oldest first, each with the offset just past its last line, then (None, where reading stopped);
    streamed. A last line still being written (no newline yet) is left for later; nothing for a missing
    or non-regular file. Lines of other levels are only recognised, not parsed: a large log is fast."""
    fd, _st, _warnings = open_regular(Path(path))
    if fd is None:
        return
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        event, end, position = None, offset, offset
        while raw := f.readline(MAX_LINE_BYTES):
            if not raw.endswith(b"\n") and len(raw) < MAX_LINE_BYTES:
                break
            line = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
            line = line.removeprefix("\ufeff") if position == 0 else line
            position += len(raw)
            m = LOG_LINE_RE.match(line)
            if m and levels is not None and m.group(3) not in levels:
                parsed = _OTHER_LEVEL
            else:
                when = parse_naive_timestamp(m.group(1)) if m else None
                parsed = None if when is None else {"timestamp": when, "source": m.group(2),
                                                    "level": m.group(3), "message": m.group(4)}
            if parsed is not None:
                if event is not None and event is not _OTHER_LEVEL:
                    yield event, end
                event = parsed
            elif event is not None and event is not _OTHER_LEVEL and len(event["message"]) < MAX_EVENT_CHARS:
                event["message"] += "\n" + line
            end = position
        if event is not None and event is not _OTHER_LEVEL:  # logging writes a record in one go: complete
            yield event, end
        yield None, end


def parse_run_progress(events) -> dict:
    """What the last run in `events` (oldest first) did: start, phases, agents, finish."""
    progress = {"found": False, "started_at": None, "finished": None, "finished_at": None, "error": None,
                "current_phase": None, "phase_started_at": None, "completed_phases": {},
                "current_agent": None, "agents_completed": [], "agents_failed": [],
                "last_event_at": events[-1]["timestamp"] if events else None}
    starts = [i for i, event in enumerate(events) if RUN_STARTED in event["message"]]
    if not starts:
        return progress
    progress["found"] = True
    progress["started_at"] = events[starts[-1]]["timestamp"]
    open_phases, agent = {}, None
    for event in events[starts[-1]:]:
        message, when = event["message"].split("\n", 1)[0].strip(), event["timestamp"]
        if (m := PHASE_LINE_RE.match(message)) and m.group(1).lower() in PHASE_BY_NAME:
            key = PHASE_BY_NAME[m.group(1).lower()]
            open_phases.pop(key, None)
            if m.group(2) == "START":
                open_phases[key] = when
                agent = None if key == "agent_training" else agent
            else:
                progress["completed_phases"][key] = float(m.group(3)) if m.group(3) else None
        elif message.startswith(RUN_OK):
            progress["finished"], progress["finished_at"] = "success", when
        elif message.startswith(RUN_FAILED):
            progress["finished"], progress["finished_at"] = "failed", when
            progress["error"] = message[len(RUN_FAILED):].lstrip(": ").strip() or message
        elif m := AGENT_START_RE.match(message) or AGENT_LINE_RE.match(message):
            agent = m.group(1)
            outcome = m.group(2) if m.re is AGENT_LINE_RE else None
            done = {"completed": progress["agents_completed"], "failed": progress["agents_failed"]}.get(outcome)
            if done is not None and agent not in done:
                done.append(agent)
    if progress["finished"] is None and open_phases:
        progress["current_phase"], progress["phase_started_at"] = list(open_phases.items())[-1]
        if progress["current_phase"] == "agent_training":
            progress["current_agent"] = agent
    return progress
