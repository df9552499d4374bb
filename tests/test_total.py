"""Parsers and the schedule are total: each parser's failure modes, written into a real orchestrator copy,
give no 5xx on any GET route of the app's route table, and /api/stream stays up. The parsers' own
property test (any bytes) is test_data_loader.py::test_any_bytes_keep_the_contract; the individual broken
files of test_bad_files.py are covered here through every route."""
from __future__ import annotations

import collections
import json
import os
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dashboard.web import stream
from conftest import get_route_urls

PATH_VALUES = {"agent_id": "agent_1", "metric_name": "system_overall_quality", "session_id": "1", "project_id": "1"}
WIDE_QUERY = "?days=365&hours=720&limit=1000&format=csv"  # parameters a route does not take are ignored
HUGE = b"9" * 400  # json: an int of 400 digits; float(): inf
JSON_FILES = ("logs/training_metrics.json", "holistic_training_result.json", "training/config.json")
GENERIC_JSON = {
    "truncated": b'{"system_overall_quality": [{"timestamp": "2025-11-14T03:00:00", "val',
    "invalid-utf8": b'{"status": "\xff\xfe\x80", "training": {"schedule": "\xc3("}}',
    "a-list": b"[1, 2, 3]",
    "a-string": b'"just a string"',
    "empty": b"",
    "missing-keys": b"{}",
    "nan": b'{"status": NaN, "overall_quality": NaN, "system_overall_quality": NaN, "training": NaN}',
    "huge": b'{"status": ' + HUGE + b', "overall_quality": ' + HUGE + b'.5e999, "training": ' + HUGE + b"}",
}
SPECIFIC = [
    ("logs/training_metrics.json", "strings-for-numbers",
     b'{"system_overall_quality": [{"timestamp": "2025-11-14T03:00:00", "value": "7.5"}],'
     b' "agent_1_quality": [{"timestamp": 1731553200, "value": "high"}], "agent_2_quality": "9"}'),
    ("logs/training_metrics.json", "nan-and-huge-points",
     b'{"system_overall_quality": [{"timestamp": "2025-11-14T03:00:00", "value": NaN},'
     b' {"timestamp": "2025-11-15T03:00:00", "value": Infinity}, {"timestamp": "2025-11-16T03:00:00", "value": '
     + HUGE + b'}, {"timestamp": "2025-11-17T03:00:00", "value": 1e999}],'
     b' "agent_1_processing_time_ms": [{"timestamp": "99999-01-01T00:00:00", "value": -' + HUGE + b"}]}"),
    ("logs/training_metrics.json", "points-missing-keys",
     b'{"system_overall_quality": [{"value": 7}, {"timestamp": "2025-11-14T03:00:00"}, {}, null, [1]],'
     b' "training_history": [{}, {"timestamp": null, "overall_quality": "x"}, 5]}'),
    ("logs/training_metrics.json", "history-of-huge-and-wrong-runs",
     b'{"training_history": [{"timestamp": "2025-11-14T03:00:00", "event_type": "holistic_training_complete",'
     b' "data": {"status": "success", "total_time_seconds": 1e300, "agents_trained": "six"}},'
     b' {"timestamp": "2025-11-15T03:00:00", "event_type": "holistic_training_complete",'
     b' "data": {"status": ["failed"], "total_time_seconds": NaN, "system_quality_delta": ' + HUGE + b"}},"
     b' {"timestamp": "9998-12-31T23:59:59", "event_type": "holistic_training_complete",'
     b' "data": {"total_time_seconds": -' + HUGE + b', "phases": {"training": {"agents_failed": {}}}}},'
     b' {"timestamp": "2025-11-16T03:00:00", "event_type": "holistic_training_complete", "data": [1]}]}'),
    ("holistic_training_result.json", "wrong-types",
     b'{"status": ["completed"], "timestamp": 12, "duration_seconds": "long", "phases": {"training":'
     b' {"results": [1, 2], "agents_trained": "six", "duration_seconds": NaN}, "harvesting": []}}'),
    ("holistic_training_result.json", "huge-durations",
     b'{"status": "completed", "timestamp": "2025-11-14T03:00:00", "duration_seconds": ' + HUGE +
     b', "overall_quality": 1e999, "phases": {"training": {"duration_seconds": ' + HUGE + b"}}}"),
    ("training/config.json", "never-fires", b'{"training": {"enabled": true, "schedule": "0 0 31 2 *"}}'),
    ("training/config.json", "wrong-types",
     b'{"training": {"enabled": "yes", "schedule": 5, "timeout_total_seconds": "x", "agent_training": {}},'
     b' "agents": [1, 2], "quality_threshold": NaN}'),
    ("training/config.json", "huge-timeout",
     b'{"training": {"enabled": true, "schedule": "0 3 * * *", "timeout_total_seconds": ' + HUGE + b"},"
     b' "agents": {"agent_1": {"enabled": "no", "priority": 1e999}}}'),
]
CASES = [(path, name, data) for path in JSON_FILES for name, data in GENERIC_JSON.items()] + SPECIFIC


