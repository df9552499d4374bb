"""Alert notifications in one process: the settings' checks, the ack endpoint's validation, an ack that
lapses, what is fanned out to whom, and the outbox's bounds (the end-to-end tests: test_notifications.py)."""
from __future__ import annotations

import hashlib
import hmac
import sqlite3
import threading
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import database
from app import create_app
from conftest import ingest
from servers import Gunicorn
from webhook_receiver import Receiver, signed
from dashboard.config import ConfigError, load_config
from dashboard.notify import outbox, webhook
from dashboard.notify.notifier import Notifier
from dashboard.notify.targets import targets_of
from dashboard.store import alert_acks
from dashboard.timestamps import to_iso

URL = "https://hooks.example.com/services/T000/B000/t0ps3cret"


def test_http_targets_need_the_insecure_switch_and_the_message_says_so_without_the_token(tmp_path):
    with pytest.raises(ConfigError) as err:
        create_app({"ALERT_WEBHOOK_URLS": ["http://hooks.example.com/x/t0ps3cret"], "DATABASE_PATH": tmp_path / "db",
                    "LOG_FILE": None, "INGEST_SECONDS": 0, "HEALTH_SAMPLE_SECONDS": 0})
    assert "https://" in str(err.value) and "CLOUD_ALLOW_INSECURE_HTTP" in str(err.value)
    assert "t0ps3cret" not in str(err.value)
    assert targets_of({"ALERT_WEBHOOK_URLS": ["http://127.0.0.1:9/h"], "CLOUD_ALLOW_INSECURE_HTTP": True})
    for bad in ("ftp://x/y", "https://user:pw@x/y", "https://x/y#frag", "https:///nohost"):
        with pytest.raises(ConfigError):
            targets_of({"ALERT_WEBHOOK_URLS": [bad]})


def test_the_settings_are_typed_and_checked():
    config = load_config({"ALERT_WEBHOOK_URLS": f"{URL}, https://b.example.org/h", "ALERT_WEBHOOK_FORMAT": "SLACK"})
    assert config["ALERT_WEBHOOK_URLS"] == [URL, "https://b.example.org/h"]
    assert config["ALERT_WEBHOOK_FORMAT"] == "slack"
    assert config["ALERT_WEBHOOK_MIN_SEVERITY"] == "warning" and config["ALERT_WEBHOOK_RETRY_HOURS"] >= 24
    for name, value in (("ALERT_WEBHOOK_FORMAT", "xml"), ("ALERT_WEBHOOK_MIN_SEVERITY", "debug"),
                        ("ALERT_WEBHOOK_RETRY_HOURS", "2"), ("ALERT_WEBHOOK_TIMEOUT_SECONDS", "0")):
        with pytest.raises(ConfigError, match=name):
            load_config({name: value})
    assert repr(targets_of({"ALERT_WEBHOOK_URLS": [URL]})[0]) == "Target(hooks.example.com)"


def test_backoff_grows_to_its_cap_with_jitter_and_honours_retry_after():
    assert all(0.5 <= webhook.backoff(1, 600) <= 1 for _ in range(50))
    assert all(300 <= webhook.backoff(30, 600) <= 600 for _ in range(50))
    assert webhook.backoff(1, 600, retry_after=120) == 120


def test_the_signature_is_the_hmac_sha256_of_the_body():
    assert webhook.signature("key", b"body") == "sha256=" + hmac.new(b"key", b"body", hashlib.sha256).hexdigest()


@pytest.mark.parametrize("answer, outcome", [
    (200, webhook.Outcome("sent")),
    (204, webhook.Outcome("sent")),
    ((429, {"Retry-After": "120"}), webhook.Outcome("retry", "HTTP 429", 120.0)),
    (503, webhook.Outcome("retry", "HTTP 503")),
    ((302, {"Location": "https://elsewhere.example/"}),
     webhook.Outcome("failed", "HTTP 302: a redirect, not followed")),
    (404, webhook.Outcome("failed", "HTTP 404")),
])
def test_each_answer_is_sent_retried_or_failed_and_a_redirect_is_not_followed(answer, outcome):
    receiver = Receiver(answer=lambda document: answer).start()
    try:
        got = webhook.post(webhook.session(), receiver.url(), b'{"event": "test"}', "d-1", "s3cret", 5)
        assert got == outcome
        [request] = receiver.requests()  # one request: no redirect followed, no retry here
        assert signed(request, "s3cret") and request["headers"]["X-Dashboard-Delivery"] == "d-1"
    finally:
        receiver.stop()


