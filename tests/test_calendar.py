"""Calendar edges, computed against an injected "now": day windows, the next run, overdue runs,
retention and trends at new year, the DST switches, 2028-02-29 and in zones far from UTC.

Each test writes the orchestrator's files with known points at known local times, sets the provider's
clock (`app.extensions["provider"].clock`) to a fixed instant and asserts what a user sees.

Cron at a DST switch, as the dashboard shows it (and as cron runs it): a local time the clocks skip
(02:30 on 2027-03-28 in Berlin) fires when the gap ends (03:00 CEST = 01:00Z); a local time the clocks
pass twice (02:30 on 2027-10-31) fires the first time only (02:30 CEST = 00:30Z).
"""
from __future__ import annotations

import importlib.util
import json
import sqlite3
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import database
from dashboard.local import provider as local_provider
from dashboard.ops import sampler
from conftest import ORCHESTRATOR

_spec = importlib.util.spec_from_file_location("example_orchestrator", ORCHESTRATOR)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

BERLIN, AUCKLAND, LOS_ANGELES = "Europe/Berlin", "Pacific/Auckland", "America/Los_Angeles"
# id: (zone, the instant, the orchestrator-local date then)
CASES = {
    "berlin-new-year-utc-still-2026": (BERLIN, "2026-12-31T23:30Z", "2027-01-01"),  # 00:30 CET
    "berlin-new-year-0130": (BERLIN, "2027-01-01T00:30Z", "2027-01-01"),
    "berlin-23h-day": (BERLIN, "2027-03-28T01:30Z", "2027-03-28"),  # 03:30 CEST, an hour after the switch
    "berlin-25h-day": (BERLIN, "2027-10-31T02:30Z", "2027-10-31"),  # 03:30 CET
    "berlin-window-starts-on-23h-day": (BERLIN, "2027-03-29T22:30Z", "2027-03-30"),  # 00:30 CEST
    "berlin-window-starts-on-25h-day": (BERLIN, "2027-11-01T23:30Z", "2027-11-02"),  # 00:30 CET
    "berlin-leap-day-2330": (BERLIN, "2028-02-29T22:30Z", "2028-02-29"),
    "berlin-after-leap-day-0030": (BERLIN, "2028-02-29T23:30Z", "2028-03-01"),
    "auckland-2330": (AUCKLAND, "2026-12-31T10:30Z", "2026-12-31"),
    "auckland-0030-utc-still-2026": (AUCKLAND, "2026-12-31T11:30Z", "2027-01-01"),
    "auckland-leap-day-0030": (AUCKLAND, "2028-02-28T11:30Z", "2028-02-29"),
    "los-angeles-2330-utc-already-2027": (LOS_ANGELES, "2027-01-01T07:30Z", "2026-12-31"),
    "los-angeles-0030": (LOS_ANGELES, "2027-01-01T08:30Z", "2027-01-01"),
    "los-angeles-leap-day-2330": (LOS_ANGELES, "2028-03-01T07:30Z", "2028-02-29"),
}


def utc(text: str) -> datetime:
    """An aware UTC datetime from '2027-01-01T00:30Z' (seconds optional)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    """The API's UTC form of an aware datetime."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_iso(zone: str, naive: datetime) -> str:
    """The API's UTC form of a naive local time in `zone`."""
    return iso(naive.replace(tzinfo=ZoneInfo(zone)))


def at(day: date, hhmm: str) -> datetime:
    """A naive local datetime on `day` at 'HH:MM' or 'HH:MM:SS'."""
    return datetime.combine(day, datetime.strptime(hhmm, "%H:%M:%S" if hhmm.count(":") == 2 else "%H:%M").time())


def point(naive: datetime, **fields) -> dict:
    """A training_metrics.json point, stamped the way the orchestrator stamps it (naive local)."""
    return {"timestamp": naive.isoformat(timespec="microseconds"), **fields}


def run_event(finished: datetime, seconds: float) -> dict:
    """A training_history entry of a successful run that ended at `finished`."""
    return point(finished, event_type="holistic_training_complete",
                 data={"status": "success", "total_time_seconds": seconds, "agents_trained": 1})


