"""data_loader: every parser against files in the orchestrator's real formats, with their quirks."""
from __future__ import annotations

import json
import os
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data_loader as dl
from dashboard.local import log_reader
from dashboard.local.parse_cache import ParseCache

W = 77  # inner width: "║" + 77 columns + "║" = 79


def box(text: str) -> str:
    line = "║" + text.ljust(W) + "║" if len(text) < W else "║" + text + " ║"
    assert len(line) == 79 or len(text) >= W
    return line


TOP, MID, BOTTOM = "╔" + "═" * W + "╗", "╠" + "═" * W + "╣", "╚" + "═" * W + "╝"


def report_text(day="2025-01-14", duration="8.45", agents=None, recommendations=None, closed=True) -> str:
    lines = [TOP, box(f"  DAILY TRAINING REPORT [{day}]")]
    if duration is not None:
        lines.append(box(f"  Training Duration: {duration} minutes"))
    lines.append(box("  Overall System Quality: 8.2/10 (+1.5%)"))
    for section in agents if agents is not None else [
            ["Trend Detective (agent_1)", "  Quality: 8.0/10 (+0.3 vs yesterday)", "  Processing: 1.2s",
             "  Status: ✅ Improved"],
            ["Veo Generator (agent_5a)", "  Status: No data available"]]:
        lines.append(MID)
        lines += [box(" " + text) for text in section]
    lines += [MID, box(" RECOMMENDATIONS FOR NEXT RUN:")]
    lines += [box(f" - {r}") for r in (recommendations or ["Focus on agent_7 (lowest score)",
                                                           "Current trajectory: UP ↑"])]
    if closed:
        lines.append(BOTTOM)
    return "\n".join(lines) + "\n"