def test_a_slow_receiver_is_a_timeout_to_retry_and_a_closed_port_a_connection_error():
    receiver = Receiver().start()
    receiver.hold = threading.Event()
    try:
        assert webhook.post(webhook.session(), receiver.url(), b"{}", "d", "", 0.3).status == "retry"
    finally:
        receiver.hold.set()
        receiver.stop()
    got = webhook.post(webhook.session(), receiver.url(), b"{}", "d", "", 1)
    assert got.status == "retry" and got.error.startswith("connection failed") and "t0ps3cret" not in got.error


@pytest.fixture
def alerting(make_app, orchestrator):
    """An app whose every agent is below the threshold: active alerts recorded by an ingest."""
    app = make_app(orchestrator(), QUALITY_THRESHOLD=10.0)
    return app, app.test_client()


def test_ack_validates_its_id_and_body_and_404s_an_unknown_alert(alerting):
    app, client = alerting
    alert_id = client.get("/api/system/alerts").get_json()[0]["id"]
    assert client.post("/api/system/alerts/no.such.alert/ack").status_code == 404
    assert client.post("/api/system/alerts/bad%20id;drop/ack").status_code == 400
    for body in ({"minutes": 0}, {"minutes": "5"}, {"minutes": 10081}, {"note": "x" * 501}, {"other": 1}):
        answer = client.post(f"/api/system/alerts/{alert_id}/ack", json=body)
        assert answer.status_code == 400, body
    answer = client.post(f"/api/system/alerts/{alert_id}/ack")  # no body: acknowledged until it clears
    assert answer.status_code == 200 and answer.get_json()["acknowledged"] is True
    assert answer.get_json()["note"] is None


def test_an_ack_with_minutes_lapses_then_the_alert_reminds_once(alerting):
    app, client = alerting
    alert_id = client.get("/api/system/alerts").get_json()[0]["id"]
    assert client.post(f"/api/system/alerts/{alert_id}/ack", json={"note": "later", "minutes": 5}).status_code == 200
    row = next(a for a in client.get("/api/system/alerts").get_json() if a["id"] == alert_id)
    assert row["acknowledged"] is True and row["note"] == "later"
    with closing(database.connect(app.config["DATABASE_PATH"])) as conn:
        later = datetime.now(timezone.utc) + timedelta(minutes=6)
        shown = alert_acks.with_acks([{"id": alert_id}], alert_acks.acks(conn), to_iso(later))
        assert shown[0]["acknowledged"] is False
        before = conn.execute("SELECT COUNT(*) FROM notifications WHERE alert_id = ?", (alert_id,)).fetchone()[0]
        assert outbox.queue_reminders(conn, 0, datetime.now(timezone.utc)) == 0  # still acknowledged
        assert outbox.queue_reminders(conn, 0, later) == 1  # lapsed: one reminder, the ack gone
        assert outbox.queue_reminders(conn, 0, later) == 0
        after = conn.execute("SELECT COUNT(*) FROM notifications WHERE alert_id = ?", (alert_id,)).fetchone()[0]
        assert after == before + 1 and alert_acks.acks(conn) == {}


def test_fan_out_follows_the_severity_floor_and_the_completed_switch(make_app, orchestrator):
    app = make_app(orchestrator())
    config = {**app.config, "ALERT_WEBHOOK_URLS": [URL], "ALERT_WEBHOOK_MIN_SEVERITY": "critical"}
    notifier = Notifier(config)
    assert notifier.wanted("test", "info") and notifier.wanted("training.failed", "critical")
    assert not notifier.wanted("alert.raised", "warning") and not notifier.wanted("training.completed", "info")
    assert Notifier({**config, "ALERT_WEBHOOK_NOTIFY_COMPLETED": True}).wanted("training.completed", "info")
    with closing(database.connect(app.config["DATABASE_PATH"])) as conn:
        now = datetime.now(timezone.utc)
        with database.transaction(conn):
            outbox.queue(conn, "test", "info", created_at=to_iso(now - timedelta(days=3)))  # too old to say
            outbox.queue(conn, "alert.raised", "warning", alert={"id": "a"}, created_at=to_iso(now))
            outbox.queue(conn, "test", "info", created_at=to_iso(now))
        added = outbox.fan_out(conn, notifier.targets, notifier.wanted, to_iso(now), to_iso(now - timedelta(days=2)))
        assert added == 1 and outbox.recent(conn, 10)[0]["target"] == "hooks.example.com"
        assert conn.execute("SELECT COUNT(*) FROM notifications WHERE fanned_out = 0").fetchone()[0] == 0