def write_orchestrator(root, schedule="0 3 * * *", metrics=None, reports=(), result=None, log_lines=()):
    """Write an orchestrator folder: config with `schedule`, metrics, {date: (system, agent_1)} reports, a log."""
    (root / "training").mkdir(parents=True)
    (root / "logs").mkdir()
    config = {"training": {"enabled": True, "schedule": schedule,
                           "agent_training": {"agent_1": {"enabled": True, "priority": "high"}}}}
    (root / "training" / "config.json").write_text(json.dumps(config))
    (root / "logs" / "training_metrics.json").write_text(json.dumps(metrics or {}))
    for day, (system, agent) in dict(reports).items():
        outcome = {"status": "success", "score": agent, "change": 0.0, "time_ms": 1000}
        text = example.render_report(day, 1.0, {"score": system, "change": 0.0, "trajectory": "UP"},
                                     [("agent_1", "Trend Detective")], {"agent_1": outcome})
        (root / "logs" / f"daily_report_{day.isoformat()}.txt").write_text(text, encoding="utf-8")
    if result is not None:
        (root / "holistic_training_result.json").write_text(json.dumps(result))
    if log_lines:
        (root / "logs" / "holistic_training.log").write_text("".join(f"{line}\n" for line in log_lines))
    return root


@pytest.fixture
def dashboard(make_app, tmp_path):
    """Factory: (client, provider) over `root` in `zone` at `now`; db=False makes the database unusable."""

    def make(root, zone, now, db=True):
        config = {"ORCHESTRATOR_TIMEZONE": zone}
        if not db:
            (tmp_path / "not-a-dir").write_text("")
            config["DATABASE_PATH"] = tmp_path / "not-a-dir" / "db.sqlite"
        app = make_app(root, **config)
        provider = app.extensions["provider"]
        provider.clock = lambda: utc(now) if isinstance(now, str) else now
        return app.test_client(), provider

    return make


# --- day windows and trends -------------------------------------------------------------------

def V(k: int) -> float:
    """The system's last score on day k of history_folder (0..10, 10 = today)."""
    return 3.0 + 0.5 * k


def A(k: int) -> float:
    """agent_1's last score on day k."""
    return 9.0 - 0.5 * k


def history_folder(root, today: date):
    """Eleven days up to `today`: points at 00:00 and 23:59, day 9 known from its report only, a run a day."""
    days = [today - timedelta(days=10 - k) for k in range(11)]
    system, agent, runs = [], [], []
    for k, day in enumerate(days[:9]):
        system += [point(at(day, "00:00"), score=1.0), point(at(day, "23:59"), score=V(k))]
        agent.append(point(at(day, "23:59"), score=A(k)))
        runs.append(run_event(at(day, "23:59"), 60))
    runs.append(run_event(at(days[9], "23:59"), 60))
    runs.append(run_event(at(days[8], "00:00:30"), 60))  # started 23:59:30 the day before the window
    system.append(point(at(today, "00:00"), score=V(10)))
    agent.append(point(at(today, "00:00"), score=A(10)))
    runs.append(run_event(at(today, "00:10"), 60))
    metrics = {"system_overall_quality": system, "agent_1_quality": agent, "training_history": runs}
    return write_orchestrator(root, metrics=metrics, reports={days[9]: (V(9), A(9))})


@pytest.fixture(params=["database", "files"])
def source(request):
    """Answered from the database, or from the files alone (database unusable)."""
    return request.param


@pytest.mark.parametrize("zone, now, today", CASES.values(), ids=CASES.keys())
def test_days_windows_are_the_last_n_local_dates(dashboard, tmp_path, source, zone, now, today):
    today = date.fromisoformat(today)
    first = today - timedelta(days=2)
    client, _ = dashboard(history_folder(tmp_path / "orch", today), zone, now, db=source == "database")
    window = [(first + timedelta(days=i)).isoformat() for i in range(3)]

    quality = client.get("/api/metrics/quality?days=3").get_json()
    assert any("database unavailable" in w for w in quality["warnings"]) == (source == "files")
    assert quality["timestamps"] == window
    assert quality["system"] == [V(8), V(9), V(10)] and quality["agent_1"] == [A(8), A(9), A(10)]
    assert client.get("/api/metrics/quality?days=1").get_json()["timestamps"] == [today.isoformat()]
    assert client.get("/api/metrics/trends?days=3").get_json()["timestamps"] == window

    history = client.get("/api/metrics/history/system_overall_quality?days=3").get_json()["points"]
    assert [(p["timestamp"], p["value"]) for p in history] == [
        (local_iso(zone, at(first, "00:00")), 1.0), (local_iso(zone, at(first, "23:59")), V(8)),
        (local_iso(zone, at(today, "00:00")), V(10))]

    runs = client.get("/api/training/history?days=3").get_json()
    assert [(r["date"], r["started_at"]) for r in runs] == [
        (today.isoformat(), local_iso(zone, at(today, "00:09"))),
        ((today - timedelta(days=1)).isoformat(), local_iso(zone, at(today - timedelta(days=1), "23:58"))),
        (first.isoformat(), local_iso(zone, at(first, "23:58")))]


