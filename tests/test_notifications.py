"""Alert notifications end to end: a real gunicorn app over a fixture orchestrator, and a real receiver of
the test's own (webhook_receiver.Receiver); the alert conditions are written into the fixture here."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import poll
from servers import Gunicorn
from webhook_receiver import Receiver, signed

SECRET = "whsec-7f3a9c1e5b2d"
TOKEN = "t0ps3cret-path"
HOST_ALERTS_OFF = {f"ALERT_{r}_{lvl}": "0" for r in ("CPU", "MEMORY", "DISK") for lvl in ("WARNING", "CRITICAL")}
BODY_KEYS = {"delivery_id", "event", "alert", "run", "dashboard", "sent_at"}


def write_result(root: Path, status: str, error: str | None = None, seconds_ago: int = 0) -> None:
    """The orchestrator's last-run result, ended now (or `seconds_ago`): `failed` raises training.last_run_failed."""
    path = root / "holistic_training_result.json"
    result = json.loads(path.read_text(encoding="utf-8"))
    ended = datetime.now() - timedelta(seconds=seconds_ago)
    result.update(status=status, error=error, timestamp=ended.isoformat(timespec="seconds"))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, path)


def serve(root: Path, workdir: Path, receiver: Receiver, **env) -> Gunicorn:
    """The app under gunicorn (2 workers), its webhook the receiver (http: the insecure switch on); answers
    not cached, so each read shows the outbox as it is."""
    settings = {"RESPONSE_CACHE_SECONDS": "0", "ALERT_WEBHOOK_URLS": receiver.url(),
                "CLOUD_ALLOW_INSECURE_HTTP": "true",
                "ALERT_WEBHOOK_SECRET": SECRET, "ALERT_WEBHOOK_BACKOFF_MAX_SECONDS": "1", **HOST_ALERTS_OFF, **env}
    return Gunicorn(root, workdir, to_file=True, **settings)


def deliveries(server: Gunicorn) -> list[dict]:
    """GET /api/system/notifications, oldest first."""
    status, rows = server.get_json("/api/system/notifications?limit=1000")
    assert status == 200
    return rows[::-1]


def of(receiver: Receiver, event: str, alert_id: str | None = None) -> list[dict]:
    """The json bodies received of `event` (and that alert)."""
    return [d for d in receiver.documents() if d.get("event") == event
            and (alert_id is None or (d["alert"] or {}).get("id") == alert_id)]


def settle(server: Gunicorn, receiver: Receiver) -> None:
    """Wait until the notifier delivers (a test notification arrives) and nothing is pending."""
    assert server.post_json("/api/system/notifications/test", {})[0] == 202
    poll(lambda: deliveries(server), lambda rows: rows and all(r["status"] == "sent" for r in rows))


def assert_no_secret_logged(server: Gunicorn) -> None:
    logs = server.logs()
    assert "notifier: this process is the leader" in logs
    assert SECRET not in logs and TOKEN not in logs


@pytest.mark.parametrize("fmt", ["json", "slack"])
def test_a_raised_alert_and_its_clearing_arrive_once_signed_within_5_s(orchestrator, tmp_path, fmt):
    root, receiver = orchestrator(), Receiver().start()
    try:
        with serve(root, tmp_path / "srv", receiver, ALERT_WEBHOOK_FORMAT=fmt) as server:
            settle(server, receiver)
            before = len(receiver.requests())
            write_result(root, "failed", "disk full")

            def about(text: str) -> list[dict]:
                return [r for r in receiver.requests()[before:] if text in r["raw"].decode()]

            if fmt == "json":
                raised = lambda: of(receiver, "alert.raised", "training.last_run_failed")  # noqa: E731
                cleared = lambda: of(receiver, "alert.cleared", "training.last_run_failed")  # noqa: E731
            else:
                raised = lambda: about("alert raised: last training run failed")  # noqa: E731
                cleared = lambda: about("alert cleared: last training run failed")  # noqa: E731
            poll(raised, lambda found: len(found) >= 1, deadline_seconds=5)
            poll(lambda: about("training failed" if fmt == "slack" else '"training.failed"'), bool, 5)
            write_result(root, "success")
            poll(cleared, lambda found: len(found) >= 1, deadline_seconds=5)
            settle(server, receiver)
            assert len(raised()) == 1 and len(cleared()) == 1
            for request in receiver.requests():
                assert signed(request, SECRET)
                assert request["path"] == f"/hook?token={TOKEN}"
                if fmt == "json":
                    assert set(request["json"]) == BODY_KEYS
                    assert request["headers"]["X-Dashboard-Delivery"] == request["json"]["delivery_id"]
                else:
                    assert set(request["json"]) == {"text"}
            if fmt == "json":
                alert = of(receiver, "alert.cleared", "training.last_run_failed")[0]["alert"]
                assert alert["severity"] == "critical" and alert["ended_at"] and "disk full" in alert["message"]
                run = of(receiver, "training.failed")[-1]["run"]
                assert run["status"] == "failed" and run["error"] == "disk full" and run["run_id"]
            rows = deliveries(server)
            assert {r["target"] for r in rows} == {f"127.0.0.1:{receiver.port}"}
            assert {r["status"] for r in rows} == {"sent"}
            assert len({r["delivery_id"] for r in rows}) == len(rows) == len(receiver.requests())
        assert_no_secret_logged(server)
    finally:
        receiver.stop()