def test_a_run_ending_and_an_old_run_read_from_the_files(make_app, orchestrator):
    app = make_app(orchestrator())  # two weeks of runs ingested: none of them is news
    with closing(database.connect(app.config["DATABASE_PATH"])) as conn:
        assert conn.execute("SELECT COUNT(*) FROM notifications WHERE run IS NOT NULL").fetchone()[0] == 0
        with database.transaction(conn):
            conn.execute("INSERT INTO training_sessions (start_time, status, origin, run_id) VALUES (?, 'running',"
                         " 'dashboard', 'r1')", (to_iso(datetime.now(timezone.utc)),))
            conn.execute("UPDATE training_sessions SET status = 'failed', error_message = 'exit 3' WHERE run_id = 'r1'")
        row = conn.execute("SELECT event, severity, run FROM notifications WHERE run IS NOT NULL").fetchone()
        assert (row["event"], row["severity"]) == ("training.failed", "critical") and '"error":"exit 3"' in row["run"]
        with database.transaction(conn):
            conn.execute("INSERT INTO training_sessions (start_time, status, origin, run_id) VALUES (?, 'running',"
                         " 'dashboard', 'r2')", (to_iso(datetime.now(timezone.utc)),))
            conn.execute("UPDATE training_sessions SET status = 'completed' WHERE run_id = 'r2'")
            conn.execute("UPDATE training_sessions SET status = 'completed' WHERE run_id = 'r2'")  # no change: no event
        events = [r[0] for r in conn.execute("SELECT event FROM notifications WHERE run IS NOT NULL ORDER BY id")]
        assert events == ["training.failed", "training.completed"]
    ingest(app)


def test_the_schema_and_the_migration_build_the_same_triggers(tmp_path):
    fresh, old = tmp_path / "fresh.db", tmp_path / "old.db"
    database.migrate(fresh)
    with closing(sqlite3.connect(old)) as conn:
        conn.executescript((Path(__file__).parent / "fixtures" / "schema_v1.sql").read_text())
        conn.execute("PRAGMA user_version = 1")
    database.migrate(old)
    query = "SELECT type, name FROM sqlite_master WHERE name LIKE 'notif%' OR name LIKE '%ack%' ORDER BY 1, 2"
    with closing(sqlite3.connect(fresh)) as a, closing(sqlite3.connect(old)) as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
        assert len([1 for (kind, _) in a.execute(query) if kind == "trigger"]) == 5


def test_the_test_notification_and_the_ack_need_the_key_like_every_post(make_app, orchestrator):
    client = make_app(orchestrator(), API_KEY="k3y-for-posts").test_client()
    for path in ("/api/system/notifications/test", "/api/system/alerts/training.overdue/ack"):
        assert client.post(path).status_code == 401
    answer = client.post("/api/system/notifications/test", headers={"Authorization": "Bearer k3y-for-posts"})
    assert answer.status_code == 202 and answer.get_json() == {"queued": 0, "targets": [], "warnings": [
        "no webhook targets: set ALERT_WEBHOOK_URLS (docs/notifications.md)"]}
    assert client.get("/api/system/notifications").status_code == 200  # reads stay open without REQUIRE_AUTH_FOR_READS


def test_prune_forgets_old_notifications_but_never_a_pending_delivery(make_app, orchestrator):
    app = make_app(orchestrator())
    notifier = Notifier({**app.config, "ALERT_WEBHOOK_URLS": [URL]})
    old = to_iso(datetime.now(timezone.utc) - timedelta(days=40))
    with closing(database.connect(app.config["DATABASE_PATH"])) as conn:
        with database.transaction(conn):
            kept, gone = (outbox.queue(conn, "test", "info", created_at=old) for _ in range(2))
        outbox.fan_out(conn, notifier.targets, notifier.wanted, old, old)
        delivery = conn.execute("SELECT id FROM notification_deliveries WHERE notification_id = ?",
                                (gone,)).fetchone()[0]
        outbox.mark_sent(conn, delivery, old)
        assert outbox.prune(conn, to_iso(datetime.now(timezone.utc) - timedelta(days=30))) == 1
        assert [r[0] for r in conn.execute("SELECT id FROM notifications WHERE created_at = ?", (old,))] == [kept]
        assert [r["status"] for r in outbox.recent(conn, 10)] == ["pending"]


def test_gunicorn_will_not_start_with_an_http_webhook_and_says_why(orchestrator, tmp_path):
    server = Gunicorn(orchestrator(days=0), tmp_path / "srv", to_file=True, GUNICORN_WORKERS="1",
                      ALERT_WEBHOOK_URLS="http://127.0.0.1:9/hook?token=t0ps3cret", CLOUD_ALLOW_INSECURE_HTTP="false")
    server.launch()
    assert server.proc.wait(timeout=60) != 0
    output = server.output.read_text(errors="replace")
    assert "must use https://" in output and "CLOUD_ALLOW_INSECURE_HTTP=true" in output
    assert "t0ps3cret" not in output