@pytest.mark.parametrize("zone, now, today", CASES.values(), ids=CASES.keys())
def test_trends_average_the_seven_local_days_up_to_each_day(dashboard, tmp_path, source, zone, now, today):
    client, _ = dashboard(history_folder(tmp_path / "orch", date.fromisoformat(today)), zone, now,
                          db=source == "database")
    trends = client.get("/api/metrics/trends?days=3").get_json()
    assert trends["system"] == [V(8), V(9), V(10)]
    # Linear scores: the mean of days k-6..k is day k-3's score.
    assert trends["moving_average_7d"] == [V(5), V(6), V(7)]
    assert (trends["direction"], trends["change"]) == ("improving", V(10) - V(8))
    assert trends["agents"]["agent_1"] == {"latest": A(10), "moving_average_7d": A(7), "direction": "declining"}


def test_the_report_window_and_the_database_at_new_year_and_leap_day(dashboard, tmp_path):
    """The files alone give the newest 60 reports; the database every report in the window."""
    first = date(2027, 12, 31)
    reports = {first + timedelta(days=i): (5.0, 6.0) for i in range(62)}  # up to 2028-03-01
    root = write_orchestrator(tmp_path / "orch", reports=reports)
    now = utc("2028-02-29T23:30Z")  # 2028-03-01 00:30 in Berlin
    for db, oldest in ((True, date(2028, 1, 1)), (False, date(2028, 1, 2))):
        client, _ = dashboard(root, BERLIN, now, db=db)
        quality = client.get("/api/metrics/quality?days=61").get_json()
        timestamps = quality["timestamps"]  # every day of the window, with a score or not
        assert timestamps[0] == "2028-01-01" and timestamps[-1] == "2028-03-01"
        assert "2028-02-29" in timestamps and len(timestamps) == 61
        scored = [day for day, score in zip(timestamps, quality["system"]) if score is not None]
        assert scored[0] == oldest.isoformat() and len(scored) == (date(2028, 3, 2) - oldest).days


# --- the next run -------------------------------------------------------------------------------

NEXT_RUN = {  # id: (zone, schedule, now, the next run)
    "new-year-daily": (BERLIN, "0 3 * * *", "2026-12-31T23:30Z", "2027-01-01T02:00Z"),
    "new-year-yearly-due": (BERLIN, "0 0 1 1 *", "2026-12-31T22:30Z", "2026-12-31T23:00Z"),
    "new-year-yearly-done": (BERLIN, "0 0 1 1 *", "2027-01-01T00:30Z", "2027-12-31T23:00Z"),
    "skipped-0230-fires-at-gap-end": (BERLIN, "30 2 * * *", "2027-03-28T00:45Z", "2027-03-28T01:00Z"),
    "0300-on-23h-day": (BERLIN, "0 3 * * *", "2027-03-28T00:45Z", "2027-03-28T01:00Z"),
    "after-spring-switch": (BERLIN, "30 2 * * *", "2027-03-28T01:30Z", "2027-03-29T00:30Z"),
    "after-spring-switch-0300": (BERLIN, "0 3 * * *", "2027-03-28T01:30Z", "2027-03-29T01:00Z"),
    "repeated-0230-first-pass": (BERLIN, "30 2 * * *", "2027-10-31T00:15Z", "2027-10-31T00:30Z"),
    "repeated-0230-done": (BERLIN, "30 2 * * *", "2027-10-31T00:45Z", "2027-11-01T01:30Z"),
    "repeated-0230-second-pass": (BERLIN, "30 2 * * *", "2027-10-31T01:15Z", "2027-11-01T01:30Z"),
    "after-fall-switch": (BERLIN, "0 3 * * *", "2027-10-31T02:30Z", "2027-11-01T02:00Z"),
    "leap-day-due": (BERLIN, "0 0 29 2 *", "2028-02-28T22:30Z", "2028-02-28T23:00Z"),
    "leap-day-done": (BERLIN, "0 0 29 2 *", "2028-02-28T23:30Z", "2032-02-28T23:00Z"),
    "auckland-new-year": (AUCKLAND, "0 0 1 1 *", "2026-12-31T10:30Z", "2026-12-31T11:00Z"),
    "auckland-0030": (AUCKLAND, "0 3 * * *", "2026-12-31T11:30Z", "2026-12-31T14:00Z"),
    "los-angeles-new-year": (LOS_ANGELES, "0 0 1 1 *", "2027-01-01T07:30Z", "2027-01-01T08:00Z"),
    "los-angeles-0030": (LOS_ANGELES, "0 3 * * *", "2027-01-01T08:30Z", "2027-01-01T11:00Z"),
}


