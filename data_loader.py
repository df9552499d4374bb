"""Readers of the files a training orchestrator leaves behind: its config, last result, metrics,
daily reports and agent modules; and the public face of the readers split off
from it (file_reading: safe reads; log_reader: the run log).

Every `parse_*` is total: it returns `(value, warnings)` and never raises. Given a ParseCache (`cache=`),
an unchanged file is answered from it and a JSON file torn by a rewrite from its last good parse; without
one, every call reads the file. Timestamps come back as naive local datetimes; `to_utc_iso` attaches the
orchestrator's time zone. Standard library only, besides the parse cache (parse_cache).
"""
from __future__ import annotations

import ast
import functools
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Optional

from dashboard.local.file_reading import decode_text, parse_naive_timestamp, read_capped, resolve_inside
from dashboard.local.parse_cache import ParseCache, TornJSON, cached

# Re-exported: callers read the files and the run log as dl.<name> (also resolve_inside, parse_naive_timestamp).
from dashboard.local.file_reading import BLOCK_SIZE, MAX_FILE_BYTES, open_regular, to_utc_iso  # noqa: F401
from dashboard.local.log_reader import (TAIL_MAX_BYTES, iter_log_events, list_log_files, log_events_from,  # noqa: F401
                        parse_log_line, parse_run_progress, read_log_events)

JSON_RETRY_SECONDS = 0.05
AGENT_ID_RE = re.compile(r"^agent_[A-Za-z0-9]+$")
REPORT_NAME_RE = re.compile(r"^daily_report_(\d{4}-\d{2}-\d{2})\.txt$")
LISTED_BYTES = 200  # a listed report's (date, Path) in memory besides its path's text: the listing's charge
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


# --- JSON helpers ---

def _load_json(path: Path):
    """(object|None, warnings): the file's JSON, read again once if not whole (then a TornJSON warning)."""
    problem = "unreadable JSON"
    for attempt in range(2):
        data, warnings = read_capped(path)
        if data is None:
            return None, warnings
        try:
            return json.loads(decode_text(data)), []
        except json.JSONDecodeError as exc:
            problem = "empty" if not data.strip() else f"unreadable JSON (line {exc.lineno})"
        except (ValueError, RecursionError):
            problem = "unreadable JSON"
        if attempt == 0:  # the orchestrator rewrites in place: this may be a torn read
            time.sleep(JSON_RETRY_SECONDS)
    return None, [TornJSON(f"{path.name}: {problem}")]


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
    i = v if isinstance(v, int) and not isinstance(v, bool) else (None if f is None else int(round(f)))
    return i if i is not None and -2 ** 63 <= i < 2 ** 63 else None  # what SQLite can store


number_or_none, integer_or_none = _num, _int  # for the modules that type the files' values too


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

def json_object_parser(parse):
    """A parser of a file that holds one JSON object: `parse(obj, name, warnings)` gets the object, the
    file's name and the list its problems go to, and returns the value; a file without an object (absent,
    unreadable, another type) is None with the reason. Made total, and cacheable, by `cached`."""
    @functools.wraps(parse)
    def read(path):
        obj, warnings = _json_object(path)
        if obj is None:
            return None, warnings
        return parse(obj, path.name, warnings), warnings
    return cached(read)


@json_object_parser
def parse_config(obj, name, warnings):
    """(config dict|None, warnings) for training/config.json, current or legacy shape."""
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
                "agent_slugs": [s for s in slugs if isinstance(s, str)]}
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
            "agents": agents, "agent_slugs": []}


@json_object_parser
def parse_training_result(obj, name, warnings):
    """(result dict|None, warnings) for holistic_training_result.json (success or failure shape)."""
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
            "timestamp": f(obj, "timestamp", "time"), "next_scheduled": f(obj, "next_scheduled", "time")}


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


@json_object_parser
def parse_training_metrics(obj, name, warnings):
    """(dict of metric key -> points sorted by timestamp, or None, warnings) for training_metrics.json."""
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
    return metrics


# --- daily reports and agent modules ---

def list_daily_reports(logs_dir, *, cache: Optional[ParseCache] = None) -> list:
    """[(date, Path)] of the regular daily_report_YYYY-MM-DD.txt files in logs_dir, oldest first.

    With a cache, remembered until the folder changes (a file added, removed or renamed changes its mtime).
    """
    if cache is None:
        return _list_daily_reports(logs_dir)
    try:
        st = os.stat(logs_dir)
        identity = (st.st_dev, st.st_ino, st.st_mtime_ns)
    except (OSError, ValueError, TypeError):
        return []
    key = ("daily_reports", os.fspath(logs_dir))
    hit = cache.get(key, identity)
    if hit is not None:
        return list(hit)
    found = _list_daily_reports(logs_dir)
    cache.put(key, identity, tuple(found), sum(LISTED_BYTES + len(os.fspath(p)) for _day, p in found))
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


@cached
def parse_daily_report(path):
    """(report dict|None, warnings) for one daily_report_YYYY-MM-DD.txt; partial if truncated."""
    data, warnings = read_capped(path)
    if data is None:
        return None, warnings
    name = path.name
    report = {"date": None, "duration_minutes": None, "system_quality": None, "system_change_percent": None,
              "agents": [], "recommendations": [], "trajectory": None}
    agent, in_recommendations, closed, recognised = None, False, False, 0
    for raw in decode_text(data).split("\n"):
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


@cached
def _module_title(path):
    data, warnings = read_capped(path)
    if data is None:
        return None, warnings
    try:
        doc = ast.get_docstring(ast.parse(decode_text(data)))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None, [f"{path.name}: does not parse as Python; no title"]
    lines = [line.strip() for line in (doc or "").splitlines() if line.strip()]
    return (lines[0] if lines else None), warnings


def parse_agent_modules(agents_dir, *, cache: Optional[ParseCache] = None) -> tuple:
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
        title, problems = _module_title(real, cache=cache)
        warnings.extend(problems)
        modules[m.group(1)] = {"slug": m.group(2), "title": title, "file": filename}
    return modules, warnings