def test_a_receiver_down_for_30_s_and_a_restart_lose_nothing_and_send_nothing_twice(orchestrator, tmp_path):
    root, receiver = orchestrator(), Receiver().start()
    try:
        with serve(root, tmp_path / "srv", receiver) as server:
            settle(server, receiver)
            known = len(deliveries(server))
            receiver.stop()
            down_at = time.monotonic()
            for step, (status, error) in enumerate([("failed", "first"), ("failed", "second"), ("success", None)]):
                write_result(root, status, error, seconds_ago=3 - step)  # three runs, a second apart
                # each state seen by the ingester before the next: its notifications are queued
                poll(lambda: deliveries(server), lambda rows: len(rows) >= known + (2, 3, 4)[step])
            assert server.post_json("/api/system/notifications/test", {})[0] == 202
            poll(lambda: deliveries(server)[known]["attempts"], lambda n: n >= 3)
            poll(lambda: time.monotonic() - down_at, lambda waited: waited >= 30, deadline_seconds=40)
            queued = deliveries(server)[known:]
            assert {r["status"] for r in queued} == {"pending"}
            assert server.stop() == 0  # a restart meanwhile: the outbox is in the database
            server.start()
            receiver.start()
            rows = poll(lambda: deliveries(server), lambda rows: all(r["status"] == "sent" for r in rows))[-1]
            arrived = [r["headers"]["X-Dashboard-Delivery"] for r in receiver.requests()]
            after = arrived[len(arrived) - len(rows[known:]):]
            assert after == [r["delivery_id"] for r in rows[known:]]
            assert len(set(arrived)) == len(arrived)
            events = [r["event"] for r in rows[known:]]
            assert events.count("training.failed") == 2 and events[-1] == "test", [
                (r["event"], r["alert_id"], r["created_at"]) for r in rows[known:]]
            assert events.index("alert.raised") < events.index("alert.cleared")
        assert_no_secret_logged(server)
    finally:
        receiver.stop()


def test_a_500_is_retried_and_a_400_is_failed_for_good(orchestrator, tmp_path):
    script = [200, 500, 200, 400, 200]  # the answers to the test notifications, in turn
    lock = threading.Lock()

    def answer(document: dict) -> int:
        if document["event"] != "test":
            return 200
        with lock:
            return script.pop(0)

    root, receiver = orchestrator(), Receiver(answer=answer).start()
    try:
        with serve(root, tmp_path / "srv", receiver) as server:
            settle(server, receiver)

            def test_rows():
                return [r for r in deliveries(server) if r["event"] == "test"]

            server.post_json("/api/system/notifications/test", {})
            retried = poll(test_rows, lambda rows: len(rows) == 2 and rows[1]["status"] == "sent")[-1][1]
            assert retried["attempts"] == 2 and retried["last_error"] is None
            server.post_json("/api/system/notifications/test", {})
            server.post_json("/api/system/notifications/test", {})
            rows = poll(test_rows, lambda rows: len(rows) == 4 and rows[3]["status"] == "sent")[-1]
            assert rows[2]["status"] == "failed" and rows[2]["attempts"] == 1 and rows[2]["last_error"] == "HTTP 400"
            arrived = [r["headers"]["X-Dashboard-Delivery"] for r in receiver.requests()]
            assert arrived.count(rows[1]["delivery_id"]) == 2 and arrived.count(rows[2]["delivery_id"]) == 1
            assert "failed for good: HTTP 400" in server.logs()
    finally:
        receiver.stop()