@pytest.mark.parametrize("zone, schedule, now, expected", NEXT_RUN.values(), ids=NEXT_RUN.keys())
def test_next_run_is_the_first_real_instant_of_the_schedule(dashboard, tmp_path, zone, schedule, now, expected):
    client, _ = dashboard(write_orchestrator(tmp_path / "orch", schedule=schedule), zone, now)
    shown = client.get("/api/training/schedule").get_json()
    assert (shown["next_run"], shown["timezone"]) == (iso(utc(expected)), zone)
    assert client.get("/api/dashboard/overview").get_json()["next_training"] == iso(utc(expected))
    assert utc(expected) > utc(now)


def test_a_schedule_on_a_date_that_never_exists_has_no_next_run(dashboard, tmp_path):
    result = {"status": "success", "timestamp": "2027-01-01T00:00", "total_time_seconds": 60}
    client, _ = dashboard(write_orchestrator(tmp_path / "orch", schedule="0 0 30 2 *", result=result),
                          BERLIN, "2027-01-01T00:30Z")
    shown = client.get("/api/training/schedule").get_json()
    assert shown["next_run"] is None and any("never fires" in w for w in shown["warnings"])
    assert client.get("/api/dashboard/overview").get_json()["next_training"] is None
    assert client.get("/api/system/alerts").status_code == 200


def test_the_server_zone_keeps_its_dst_rules(monkeypatch):
    """Without ORCHESTRATOR_TIMEZONE the server's zone applies, with its summer and winter offsets."""
    monkeypatch.setenv("TZ", BERLIN)
    zone = local_provider.orchestrator_zone("")
    assert [datetime(2027, m, 1, tzinfo=zone).utcoffset() for m in (1, 7)] == [timedelta(hours=1), timedelta(hours=2)]


# --- overdue runs ---------------------------------------------------------------------------------

OVERDUE = {  # id: (zone, schedule, the last run (local), the instant 1.5 intervals of wall time after it)
    "new-year": (BERLIN, "0 12 * * *", "2026-12-30T12:00", "2026-12-31T23:00Z"),
    "skipped-0230-is-the-gap-end": (BERLIN, "30 14 * * *", "2027-03-26T14:30", "2027-03-28T01:00Z"),
    "repeated-0230-is-the-first": (BERLIN, "30 14 * * *", "2027-10-29T14:30", "2027-10-31T00:30Z"),
    "leap-day": (BERLIN, "0 12 * * *", "2028-02-28T12:00", "2028-02-29T23:00Z"),
    "auckland": (AUCKLAND, "0 12 * * *", "2026-12-30T12:00", "2026-12-31T11:00Z"),
    "los-angeles": (LOS_ANGELES, "0 12 * * *", "2026-12-30T12:00", "2027-01-01T08:00Z"),
}


@pytest.mark.parametrize("zone, schedule, last, due", OVERDUE.values(), ids=OVERDUE.keys())
def test_the_overdue_alert_starts_exactly_at_its_deadline(dashboard, tmp_path, zone, schedule, last, due):
    result = {"status": "success", "timestamp": last, "total_time_seconds": 60}
    client, provider = dashboard(write_orchestrator(tmp_path / "orch", schedule=schedule, result=result), zone, due)

    def overdue(moment: datetime) -> list[dict]:
        provider.clock = lambda: moment
        return [a for a in client.get("/api/system/alerts").get_json() if a["id"] == "training.overdue"]

    deadline = utc(due)
    assert overdue(deadline - timedelta(seconds=1)) == [] and overdue(deadline) == []
    # Raised a second later and still an hour later (at the fall-back switch, in the repeated hour).
    for moment in (deadline + timedelta(seconds=1), deadline + timedelta(hours=1)):
        assert [a["since"] for a in overdue(moment)] == [iso(deadline)]


# --- rolling windows and retention --------------------------------------------------------------