def newest(root, pattern: str):
    return sorted(root.glob(pattern))[-1]


def text_cases():
    """(glob, name, change(old bytes) -> new bytes) for the daily report and the run log."""
    def numbers(value: bytes):
        return lambda old: re.sub(rb"\d+\.\d+", value, old)
    return [
        ("logs/daily_report_*.txt", "empty", lambda old: b""),
        ("logs/daily_report_*.txt", "truncated", lambda old: old[: len(old) // 2]),
        ("logs/daily_report_*.txt", "invalid-utf8", lambda old: old.replace(b"Quality", b"Qu\xff\xfelity")),
        ("logs/daily_report_*.txt", "huge-numbers", numbers(HUGE + b"." + HUGE)),
        ("logs/daily_report_*.txt", "nan", numbers(b"nan")),
        ("logs/holistic_training.log", "empty", lambda old: b""),
        ("logs/holistic_training.log", "invalid-utf8", lambda old: old.replace(b" - ", b" \xff- ")),
        ("logs/holistic_training.log", "truncated", lambda old: old[: len(old) // 2]),
        ("logs/holistic_training.log", "huge-numbers", numbers(HUGE + b"." + HUGE)),
        ("logs/holistic_training.log", "huge-timestamps",
         lambda old: re.sub(rb"^\d{4}-", b"9999-", old, flags=re.M) + b"9999-12-31 23:59:59,999 - X - ERROR - last\n"),
    ]


def get_routes(app) -> list[str]:
    """Every GET route of the app's route table, path parameters filled in with valid values."""
    return sorted(set(get_route_urls(app, collections.defaultdict(lambda: "x", PATH_VALUES))))


def get_everything(client, routes) -> None:
    """GET each route with its defaults and with the widest windows; none may be a 5xx."""
    for url in routes:
        for query in ("", WIDE_QUERY):
            response = client.get(url + query)
            body = response.get_data(as_text=True)  # the whole body: downloads are streamed
            response.close()
            assert response.status_code < 500, (url + query, body[:500])


def assert_total(app) -> None:
    """No 5xx on any GET route, and a stream that keeps going past its snapshot."""
    client = app.test_client()
    routes = get_routes(app)
    assert "/api/dashboard/overview" in routes and "/api/agents/agent_1" in routes
    get_everything(client, routes)
    response = client.get("/api/stream", buffered=False)
    assert response.status_code == 200
    health, deadline = 0, time.monotonic() + 30
    frames = response.response
    try:
        for chunk in frames:  # ends (raises) if the stream broke; health comes on every round
            text = chunk.decode() if isinstance(chunk, bytes) else chunk
            health += text.count("event: health\n")
            if health >= 2:
                break
            assert time.monotonic() < deadline, "the stream sent no second round"
    finally:
        response.close()
    assert health >= 2


@pytest.fixture
def total_app(make_app, orchestrator, monkeypatch):
    monkeypatch.setattr(stream, "POLL_SECONDS", 0.02)

    def make(change):
        root = orchestrator()
        change(root)
        return make_app(root, STREAM_HEALTH_SECONDS=0.1)
    return make


@pytest.mark.parametrize("relpath,name,data", CASES, ids=[f"{p}:{n}" for p, n, _ in CASES])
def test_every_route_and_the_stream_survive_a_broken_json_file(total_app, relpath, name, data):
    # plan T43
    assert_total(total_app(lambda root: (root / relpath).write_bytes(data)))


@pytest.mark.parametrize("pattern,name,change", text_cases(), ids=[f"{p}:{n}" for p, n, _ in text_cases()])
def test_every_route_and_the_stream_survive_a_broken_report_or_log(total_app, pattern, name, change):
    # plan T43
    def broken(root):
        path = newest(root, pattern)
        path.write_bytes(change(path.read_bytes()))
    assert_total(total_app(broken))


# Any JSON value, with the keys the parsers look for, in place of each JSON file (one app, files rewritten).
KEYS = ["status", "timestamp", "phases", "training", "schedule", "enabled", "agents", "value", "results",
        "system_overall_quality", "agent_1_quality", "training_history", "overall_quality", "duration_seconds",
        "timeout_total_seconds", "agent_training", "agents_trained", "data", "event_type", "total_time_seconds",
        "system_quality_delta", "agents_failed", "error"]
scalars = (st.none() | st.booleans() | st.integers(min_value=-10 ** 30, max_value=10 ** 30)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["", "x", "2025-11-14T03:00:00", "9999-12-31T23:59:59", "0001-01-01T00:00:00",
                              "0 0 31 2 *", "holistic_training_complete", "success", "failed"]))


def containers(inner):
    """Lists and objects of `inner` values (a named function: hypothesis reads its source)."""
    return st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=5)


json_values = st.recursive(scalars, containers, max_leaves=20)


@pytest.fixture(scope="module")
def one_app(tmp_path_factory, _built):
    import shutil
    from conftest import create_app
    root = tmp_path_factory.mktemp("total") / "orch"
    shutil.copytree(_built(None, 14), root)
    app = create_app({"TESTING": True, "ORCHESTRATOR_PATH": root, "DATABASE_PATH": root.parent / "db.sqlite",
                      "LOG_FILE": None, "HEALTH_SAMPLE_SECONDS": 0, "TRAINING_RUNS_DIR": root.parent / "runs",
                      "RESPONSE_CACHE_SECONDS": 0, "INGEST_SECONDS": 0})
    return app, root


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.tuples(json_values, json_values, json_values))
def test_any_json_in_the_json_files_gives_no_5xx_anywhere(one_app, values):
    # plan T43
    app, root = one_app
    for relpath, value in zip(JSON_FILES, values):
        path = root / relpath
        path.write_text(json.dumps(value), encoding="utf-8")  # NaN and Infinity as Python writes them
        stamp = time.time_ns()
        os.utime(path, ns=(stamp, stamp))
    app.extensions["ingester"].run_once()
    get_everything(app.test_client(), get_routes(app))


numbers = st.sampled_from(["0", "-1", "nan", "inf", "1e999", HUGE.decode(), "7.5", "", "x"])
log_lines = st.builds(
    "{} - HolisticTrainer - {} - {}".format,
    st.sampled_from(["2025-11-14 03:00:00,000", "9999-12-31 23:59:59,999", "0001-01-01 00:00:00,000", "2025-13-40 99:99:99"]),
    st.sampled_from(["INFO", "ERROR", "WARNING", "CRITICAL", "DEBUG"]),
    st.one_of(st.builds("Phase {}: {} - {} ({}s)".format, numbers, st.sampled_from(["Data Harvesting", "Agent Training"]),
                        st.sampled_from(["START", "COMPLETE"]), numbers),
              st.builds("Training agent_{} - START".format, numbers), st.builds("agent_1 training {}".format,
                                                                                   st.sampled_from(["completed", "failed"])),
              st.sampled_from(["HOLISTIC TRAINING PIPELINE STARTED", "Holistic training completed successfully",
                               "Holistic training failed: x"]), st.text(max_size=20)))
report_lines = st.builds("║   {}: {}/10 ({} vs yesterday)".format, st.sampled_from(["Quality", "Processing", "Status"]),
                         numbers, numbers) | st.builds("║ Agent (agent_{})".format, numbers) | st.text(max_size=20)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=st.lists(log_lines, max_size=30), report=st.lists(report_lines, max_size=20))
def test_any_log_and_report_lines_give_no_5xx_anywhere(one_app, log, report):
    # plan T43
    app, root = one_app
    for path, lines in ((newest(root, "logs/holistic_training.log"), log),
                        (newest(root, "logs/daily_report_*.txt"), report)):
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        stamp = time.time_ns()
        os.utime(path, ns=(stamp, stamp))
    app.extensions["ingester"].run_once()
    get_everything(app.test_client(), get_routes(app))