def write(path: Path, content, mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def tail(path: Path, n: int, max_bytes: int = log_reader.TAIL_MAX_BYTES) -> tuple:
    """(the last n whole lines, warnings) of the window read_log_events reads backwards from a log's end."""
    return log_reader._tail(Path(path), n, max_bytes)[:2]


CURRENT_CONFIG = {"training": {
    "enabled": True, "schedule": "0 3 * * *", "timeout_per_agent_seconds": 300, "timeout_total_seconds": 1800,
    "harvester": {"data_quality_threshold": 6.5, "min_records_per_type": 20},
    "monitoring": {"track_metrics": True, "generate_reports": True, "save_logs": True, "log_retention_days": 30},
    "production_run": {"enabled": False},
    "agent_training": {"agent_8": {"enabled": True, "priority": "critical", "description": "..."}}}}
LEGACY_CONFIG = {"training_enabled": True, "max_iterations": 100, "learning_rate": 0.01, "batch_size": 32,
                 "agents": ["trend_detective", "veo_generator"],
                 "holistic_training": {"enabled": True, "sync_interval": 3600, "quality_threshold": 7.0}}
SUCCESS_RESULT = {
    "status": "success", "total_time_seconds": 507.3, "total_time_minutes": 8.46,
    "phases": {"harvesting": {"status": "success", "time_seconds": 28.1, "records": 412},
               "validation": {"status": "success", "time_seconds": 9.4},
               "training": {"status": "success", "time_seconds": 142.0, "agents_trained": 10, "agents_failed": 0,
                            "results": {"agent_1": {}}},
               "production": {"status": "skipped", "time_seconds": 0},
               "monitoring": {"status": "success", "time_seconds": 60.2},
               "cleanup": {"status": "success", "time_seconds": 0.4}},
    "agents_trained": 10, "system_quality_delta": 1.5,
    "timestamp": "2025-11-14T03:08:27.123456", "next_scheduled": "2025-11-15T03:00:00"}
LOG = """\
2025-11-14 03:00:01,532 - HolisticTrainer - INFO - HOLISTIC TRAINING PIPELINE STARTED
2025-11-14 03:00:01,533 - HolisticTrainer - INFO - Phase 1: Data Harvesting - START
2025-11-14 03:00:29,610 - HolisticTrainer - INFO - Phase 1: Data Harvesting - COMPLETE (28.08s, 412 records)
2025-11-14 03:00:29,611 - HolisticTrainer - INFO - Phase 2: Data Validation - START
2025-11-14 03:00:39,001 - HolisticTrainer - INFO - Phase 2: Data Validation - COMPLETE (9.39s, 0 issues)
2025-11-14 03:00:39,002 - HolisticTrainer - INFO - Phase 3: Agent Training - START
2025-11-14 03:00:41,250 - HolisticTrainer - INFO - agent_1 training completed: 1250ms, improvement +2.3%
2025-11-14 03:00:43,100 - HolisticTrainer - ERROR - agent_7 training failed: timeout after 300s
2025-11-14 03:00:43,101 - HolisticTrainer - WARNING - No training data for agent_9
2025-11-14 03:03:01,002 - HolisticTrainer - INFO - Phase 3: Agent Training - COMPLETE (142.00s, 10 agents)
2025-11-14 03:08:27,410 - HolisticTrainer - INFO - Holistic training completed successfully
"""
TRACEBACK = """\
2025-11-15 03:00:01,000 - HolisticTrainer - INFO - HOLISTIC TRAINING PIPELINE STARTED
2025-11-15 03:00:01,001 - HolisticTrainer - INFO - Phase 1: Data Harvesting - START
2025-11-15 03:00:02,500 - HolisticTrainer - ERROR - Holistic training failed: disk full
Traceback (most recent call last):
  File "orchestrator.py", line 88, in run
    self.harvest()
OSError: [Errno 28] No space left on device
2025-11-15 03:00:02,600 - root - INFO - exiting
"""


# --- paths and times ---

def test_resolve_inside(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(root / "logs" / "a.log", "x")
    write(outside / "secret.txt", "s")
    (root / "logs" / "escape.log").symlink_to(outside / "secret.txt")
    (root / "inner").symlink_to(root / "logs")
    assert dl.resolve_inside(root, "logs/a.log") == (root / "logs" / "a.log").resolve()
    assert dl.resolve_inside(str(root), "inner/a.log") == (root / "logs" / "a.log").resolve()
    for bad in ("logs/escape.log", "../outside/secret.txt", str(outside / "secret.txt"), "logs/\0x"):
        assert dl.resolve_inside(root, bad) is None


def test_timestamps():
    assert dl.parse_naive_timestamp("2025-11-14T03:08:27.123456") == datetime(2025, 11, 14, 3, 8, 27, 123456)
    assert dl.parse_naive_timestamp("2025-11-15T03:00:00") == datetime(2025, 11, 15, 3)
    assert dl.parse_naive_timestamp("2025-11-14 03:00:01,532") == datetime(2025, 11, 14, 3, 0, 1, 532000)
    for bad in (None, 5, "", "yesterday", "2025-13-01T00:00:00", "2025-11-14T03:00:00+01:00"):
        assert dl.parse_naive_timestamp(bad) is None
    berlin = ZoneInfo("Europe/Berlin")
    assert dl.to_utc_iso(datetime(2025, 11, 14, 3, 0, 1, 999999), berlin) == "2025-11-14T02:00:01Z"
    assert dl.to_utc_iso(datetime(2025, 7, 1, 3), berlin) == "2025-07-01T01:00:00Z"
    aware = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    assert dl.to_utc_iso(aware, berlin) == "2025-01-01T17:00:00Z"
    assert dl.to_utc_iso(None, berlin) is None


# --- config ---

def test_config_current_shape(tmp_path):
    value, warnings = dl.parse_config(write(tmp_path / "config.json", json.dumps(CURRENT_CONFIG, indent=2)))
    assert warnings == []
    assert value == {"shape": "current", "enabled": True, "schedule": "0 3 * * *", "timeout_total_seconds": 1800.0,
                     "timeout_per_agent_seconds": 300.0, "log_retention_days": 30, "data_quality_threshold": 6.5,
                     "production_enabled": False,
                     "agents": {"agent_8": {"enabled": True, "priority": "critical", "description": "..."}},
                     "agent_slugs": []}


def test_config_legacy_shape_with_bom_and_crlf(tmp_path):
    text = json.dumps(LEGACY_CONFIG, indent=2).replace("\n", "\r\n")
    value, warnings = dl.parse_config(write(tmp_path / "config.json", b"\xef\xbb\xbf" + text.encode()))
    assert warnings == []
    assert value["shape"] == "legacy" and value["enabled"] is True and value["schedule"] is None
    assert value["data_quality_threshold"] == 7.0 and value["agents"] == {}
    assert value["agent_slugs"] == ["trend_detective", "veo_generator"]


def test_config_wrong_types_give_none_and_warnings(tmp_path):
    config = json.loads(json.dumps(CURRENT_CONFIG))
    config["training"].update(enabled="yes", timeout_total_seconds="1800", monitoring=[])
    config["training"]["agent_training"]["agent_8"]["priority"] = 3
    config["training"]["agent_training"]["not an id"] = {}
    value, warnings = dl.parse_config(write(tmp_path / "config.json", json.dumps(config)))
    assert value["enabled"] is None and value["timeout_total_seconds"] is None and value["log_retention_days"] is None
    assert value["schedule"] == "0 3 * * *" and value["agents"]["agent_8"]["priority"] is None
    assert list(value["agents"]) == ["agent_8"]
    assert len(warnings) == 5 and all(w.startswith("config.json: ") for w in warnings)


def test_config_missing_and_not_an_object(tmp_path):
    assert dl.parse_config(tmp_path / "config.json") == (None, ["config.json: missing"])
    value, warnings = dl.parse_config(write(tmp_path / "other.json", "[1, 2]"))
    assert value is None and warnings == ["other.json: not a JSON object"]


def test_invalid_utf8_is_replaced(tmp_path):
    raw = json.dumps(CURRENT_CONFIG).replace('"..."', '"bad \\u00e9 XX"').encode().replace(b"XX", b"\xff\xfe")
    value, warnings = dl.parse_config(write(tmp_path / "config.json", raw))
    assert warnings == [] and value["agents"]["agent_8"]["description"] == "bad é \ufffd\ufffd"


# --- result and metrics ---

def test_training_result_success(tmp_path):
    value, warnings = dl.parse_training_result(write(tmp_path / "r.json", json.dumps(SUCCESS_RESULT)))
    assert warnings == []
    assert value["status"] == "success" and value["error"] is None and value["total_time_seconds"] == 507.3
    assert list(value["phases"]) == ["harvesting", "validation", "training", "production", "monitoring", "cleanup"]
    assert value["phases"]["harvesting"] == {"status": "success", "time_seconds": 28.1}
    assert value["phases"]["production"] == {"status": "skipped", "time_seconds": 0.0}
    assert (value["agents_trained"], value["agents_failed"], value["agent_results"]) == (10, 0, {"agent_1": {}})
    assert value["system_quality_delta"] == 1.5
    assert value["timestamp"] == datetime(2025, 11, 14, 3, 8, 27, 123456)
    assert value["next_scheduled"] == datetime(2025, 11, 15, 3)


def test_training_result_failure_shape_and_fallbacks(tmp_path):
    failed = {"status": "failed", "error": "disk full", "timestamp": "2025-11-14T03:00:12", "total_time_seconds": 12.0}
    value, warnings = dl.parse_training_result(write(tmp_path / "a.json", json.dumps(failed)))
    assert warnings == [] and value["phases"] == {} and value["agent_results"] == {}
    assert (value["status"], value["error"], value["agents_trained"]) == ("failed", "disk full", None)
    fallback = dict(SUCCESS_RESULT, timestamp="soon")
    del fallback["agents_trained"]
    value, warnings = dl.parse_training_result(write(tmp_path / "b.json", json.dumps(fallback)))
    assert value["agents_trained"] == 10 and value["timestamp"] is None
    assert warnings == ["b.json: timestamp is not a timestamp"]


def test_training_metrics(tmp_path):
    metrics = {
        "agent_1_quality": [{"timestamp": "2025-11-14T03:05:00", "score": 8, "improvement": 2.3, "time_ms": 1250},
                            {"timestamp": "2025-11-13T03:05:00", "score": 7.7, "improvement": -0.4, "time_ms": 1300.0},
                            {"score": 9}, "junk"],
        "agent_5a_quality": [], "agent_1_trend_accuracy": [], "agent_10_distribution_reach": [],
        "system_overall_quality": [{"timestamp": "2025-11-14T03:08:27.5", "score": "high", "improvement": 1.5}],
        "training_speed_ms": [{"timestamp": "2025-11-14T03:00:41", "agent": "agent_1", "time_ms": 1250}],
        "success_rate": [{"timestamp": "2025-11-14T03:00:43", "agent": "agent_7", "success": False}],
        "training_history": [{"timestamp": "2025-11-14T03:08:27", "event_type": "holistic_training_complete",
                              "data": {"status": "success"}, "extra": [1]}],
        "version": 3}
    value, warnings = dl.parse_training_metrics(write(tmp_path / "training_metrics.json", json.dumps(metrics)))
    assert set(value) == set(metrics) - {"version"}
    assert value["agent_1_trend_accuracy"] == [] and value["agent_5a_quality"] == []
    first, second = value["agent_1_quality"]
    assert first == {"timestamp": datetime(2025, 11, 13, 3, 5), "score": 7.7, "improvement": -0.4, "time_ms": 1300}
    assert second["score"] == 8.0 and isinstance(second["score"], float) and second["time_ms"] == 1250
    assert value["system_overall_quality"][0]["score"] is None
    assert value["success_rate"][0]["success"] is False and value["success_rate"][0]["agent"] == "agent_7"
    assert value["training_history"][0] == {"timestamp": datetime(2025, 11, 14, 3, 8, 27), "extra": [1],
                                            "event_type": "holistic_training_complete", "data": {"status": "success"}}
    assert warnings == ["training_metrics.json: agent_1_quality: 2 entries without a valid timestamp dropped",
                        "training_metrics.json: system_overall_quality: 1 values of the wrong type set to null"]
    assert dl.parse_training_metrics(write(tmp_path / "m.json", '"text"')) == (None, ["m.json: not a JSON object"])


def test_torn_json_serves_last_good_copy_as_stale(tmp_path):
    cache = ParseCache()
    path = write(tmp_path / "holistic_training_result.json", json.dumps(SUCCESS_RESULT, indent=2))
    good, _ = dl.parse_training_result(path, cache=cache)
    write(path, json.dumps(SUCCESS_RESULT, indent=2)[:150])
    value, warnings = dl.parse_training_result(path, cache=cache)
    assert value == good
    assert len(warnings) == 1 and "stale" in warnings[0] and "line" in warnings[0]
    assert warnings[0].startswith("holistic_training_result.json: unreadable JSON")


def test_torn_json_without_a_cache_has_no_last_good_copy(tmp_path):
    path = write(tmp_path / "r.json", json.dumps(SUCCESS_RESULT))
    assert dl.parse_training_result(path)[0]["status"] == "success"
    write(path, json.dumps(SUCCESS_RESULT)[:40])
    assert dl.parse_training_result(path) == (None, ["r.json: unreadable JSON (line 1)"])


def test_torn_json_never_good_gives_none(tmp_path):
    value, warnings = dl.parse_training_result(write(tmp_path / "r.json", '{"status": "succ'))
    assert value is None and warnings == ["r.json: unreadable JSON (line 1)"]
    assert dl.parse_config(write(tmp_path / "empty.json", "")) == (None, ["empty.json: empty"])


def test_torn_json_retry_reads_the_finished_file(tmp_path, monkeypatch):
    path = write(tmp_path / "r.json", '{"status": "succ')
    monkeypatch.setattr(dl.time, "sleep", lambda _s: write(path, json.dumps(SUCCESS_RESULT)))
    value, warnings = dl.parse_training_result(path)
    assert warnings == [] and value["status"] == "success"


def test_cache_skips_unchanged_and_rereads_changed(tmp_path, monkeypatch):
    reads, cache = [], ParseCache()
    real = dl.read_capped
    monkeypatch.setattr(dl, "read_capped", lambda path, *a: reads.append(path) or real(path, *a))
    path = write(tmp_path / "config.json", json.dumps(CURRENT_CONFIG), mtime_ns=1_700_000_000_000_000_000)
    first, _ = dl.parse_config(path, cache=cache)
    second, _ = dl.parse_config(path, cache=cache)
    assert second is first and len(reads) == 1
    write(path, json.dumps(LEGACY_CONFIG), mtime_ns=1_700_000_000_000_000_000)  # same mtime, other size
    third, _ = dl.parse_config(path, cache=cache)
    assert third["shape"] == "legacy" and len(reads) == 2
    report = write(tmp_path / "daily_report_2025-01-14.txt", report_text())
    assert dl.parse_daily_report(report, cache=cache)[0] is dl.parse_daily_report(report, cache=cache)[0]
    assert len(reads) == 3
    dl.parse_config(path)
    assert len(reads) == 4  # without a cache, every call reads


def test_a_cache_keeps_within_its_byte_budget(tmp_path):  # more in tests/test_cache_budgets.py
    budget = 6 * (len(json.dumps(CURRENT_CONFIG)) + len(LOG))
    cache = ParseCache(max_bytes=budget)
    for i in range(8):
        dl.parse_config(write(tmp_path / f"config{i}.json", json.dumps(CURRENT_CONFIG)), cache=cache)
        dl.read_log_events(write(tmp_path / f"run{i}.log", LOG), 5, cache=cache)
        assert cache.bytes <= budget
    assert 0 < len(cache) < 16


# --- safety: FIFO, size cap ---

def run_with_timeout(func, seconds=5.0):
    box_ = {}
    thread = threading.Thread(target=lambda: box_.setdefault("value", func()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    return box_["value"]


def test_fifo_refused_without_blocking(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("config.json", "daily_report_2025-01-14.txt", "run.log"):
        os.mkfifo(logs / name)
    for parser in (dl.parse_config, dl.parse_training_result, dl.parse_training_metrics, dl.parse_daily_report):
        value, warnings = run_with_timeout(lambda: parser(logs / "config.json"))
        assert value is None and warnings == ["config.json: not a regular file, refused"]
    assert run_with_timeout(lambda: tail(logs / "run.log", 10)) == (
        [], ["run.log: not a regular file, refused"])
    assert run_with_timeout(lambda: dl.read_log_events(logs / "run.log", 10))[0] == []
    assert run_with_timeout(lambda: list(dl.iter_log_events(logs / "run.log"))) == []
    assert dl.list_log_files(logs) == [] and dl.list_daily_reports(logs) == []


def test_file_over_cap_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "training_metrics.json"
    with open(path, "wb") as f:
        f.truncate(dl.MAX_FILE_BYTES + 1)
    read = []
    for name in ("read", "pread"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _real=real: read.append(a) or _real(*a))
    for parser in (dl.parse_training_metrics, dl.parse_daily_report):
        value, warnings = parser(path)
        assert value is None and len(warnings) == 1 and "too large" in warnings[0]
    assert read == []


# --- daily reports ---

def test_daily_report_full_example(tmp_path):
    value, warnings = dl.parse_daily_report(write(tmp_path / "daily_report_2025-01-14.txt", report_text()))
    assert warnings == []
    assert value == {"date": date(2025, 1, 14), "duration_minutes": 8.45, "system_quality": 8.2,
                     "system_change_percent": 1.5,
                     "agents": [{"id": "agent_1", "name": "Trend Detective", "quality": 8.0, "change": 0.3,
                                 "processing_ms": 1200, "status": "improved"},
                                {"id": "agent_5a", "name": "Veo Generator", "quality": None, "change": None,
                                 "processing_ms": None, "status": "no_data"}],
                     "recommendations": ["Focus on agent_7 (lowest score)", "Current trajectory: UP ↑"],
                     "trajectory": "up"}


def test_daily_report_quirks(tmp_path):
    long_name = "Universal Harvester — Über-Collector (v2) with a very long descriptive name indeed"
    agents = [
        ["Beat Maker (v2) (agent_11)", "  Quality: 6.1/10 (-0.4 vs yesterday)", "  Processing: 1.25s",
         "  Status: ⚠️  Declined"],
        ["Café Señor ♪ (agent_2)", "  Quality: 7.0/10 (+0.0 vs yesterday)", "  Processing: 0.9s",
         "  Status: ⚠️ Declined"],
        [f"{long_name} (agent_12)", "  Quality: 9.0/10 (+0.1 vs yesterday)", "  Processing: 2.0s",
         "  Status: ⚠ Declined"],
        ["Veo Generator (agent_5a)", "  Status: No data available"]]
    text = report_text(day="2025-02-01", duration=None, agents=agents,
                       recommendations=["Focus on agent_11 (lowest score)", "Retrain agent_2", "Check agent_5a",
                                        "Current trajectory: DOWN ↓"])
    assert any(len(line) > 79 and line.endswith(" ║") for line in text.splitlines())
    value, warnings = dl.parse_daily_report(write(tmp_path / "daily_report_2025-02-01.txt", text.replace("\n", "\r\n")))
    assert warnings == []
    assert value["duration_minutes"] is None and value["date"] == date(2025, 2, 1)
    assert [a["id"] for a in value["agents"]] == ["agent_11", "agent_2", "agent_12", "agent_5a"]
    assert [a["name"] for a in value["agents"]] == ["Beat Maker (v2)", "Café Señor ♪", long_name, "Veo Generator"]
    assert [a["status"] for a in value["agents"]] == ["declined", "declined", "declined", "no_data"]
    assert [a["change"] for a in value["agents"]] == [-0.4, 0.0, 0.1, None]
    assert [a["processing_ms"] for a in value["agents"]] == [1250, 900, 2000, None]
    assert value["recommendations"] == ["Focus on agent_11 (lowest score)", "Retrain agent_2", "Check agent_5a"]
    assert value["trajectory"] == "down"
    stable = report_text(recommendations=["Current trajectory: STABLE →"])
    assert dl.parse_daily_report(write(tmp_path / "daily_report_2025-02-02.txt", stable))[0]["trajectory"] == "stable"


def test_daily_report_truncated_gives_partial_result(tmp_path):
    text = report_text()
    cut = text[:text.index("Processing: 1.2s") + len("Processing: 1.")]
    value, warnings = dl.parse_daily_report(write(tmp_path / "daily_report_2025-01-14.txt", cut))
    assert warnings == ["daily_report_2025-01-14.txt: truncated (no closing border)"]
    assert value["date"] == date(2025, 1, 14) and value["system_quality"] == 8.2
    assert value["agents"] == [{"id": "agent_1", "name": "Trend Detective", "quality": 8.0, "change": 0.3,
                                "processing_ms": None, "status": None}]
    assert value["recommendations"] == [] and value["trajectory"] is None


def test_daily_report_garbage_and_missing(tmp_path):
    assert dl.parse_daily_report(write(tmp_path / "daily_report_2025-01-01.txt", b"\x00\xff hello\n")) == (
        None, ["daily_report_2025-01-01.txt: not a daily report"])
    assert dl.parse_daily_report(write(tmp_path / "daily_report_2025-01-02.txt", "")) == (
        None, ["daily_report_2025-01-02.txt: empty"])
    assert dl.parse_daily_report(tmp_path / "daily_report_2025-01-03.txt") == (
        None, ["daily_report_2025-01-03.txt: missing"])


def test_list_daily_reports(tmp_path):
    for name in ("daily_report_2025-01-14.txt", "daily_report_2024-12-31.txt", "daily_report_2025-1-2.txt",
                 "daily_report_2025-02-30.txt", "notes.txt", "daily_report_2025-01-14.txt.bak"):
        write(tmp_path / name, "x")
    (tmp_path / "daily_report_2025-03-01.txt").mkdir()
    assert dl.list_daily_reports(tmp_path) == [(date(2024, 12, 31), tmp_path / "daily_report_2024-12-31.txt"),
                                               (date(2025, 1, 14), tmp_path / "daily_report_2025-01-14.txt")]
    assert dl.list_daily_reports(tmp_path / "nope") == []


# --- agent modules ---

def test_parse_agent_modules(tmp_path):
    agents = tmp_path / "agents"
    marker = tmp_path / "executed"
    write(agents / "agent_12_universal_harvester.py",
          f'"""\n\nUniversal Harvester\n\nCollects data."""\nopen({str(marker)!r}, "w")\n')
    write(agents / "agent_5a_veo_generator.py", "'''Veo Generator — vidéo'''\n")
    write(agents / "agent_1_trend_detective.py", "def broken(:\n")
    write(agents / "agent_2_no_doc.py", "x = 1\n")
    write(agents / "helpers.py", '"""Not an agent"""')
    write(agents / "agent_3.py", '"""No slug"""')
    value, warnings = dl.parse_agent_modules(agents)
    assert value == {
        "agent_1": {"slug": "trend_detective", "title": None, "file": "agent_1_trend_detective.py"},
        "agent_12": {"slug": "universal_harvester", "title": "Universal Harvester",
                     "file": "agent_12_universal_harvester.py"},
        "agent_2": {"slug": "no_doc", "title": None, "file": "agent_2_no_doc.py"},
        "agent_5a": {"slug": "veo_generator", "title": "Veo Generator — vidéo", "file": "agent_5a_veo_generator.py"}}
    assert warnings == ["agent_1_trend_detective.py: does not parse as Python; no title"]
    assert not marker.exists()
    assert dl.parse_agent_modules(tmp_path / "missing") == ({}, ["agents/: missing"])


# --- logs ---

def test_parse_log_line():
    assert dl.parse_log_line("2025-11-14 03:00:01,532 - HolisticTrainer - INFO - Phase 1: Data Harvesting - START\r\n") == {
        "timestamp": datetime(2025, 11, 14, 3, 0, 1, 532000), "source": "HolisticTrainer", "level": "INFO",
        "message": "Phase 1: Data Harvesting - START"}
    assert dl.parse_log_line('  File "orchestrator.py", line 88, in run') is None
    assert dl.parse_log_line("OSError: [Errno 28] No space left on device") is None


def test_list_log_files(tmp_path):
    write(tmp_path / "new.log", "x", mtime_ns=3_000_000_000)
    write(tmp_path / "old.log", "x", mtime_ns=1_000_000_000)
    write(tmp_path / "mid.log", "x", mtime_ns=2_000_000_000)
    write(tmp_path / "notes.txt", "x")
    (tmp_path / "dir.log").mkdir()
    assert [p.name for p in dl.list_log_files(tmp_path)] == ["old.log", "mid.log", "new.log"]
    assert dl.list_log_files(tmp_path / "missing") == []


def test_tail_lines_basic_partial_crlf_and_bom(tmp_path):
    path = write(tmp_path / "run.log", b"\xef\xbb\xbffirst\r\nsecond\r\nthird\npartial, still being writ")
    assert tail(path, 2) == (["second", "third"], [])
    assert tail(path, 10) == (["first", "second", "third"], [])
    assert tail(path, 0) == ([], [])
    assert tail(tmp_path / "missing.log", 3) == ([], ["missing.log: missing"])
    assert tail(write(tmp_path / "bad.log", b"ok \xff\xfe end\n"), 1) == (["ok \ufffd\ufffd end"], [])


def test_tail_lines_drops_the_cut_first_line_only(tmp_path):
    path = write(tmp_path / "run.log", "aaaa\nbbbb\ncccc\n")
    lines, warnings, capped = log_reader._tail(path, 10, 10)  # one byte is kept back: window "bbb\ncccc\n"
    assert lines == ["cccc"] and warnings == [] and capped
    assert tail(path, 10, max_bytes=11)[0] == ["bbbb", "cccc"]  # window starts exactly at a line
    assert tail(path, 10, max_bytes=12)[0] == ["bbbb", "cccc"]  # window starts with the cut "\n"


class ByteCounter:
    def __init__(self, monkeypatch):
        self.total = 0
        for name in ("read", "pread"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self.wrap(real))

    def wrap(self, real):
        def counting(*args):
            data = real(*args)
            self.total += len(data)
            return data
        return counting


def test_tail_lines_large_file_reads_only_the_tail(tmp_path, monkeypatch):
    path = tmp_path / "big.log"
    with open(path, "wb") as f:
        f.truncate(200 * 1024 * 1024)
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + b"".join(b"2025-11-14 03:00:%02d,000 - T - INFO - line %d\n" % (i % 60, i) for i in range(5000)))
        f.write(b"2025-11-14 03:01:00,000 - T - INFO - partial")
    counter = ByteCounter(monkeypatch)
    lines, warnings = tail(path, 3)
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["4997", "4998", "4999"] and warnings == []
    assert 0 < counter.total <= dl.BLOCK_SIZE  # > 0: the reads really went through the counted calls
    counter.total = 0
    lines, warnings = tail(path, 10 ** 6)
    # The 200 MiB of NULs are one line longer than the window: looked past for at most LONG_LINE_SCAN_BYTES.
    assert counter.total <= dl.TAIL_MAX_BYTES + log_reader.LONG_LINE_SCAN_BYTES + 2 * dl.BLOCK_SIZE
    assert len(lines) == 5000 and lines[-1].endswith("line 4999") and "\x00" not in lines[0]
    assert len(warnings) == 1 and "earlier lines not read" in warnings[0], warnings
    counter.total = 0
    events, _ = dl.read_log_events(path, 100)
    assert counter.total <= 20 * dl.TAIL_MAX_BYTES and [e["message"] for e in events[-2:]] == ["line 4998", "line 4999"]


BOX_LINES = [TOP, box("  DAILY TRAINING REPORT [2025-01-14]"), "x" + MID, "ab" + BOTTOM,
             "║ Café ♪ (agent_5a) ✅ ⚠️  Declined ↑↓→ ║", "", "é" * 7 + "═" * 5]


@pytest.mark.parametrize("block_size", range(1, 65))
def test_tail_lines_box_characters_across_every_block_boundary(tmp_path, monkeypatch, block_size):
    path = write(tmp_path / "daily.log", "\n".join(BOX_LINES) + "\n")
    monkeypatch.setattr(log_reader, "BLOCK_SIZE", block_size)
    lines, warnings = tail(path, 100)
    assert lines == BOX_LINES and warnings == []
    assert tail(path, 3)[0] == BOX_LINES[-3:]


def test_read_log_events_groups_tracebacks(tmp_path):
    path = write(tmp_path / "run.log", "  orphan continuation\n" + LOG + TRACEBACK + "2025-11-15 03:00:03,000 - x - INFO - half")
    events, warnings = dl.read_log_events(path, 3)
    assert warnings == []
    assert [e["message"].split("\n")[0] for e in events] == [
        "Phase 1: Data Harvesting - START", "Holistic training failed: disk full", "exiting"]
    assert events[1]["message"].endswith("self.harvest()\nOSError: [Errno 28] No space left on device")
    assert events[1]["level"] == "ERROR" and events[2]["source"] == "root"
    everything, _ = dl.read_log_events(path, 1000)
    assert len(everything) == 11 + 4 and everything[0]["message"] == "HOLISTIC TRAINING PIPELINE STARTED"
    tail, warnings = dl.read_log_events(path, 5, max_bytes=160)  # window starts inside the traceback
    assert [e["message"] for e in tail] == ["exiting"]
    assert warnings == ["run.log: only 1 events within the last 160 bytes"]


def test_iter_log_events_streams_the_whole_file(tmp_path):
    raw = b"\xef\xbb\xbf" + (LOG + TRACEBACK).replace("disk full", "disk \udcff full").encode(
        "utf-8", "surrogateescape") + b"2025-11-15 03:00:03,000 - x - INFO - half"
    events = list(dl.iter_log_events(write(tmp_path / "run.log", raw)))
    assert len(events) == 15 and events[0]["message"] == "HOLISTIC TRAINING PIPELINE STARTED"
    assert events[-2]["message"].startswith("Holistic training failed: disk \ufffd full\nTraceback")
    assert events[-1]["message"] == "exiting"
    assert list(dl.iter_log_events(tmp_path / "missing.log")) == []


def progress_of(tmp_path, text):
    events, _ = dl.read_log_events(write(tmp_path / "p.log", text), 1000)
    return dl.parse_run_progress(events)


def test_run_progress_finished(tmp_path):
    progress = progress_of(tmp_path, TRACEBACK + LOG)
    assert progress["found"] and progress["finished"] == "success"
    assert progress["started_at"] == datetime(2025, 11, 14, 3, 0, 1, 532000)
    assert progress["finished_at"] == progress["last_event_at"] == datetime(2025, 11, 14, 3, 8, 27, 410000)
    assert progress["completed_phases"] == {"harvesting": 28.08, "validation": 9.39, "agent_training": 142.0}
    assert progress["current_phase"] is progress["phase_started_at"] is progress["current_agent"] is None
    assert progress["agents_completed"] == ["agent_1"] and progress["agents_failed"] == ["agent_7"]
    assert progress["error"] is None


def test_run_progress_failed(tmp_path):
    progress = progress_of(tmp_path, LOG + TRACEBACK)
    assert progress["finished"] == "failed" and progress["error"] == "disk full"
    assert progress["finished_at"] == datetime(2025, 11, 15, 3, 0, 2, 500000)
    assert progress["current_phase"] is None and progress["completed_phases"] == {}
    assert progress["last_event_at"] == datetime(2025, 11, 15, 3, 0, 2, 600000)


def test_run_progress_in_agent_training(tmp_path):
    running = LOG.split("2025-11-14 03:03:01,002")[0] + (
        "2025-11-14 03:00:44,000 - HolisticTrainer - INFO - Training agent_5a (Veo Generator) - START\n")
    progress = progress_of(tmp_path, running)
    assert progress["found"] and progress["finished"] is None and progress["finished_at"] is None
    assert progress["current_phase"] == "agent_training"
    assert progress["phase_started_at"] == datetime(2025, 11, 14, 3, 0, 39, 2000)
    assert progress["current_agent"] == "agent_5a"
    assert progress["completed_phases"] == {"harvesting": 28.08, "validation": 9.39}
    assert progress["last_event_at"] == datetime(2025, 11, 14, 3, 0, 44)
    assert dl.parse_run_progress([])["found"] is False


# --- no input can raise ---

REAL_SAMPLES = [report_text().encode(), json.dumps(CURRENT_CONFIG).encode(), json.dumps(SUCCESS_RESULT).encode(),
                (LOG + TRACEBACK).encode()]
inputs = st.binary(max_size=2000) | st.builds(lambda sample, cut, junk: sample[:cut] + junk + sample[cut:],
                                              st.sampled_from(REAL_SAMPLES), st.integers(0, 3000), st.binary(max_size=8))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=inputs)
def test_any_bytes_keep_the_contract(tmp_path, data):
    dl.JSON_RETRY_SECONDS, saved = 0, dl.JSON_RETRY_SECONDS
    try:
        for parser, name in ((dl.parse_daily_report, "daily_report_2025-01-14.txt"), (dl.parse_config, "config.json"),
                             (dl.parse_training_metrics, "training_metrics.json"),
                             (dl.parse_training_result, "result.json")):
            value, warnings = parser(write(tmp_path / name, data))
            assert value is None or isinstance(value, dict)
            assert isinstance(warnings, list) and all(isinstance(w, str) and w.startswith(name) for w in warnings)
            assert not any("internal error" in w for w in warnings)
            assert value is not None or warnings
        events, warnings = dl.read_log_events(write(tmp_path / "run.log", data), 50)
        assert isinstance(warnings, list) and all(set(e) == {"timestamp", "source", "level", "message"} for e in events)
        assert list(dl.iter_log_events(tmp_path / "run.log"))[-50:] == events
        dl.parse_run_progress(events)
    finally:
        dl.JSON_RETRY_SECONDS = saved


@pytest.mark.parametrize("since_day", [-1, 0, 7, 13, 29, 31])
def test_a_time_window_of_a_log_reads_the_same_events_as_a_full_scan(tmp_path, since_day):
    start = datetime(2025, 1, 1)
    lines = []
    for i in range(6000):  # 30 days, a line every ~7 minutes, a traceback now and then
        stamp = (start + timedelta(minutes=7.2 * i)).strftime("%Y-%m-%d %H:%M:%S,000")
        lines.append(f"{stamp} - HolisticTrainer - {'ERROR' if i % 97 == 0 else 'INFO'} - event {i} ┃ ok")
        if i % 97 == 0:
            lines += ["Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: boom"]
    path = tmp_path / "run.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    since = start + timedelta(days=since_day)
    windowed = [e for e in dl.iter_log_events(path, since=since) if e["timestamp"] >= since]
    scanned = [e for e in dl.iter_log_events(path) if e["timestamp"] >= since]
    assert windowed == scanned
    assert (len(scanned) == 0) == (since_day > 30) and (len(scanned) == 6000) == (since_day <= 0)


_LOG_LINE = st.one_of(
    st.builds(lambda day, level, text: f"2025-11-{day:02d} 10:00:00,123 - src - {level} - {text}".encode(),
              st.integers(1, 28), st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NOTE"]),
              st.sampled_from(["ok", "done - ERROR - not the level", "x"])),
    st.sampled_from([b"  Traceback (most recent call last):", b"  a line - WARNING - inside", b"",
                     b"\xff\xfe not UTF-8 - ERROR - ", b"2025-13-45 10:00:00 - src - ERROR - a bad date"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_LOG_LINE, max_size=60), newline_at_end=st.booleans(), bom=st.booleans(),
       chunk=st.sampled_from([1, 16, 300, 1 << 20]))
def test_events_of_some_levels_are_those_every_line_read_gives(tmp_path, monkeypatch, lines, newline_at_end, bom, chunk):
    """The ingester's pass over a log, which skips runs of other levels' lines by searching, finds
    exactly the events (messages and offsets) that reading every line finds, wherever its chunks end."""
    path = tmp_path / "run.log"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + (b"\n" if newline_at_end else b""))
    monkeypatch.setattr(log_reader, "SKIP_CHUNK_BYTES", chunk)
    wanted = frozenset({"WARNING", "ERROR", "CRITICAL"})
    every = list(log_reader.log_events_from(path, 0, None))
    expected = [(e, end) for e, end in every[:-1] if e["level"] in wanted] + [every[-1]]
    assert list(log_reader.log_events_from(path, 0, wanted)) == expected


@pytest.mark.parametrize("block_size", [1, 2, 3, 5, 7, 64 * 1024])
def test_a_line_longer_than_the_window_is_skipped_and_the_lines_before_it_found(tmp_path, monkeypatch, block_size):
    # plan T27
    monkeypatch.setattr(log_reader, "BLOCK_SIZE", block_size)
    path = write(tmp_path / "run.log", "\ufeffa\n" + "b" * 20 + "\nc\n" + "d" * 30)  # d...: still being written
    assert tail(path, 10, max_bytes=8) == (
        ["a", "c"], ["run.log: skipped a line of 20 bytes at byte 5 (longer than the 8-byte window)"])
    assert tail(path, 1, max_bytes=8) == (["c"], [])
    monkeypatch.setattr(log_reader, "LONG_LINE_SCAN_BYTES", 40)  # the 30 unfinished bytes count too
    lines, warnings = tail(path, 10, max_bytes=8)
    assert lines == ["c"] and any("earlier lines not read" in w for w in warnings), warnings


def test_the_incremental_reader_skips_a_line_over_max_line_bytes(tmp_path, monkeypatch):
    # plan T28
    monkeypatch.setattr(log_reader, "MAX_LINE_BYTES", 60)
    head = "2025-11-14 03:00:00,000 - T - ERROR - early\n"
    long_line = "2025-11-14 03:00:01,000 - T - ERROR - " + "x" * 40 + "\n  its continuation\n"
    tail = "2025-11-14 03:00:02,000 - T - ERROR - late\n"
    path = write(tmp_path / "run.log", head + long_line + tail + "2025-11-14 03:00:03,000 - T - ERROR - " + "y" * 40)
    got = list(dl.log_events_from(path, 0))
    assert [e["message"] if isinstance(e, dict) else e for e, _end in got[:-1]] == [
        "early", log_reader.LongLine(len(head), len(long_line.split("\n")[0])), "late"]
    assert got[-1] == (None, len(head + long_line + tail))  # the unfinished long line is left for later
    assert [e["message"] for e in dl.iter_log_events(path)] == ["early", "late"]
    assert list(dl.log_events_from(path, 0, frozenset({"ERROR"}))) == got  # the pass that skips by searching
