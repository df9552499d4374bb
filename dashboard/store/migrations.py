"""The database's schema: schema.sql, the current version, which a new database is created from; and the
forward steps that take an older database from each version to the next, starting at version 1 (frozen in
tests/fixtures/schema_v1.sql). After a new step, schema.sql is changed to match it."""
from __future__ import annotations

from pathlib import Path

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.sql"  # beside database.py, which loads it
# Forward migrations: MIGRATIONS[i] takes user_version i+1 to i+2 (statements split on ";").
# A step may rebuild a table, but it copies every row across: upgrading never loses data.
MIGRATIONS: list[str] = [
    # 2: natural keys so ingesting the same file twice adds nothing; training control; active alerts.
    """
    ALTER TABLE metrics ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
    UPDATE metrics SET source = 'v1:' || id;
    CREATE UNIQUE INDEX idx_metrics_natural ON metrics (source, metric_type, timestamp);
    ALTER TABLE events ADD COLUMN source TEXT;
    ALTER TABLE events ADD COLUMN fingerprint TEXT;
    CREATE UNIQUE INDEX idx_events_fingerprint ON events (fingerprint) WHERE fingerprint IS NOT NULL;
    CREATE INDEX idx_events_severity_time ON events (severity, timestamp);
    CREATE TABLE training_sessions_v2 (
        id INTEGER PRIMARY KEY,
        start_time TEXT,
        end_time TEXT,
        agents_trained INTEGER,
        overall_improvement REAL,
        status TEXT NOT NULL,
        phase TEXT,
        error_message TEXT,
        origin TEXT NOT NULL DEFAULT 'orchestrator',
        run_key TEXT,
        duration_seconds REAL,
        overall_quality REAL,
        agents_failed INTEGER,
        pid INTEGER,
        command TEXT,
        output_path TEXT,
        exit_code INTEGER
    );
    INSERT INTO training_sessions_v2 (id, start_time, end_time, agents_trained, overall_improvement, status,
                                      phase, error_message)
        SELECT id, start_time, end_time, agents_trained, overall_improvement, status, phase, error_message
        FROM training_sessions;
    UPDATE training_sessions_v2 SET status = 'unknown' WHERE status = 'running'
        AND id <> (SELECT MAX(id) FROM training_sessions_v2 WHERE status = 'running');
    DROP TABLE training_sessions;
    ALTER TABLE training_sessions_v2 RENAME TO training_sessions;
    CREATE INDEX idx_sessions_start ON training_sessions (start_time);
    CREATE INDEX idx_sessions_end ON training_sessions (end_time);
    CREATE INDEX idx_sessions_last_seen ON training_sessions (COALESCE(end_time, start_time));
    CREATE UNIQUE INDEX idx_sessions_run_key ON training_sessions (run_key) WHERE run_key IS NOT NULL;
    CREATE UNIQUE INDEX idx_sessions_one_running ON training_sessions (status) WHERE status = 'running';
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        severity TEXT NOT NULL,
        source TEXT NOT NULL,
        message TEXT NOT NULL,
        since TEXT NOT NULL
    );
    CREATE TABLE ingested_files (
        path TEXT PRIMARY KEY,
        mtime_ns INTEGER NOT NULL,
        size INTEGER NOT NULL,
        ingested_at TEXT NOT NULL
    )
    """,
    # 3: request counters shared by every worker (rate limits) and the readiness probe's write target.
    """
    CREATE TABLE rate_limits (
        key TEXT NOT NULL,
        window INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (key, window)
    );
    CREATE INDEX idx_rate_limits_window ON rate_limits (window);
    CREATE TABLE readiness_probe (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at TEXT NOT NULL
    )
    """,
    # 4: the storyboard list is read a page at a time, newest first.
    """
    CREATE INDEX idx_projects_created ON storyboard_projects (created_at)
    """,
    # 5: a counter per path prefix, bumped by each successful POST: every worker's cached answers under a
    # prefix hold only while its counter is unchanged (Generations, response_cache).
    """
    CREATE TABLE cache_generations (
        prefix TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )
    """,
    # 6: where the ingester stopped in each growing file (points per series of the metrics file), so a
    # rewritten file is read on from there, not recorded again; and two agents' points in the same second
    # of one series (success_rate, training_speed_ms) are two rows, not one overwriting the other.
    """
    DROP INDEX idx_metrics_natural;
    CREATE UNIQUE INDEX idx_metrics_natural ON metrics (source, metric_type, timestamp, COALESCE(agent_id, ''));
    CREATE TABLE ingest_cursors (
        path TEXT NOT NULL,
        series TEXT NOT NULL,
        position INTEGER NOT NULL,
        last_key TEXT,
        PRIMARY KEY (path, series)
    )
    """,
    # 7: one id per run, and dashboard sessions numbered apart from the runs read from the files. run_id is
    # the run's start (else its end) in UTC, "20261207T030001Z", with ".2", ".3"... when taken already;
    # session_number numbers the dashboard's own sessions from 1 (the API's session_id).
    """
    ALTER TABLE training_sessions ADD COLUMN run_id TEXT;
    ALTER TABLE training_sessions ADD COLUMN session_number INTEGER;
    UPDATE training_sessions SET session_number = (SELECT COUNT(*) FROM training_sessions AS t
        WHERE t.origin = 'dashboard' AND t.id <= training_sessions.id) WHERE origin = 'dashboard';
    CREATE TEMP TABLE run_ids (id INTEGER PRIMARY KEY, run_id TEXT);
    INSERT INTO run_ids (id, run_id) SELECT id, base || CASE WHEN n > 1 THEN '.' || n ELSE '' END
        FROM (SELECT id, strftime('%Y%m%dT%H%M%SZ', COALESCE(start_time, end_time)) AS base,
              ROW_NUMBER() OVER (PARTITION BY strftime('%Y%m%dT%H%M%SZ', COALESCE(start_time, end_time)) ORDER BY id) AS n
              FROM training_sessions);
    UPDATE training_sessions SET run_id = (SELECT run_id FROM run_ids WHERE run_ids.id = training_sessions.id);
    DROP TABLE run_ids;
    CREATE UNIQUE INDEX idx_sessions_run_id ON training_sessions (run_id) WHERE run_id IS NOT NULL;
    CREATE UNIQUE INDEX idx_sessions_number ON training_sessions (session_number) WHERE session_number IS NOT NULL
    """,
    # 8: named API keys with scopes (a salted hash, never the key), and who started and stopped each run.
    """
    CREATE TABLE api_keys (
        name TEXT PRIMARY KEY,
        key_id TEXT NOT NULL UNIQUE,
        salt BLOB NOT NULL,
        hash BLOB NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('read', 'operate', 'admin')),
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT,
        last_used_at TEXT
    );
    ALTER TABLE training_sessions ADD COLUMN started_by TEXT;
    ALTER TABLE training_sessions ADD COLUMN stopped_by TEXT;
    CREATE INDEX idx_events_log_time ON events (timestamp, id) WHERE event_type <> 'api_write'
    """,
    # 9: alert notifications: acknowledgements, the outbox of notifications and their deliveries per webhook
    # target, and the triggers that write a notification in the transaction of an alert's change or a run's
    # end (schema.sql has the comments).
    """
    CREATE TABLE alert_acks (
        alert_id TEXT PRIMARY KEY,
        acknowledged_at TEXT NOT NULL,
        note TEXT,
        until TEXT  -- the ack lapses then; null: until the alert clears
    );
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        event TEXT NOT NULL,  -- alert.raised, alert.cleared, training.failed, training.completed, test
        severity TEXT NOT NULL,
        alert_id TEXT,
        alert TEXT,  -- JSON {id, severity, source, message, since, ended_at}
        run TEXT,  -- JSON {run_id, status, error, started_at, finished_at}
        created_at TEXT NOT NULL,
        fanned_out INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX idx_notifications_to_fan_out ON notifications (id) WHERE fanned_out = 0;
    CREATE INDEX idx_notifications_alert ON notifications (alert_id, event, created_at);
    CREATE TABLE notification_deliveries (
        id INTEGER PRIMARY KEY,
        delivery_id TEXT NOT NULL UNIQUE,
        notification_id INTEGER NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
        target TEXT NOT NULL,  -- a hash of the webhook URL (which may hold a token): never the URL itself
        host TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',  -- pending, sent, failed
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX idx_deliveries_pending ON notification_deliveries (target, id) WHERE status = 'pending';
    CREATE INDEX idx_deliveries_created ON notification_deliveries (created_at);
    CREATE TRIGGER notify_alert_raised AFTER INSERT ON alerts BEGIN
        INSERT INTO notifications (event, severity, alert_id, alert, created_at) VALUES ('alert.raised', NEW.severity,
            NEW.id, json_object('id', NEW.id, 'severity', NEW.severity, 'source', NEW.source, 'message', NEW.message,
            'since', NEW.since, 'ended_at', NULL), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
    END;
    CREATE TRIGGER notify_alert_escalated AFTER UPDATE OF severity ON alerts
    WHEN OLD.severity IS NOT NEW.severity AND NOT EXISTS (SELECT 1 FROM alert_acks WHERE alert_id = NEW.id) BEGIN
        INSERT INTO notifications (event, severity, alert_id, alert, created_at) VALUES ('alert.raised', NEW.severity,
            NEW.id, json_object('id', NEW.id, 'severity', NEW.severity, 'source', NEW.source, 'message', NEW.message,
            'since', NEW.since, 'ended_at', NULL), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
    END;
    CREATE TRIGGER notify_alert_cleared AFTER DELETE ON alerts BEGIN
        DELETE FROM alert_acks WHERE alert_id = OLD.id;
        INSERT INTO notifications (event, severity, alert_id, alert, created_at) VALUES ('alert.cleared', OLD.severity,
            OLD.id, json_object('id', OLD.id, 'severity', OLD.severity, 'source', OLD.source, 'message', OLD.message,
            'since', OLD.since, 'ended_at', strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
    END;
    CREATE TRIGGER notify_run_recorded AFTER INSERT ON training_sessions
    WHEN NEW.status NOT IN ('running', 'stopped', 'unknown', 'skipped', 'simulated')
        AND COALESCE(NEW.end_time, NEW.start_time) >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 hour') BEGIN
        INSERT INTO notifications (event, severity, run, created_at) VALUES (
            CASE WHEN NEW.status IN ('completed', 'success') THEN 'training.completed' ELSE 'training.failed' END,
            CASE WHEN NEW.status IN ('completed', 'success') THEN 'info' ELSE 'critical' END,
            json_object('run_id', NEW.run_id, 'status', NEW.status, 'error', NEW.error_message,
                        'started_at', NEW.start_time, 'finished_at', NEW.end_time), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
    END;
    CREATE TRIGGER notify_run_ended AFTER UPDATE OF status ON training_sessions
    WHEN OLD.status = 'running' AND NEW.status NOT IN ('running', 'stopped', 'unknown', 'skipped', 'simulated') BEGIN
        INSERT INTO notifications (event, severity, run, created_at) VALUES (
            CASE WHEN NEW.status IN ('completed', 'success') THEN 'training.completed' ELSE 'training.failed' END,
            CASE WHEN NEW.status IN ('completed', 'success') THEN 'info' ELSE 'critical' END,
            json_object('run_id', NEW.run_id, 'status', NEW.status, 'error', NEW.error_message,
                        'started_at', NEW.start_time, 'finished_at', NEW.end_time), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
    END;
    """,
]
SCHEMA_VERSION = 1 + len(MIGRATIONS)