@pytest.mark.parametrize("now, lines", [
    ("2027-10-31T11:00Z", ["2027-10-30 12:30:00,000", "2027-10-30 13:30:00,000"]),  # 25-hour day
    ("2027-03-28T11:00Z", ["2027-03-27 11:30:00,000", "2027-03-27 12:30:00,000"]),  # 23-hour day
], ids=["25h-day", "23h-day"])
def test_errors_24h_counts_the_last_24_real_hours(dashboard, tmp_path, now, lines):
    """Errors 24.5 and 23.5 real hours before now (Berlin): only the second is in the last 24 hours."""
    root = write_orchestrator(tmp_path / "orch", log_lines=[f"{t} - HolisticTrainer - ERROR - boom {t}" for t in lines])
    client, _ = dashboard(root, BERLIN, now)
    assert client.get("/api/dashboard/quick-stats").get_json()["errors_24h"] == 1


RETENTION_NOW = ["2027-01-01T00:30Z", "2027-03-28T01:30Z", "2027-10-31T02:30Z", "2028-03-01T00:30Z"]


@pytest.mark.parametrize("now", RETENTION_NOW)
def test_health_retention_keeps_exactly_the_last_days(tmp_path, now):
    path = tmp_path / "db.sqlite"
    database.migrate(path)
    conn = database.connect(path)
    cutoff = utc(now) - timedelta(days=30)
    for moment in (cutoff - timedelta(seconds=1), cutoff, utc(now)):
        sampler.store_sample(conn, {"timestamp": iso(moment), "cpu_percent": 1.0})
    assert sampler.prune(conn, 30, now=utc(now)) == 1
    assert [r[0] for r in conn.execute("SELECT timestamp FROM system_health ORDER BY 1")] == [iso(cutoff), iso(utc(now))]
    conn.close()


@pytest.mark.parametrize("now", RETENTION_NOW)
def test_health_history_is_the_last_hours_before_now(dashboard, tmp_path, now):
    client, _ = dashboard(write_orchestrator(tmp_path / "orch"), BERLIN, now)
    start = utc(now) - timedelta(hours=24)
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.executemany("INSERT INTO system_health (timestamp, cpu_percent) VALUES (?, 1.0)",
                         [(iso(m),) for m in (start - timedelta(seconds=1), start, utc(now))])
    samples = client.get("/api/system/health/history?hours=24").get_json()["samples"]
    assert [s["timestamp"] for s in samples] == [iso(start), iso(utc(now))]


# --- the example orchestrator's own calendar (naive local time) ----------------------------------

@pytest.mark.parametrize("expr, after, expected", [
    ("0 3 * * *", "2026-12-31 23:30", "2027-01-01 03:00"),
    ("0 0 1 1 *", "2026-12-31 23:30", "2027-01-01 00:00"),
    ("0 0 1 1 *", "2027-01-01 00:00", "2028-01-01 00:00"),
    ("30 2 * * *", "2027-03-28 01:30", "2027-03-28 02:30"),  # a wall time Berlin skips: naive on purpose
    ("0 3 * * *", "2027-10-31 02:30", "2027-10-31 03:00"),
    ("0 0 29 2 *", "2028-02-28 23:30", "2028-02-29 00:00"),
    ("0 0 * * 2", "2028-02-28 00:30", "2028-02-29 00:00"),  # Tuesday 2028-02-29
    ("0 0 29 2 *", "2028-02-29 00:30", "2032-02-29 00:00"),  # four years ahead
])
def test_example_next_cron_time(expr, after, expected):
    assert example.next_cron_time(expr, datetime.fromisoformat(after)) == datetime.fromisoformat(expected)


@pytest.mark.parametrize("schedule, now, expected", [
    ("0 3 * * *", "2026-12-31 23:30", "2026-12-31"),
    ("0 3 * * *", "2027-01-01 00:30", "2026-12-31"),
    ("0 0 1 1 *", "2027-01-01 00:30", "2026-12-31"),  # today's 00:00 run is not an hour old yet
    ("0 0 1 1 *", "2027-01-01 01:30", "2027-01-01"),
    ("0 3 * * *", "2027-03-28 03:30", "2027-03-27"),
    ("30 2 * * *", "2027-03-28 03:30", "2027-03-28"),
    ("0 3 * * *", "2027-10-31 03:30", "2027-10-30"),
    ("0 0 29 2 *", "2028-02-29 00:30", "2028-02-28"),
    ("0 0 29 2 *", "2028-02-29 23:30", "2028-02-29"),
    ("30 23 * * *", "2027-01-01 00:15", "2026-12-30"),  # yesterday's run fired 45 minutes ago
    ("30 23 * * *", "2027-01-01 00:31", "2026-12-31"),
])
def test_example_last_run_day(schedule, now, expected):
    assert example.last_run_day(schedule, datetime.fromisoformat(now)) == date.fromisoformat(expected)