def leader_pid(server: Gunicorn) -> int:
    """The pid of the worker that last became the notifier's leader, from the log."""
    found = re.findall(r"\[(\d+)\] dashboard\.notify\.notifier: notifier: this process is the leader", server.logs())
    assert found, server.logs()[-2000:]
    return int(found[-1])


def test_sigkill_of_the_sending_worker_mid_delivery_loses_nothing(orchestrator, tmp_path):
    root, receiver = orchestrator(), Receiver().start()
    try:
        with serve(root, tmp_path / "srv", receiver) as server:
            settle(server, receiver)
            known, first_leader = len(deliveries(server)), leader_pid(server)
            receiver.hold = threading.Event()
            for _ in range(3):
                server.post_json("/api/system/notifications/test", {})
            poll(lambda: len(receiver.requests()), lambda n: n == known + 1)  # the first is held mid-delivery
            os.kill(first_leader, signal.SIGKILL)
            receiver.hold.set()
            rows = poll(lambda: deliveries(server), lambda rows: len(rows) == known + 3
                        and all(r["status"] == "sent" for r in rows), deadline_seconds=60)[-1]
            assert leader_pid(server) != first_leader
            arrived = [r["headers"]["X-Dashboard-Delivery"] for r in receiver.requests()][known:]
            ids = [r["delivery_id"] for r in rows[known:]]
            # the one whose answer was lost comes again (same delivery_id), the others once, in order
            assert [i for n, i in enumerate(arrived) if i not in arrived[:n]] == ids
            assert arrived.count(ids[0]) == 2 and arrived.count(ids[1]) == arrived.count(ids[2]) == 1
            assert rows[known]["attempts"] == arrived.count(ids[0])
        assert_no_secret_logged(server)
    finally:
        receiver.stop()


def test_an_acknowledged_alert_sends_nothing_more_until_it_clears(orchestrator, tmp_path):
    root, receiver = orchestrator(), Receiver().start()
    try:
        # Every agent below the threshold: alerts that remind every ~1 s, the clock of this test.
        with serve(root, tmp_path / "srv", receiver, ALERT_WEBHOOK_REPEAT_MINUTES="0.02",
                   QUALITY_THRESHOLD="10") as server:
            settle(server, receiver)
            write_result(root, "failed", "oom")
            poll(lambda: of(receiver, "alert.raised", "training.last_run_failed"), lambda found: len(found) >= 2)
            status, alert = server.post_json("/api/system/alerts/training.last_run_failed/ack", {"note": "on it"})
            assert status == 200 and alert["acknowledged"] and alert["note"] == "on it"
            listed = {a["id"]: a for a in server.get_json("/api/system/alerts")[1]}
            acked = listed["training.last_run_failed"]
            assert acked["acknowledged"] is True and acked["acknowledged_at"] and acked["note"] == "on it"
            other = next(a for a in listed.values() if not a["acknowledged"])
            assert other["note"] is None and other["acknowledged_at"] is None
            poll(lambda: deliveries(server), lambda rows: all(r["status"] != "pending" for r in rows))
            reminders = len(of(receiver, "alert.raised", "training.last_run_failed"))
            since = len(of(receiver, "alert.raised", other["id"]))
            poll(lambda: of(receiver, "alert.raised", other["id"]), lambda found: len(found) >= since + 3)
            assert len(of(receiver, "alert.raised", "training.last_run_failed")) == reminders
            write_result(root, "success")
            poll(lambda: of(receiver, "alert.cleared", "training.last_run_failed"), bool)
            assert server.post_json("/api/system/alerts/training.last_run_failed/ack", {})[0] == 404
    finally:
        receiver.stop()
