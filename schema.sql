-- The current schema: what every migration in migrations.py together builds (a new database is created
-- from this file at once). Changing it means a new migration too, and tests/test_database_reliability.py checks
-- that both give the same tables, columns and indexes. Version 1 is frozen in tests/fixtures/schema_v1.sql.
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    agent_id TEXT,
    metric_type TEXT NOT NULL,
    value REAL,
    notes TEXT,
    source TEXT NOT NULL DEFAULT 'api'  -- where the point was read: its natural key with the three below
);
CREATE INDEX IF NOT EXISTS idx_metrics_type_time ON metrics (metric_type, timestamp);
CREATE INDEX IF NOT EXISTS idx_metrics_agent_time ON metrics (agent_id, timestamp);
CREATE UNIQUE INDEX IF NOT EXISTS idx_metrics_natural ON metrics (source, metric_type, timestamp, COALESCE(agent_id, ''));

CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    event_type TEXT NOT NULL,
    agent_id TEXT,
    message TEXT NOT NULL,
    severity TEXT NOT NULL DEFAULT 'info',
    metadata TEXT,
    source TEXT,
    fingerprint TEXT  -- an event recorded more than once (an ingested log line) is kept once
);
CREATE INDEX IF NOT EXISTS idx_events_time ON events (timestamp);
CREATE INDEX IF NOT EXISTS idx_events_type_time ON events (event_type, timestamp);
CREATE UNIQUE INDEX IF NOT EXISTS idx_events_fingerprint ON events (fingerprint) WHERE fingerprint IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_events_severity_time ON events (severity, timestamp);
-- The log views' newest events, without the audit's rows (however many writes there were).
CREATE INDEX IF NOT EXISTS idx_events_log_time ON events (timestamp, id) WHERE event_type <> 'api_write';

CREATE TABLE IF NOT EXISTS training_sessions (
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
    exit_code INTEGER,
    run_id TEXT,  -- the run's start (else its end) in UTC, 20261207T030001Z (.2, .3... when taken)
    session_number INTEGER,  -- a dashboard session's number from 1 (the API's session_id), else null
    started_by TEXT,  -- the API key's name (or anonymous) that started a dashboard session, else null
    stopped_by TEXT  -- the API key's name (or anonymous) that first asked it to stop
);
CREATE INDEX IF NOT EXISTS idx_sessions_start ON training_sessions (start_time);
CREATE INDEX IF NOT EXISTS idx_sessions_end ON training_sessions (end_time);
CREATE INDEX IF NOT EXISTS idx_sessions_last_seen ON training_sessions (COALESCE(end_time, start_time));
CREATE UNIQUE INDEX IF NOT EXISTS idx_sessions_run_key ON training_sessions (run_key) WHERE run_key IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS idx_sessions_one_running ON training_sessions (status) WHERE status = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS idx_sessions_run_id ON training_sessions (run_id) WHERE run_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS idx_sessions_number ON training_sessions (session_number) WHERE session_number IS NOT NULL;

CREATE TABLE IF NOT EXISTS system_health (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    cpu_percent REAL,
    memory_percent REAL,
    disk_percent REAL,
    uptime_seconds INTEGER,
    active_connections INTEGER
);
CREATE INDEX IF NOT EXISTS idx_health_time ON system_health (timestamp);

CREATE TABLE IF NOT EXISTS agent_metrics (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    quality_score REAL,
    processing_time_ms INTEGER,
    error_count INTEGER,
    status TEXT,
    improvement REAL,
    metadata TEXT
);
CREATE INDEX IF NOT EXISTS idx_agent_metrics_agent_time ON agent_metrics (agent_id, timestamp);

CREATE TABLE IF NOT EXISTS storyboard_projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_projects_created ON storyboard_projects (created_at);

CREATE TABLE IF NOT EXISTS storyboard_scenes (
    id INTEGER PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES storyboard_projects (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    title TEXT NOT NULL,
    description TEXT,
    duration_sec REAL NOT NULL,
    UNIQUE (project_id, position)
);

-- The alerts active now (events record when each was raised and cleared).
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    severity TEXT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL,
    since TEXT NOT NULL
);

-- The ingester's bookkeeping: each file as last recorded, and where it stopped in each growing one.
CREATE TABLE IF NOT EXISTS ingested_files (
    path TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ingest_cursors (
    path TEXT NOT NULL,
    series TEXT NOT NULL,
    position INTEGER NOT NULL,
    last_key TEXT,
    PRIMARY KEY (path, series)
);

-- Shared by every worker: request counts per rate window, the readiness probe's write target, and a
-- counter per path prefix that each successful POST bumps (cached answers hold while it is unchanged).
CREATE TABLE IF NOT EXISTS rate_limits (
    key TEXT NOT NULL,
    window INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (key, window)
);
CREATE INDEX IF NOT EXISTS idx_rate_limits_window ON rate_limits (window);
CREATE TABLE IF NOT EXISTS readiness_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cache_generations (
    prefix TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- Named API keys (dashboard/store/api_keys.py): the key itself is never stored, only a salted SHA-256 of it:
-- key_id is the key's public part, by which a presented key finds its row. Revoked rows are kept.
CREATE TABLE IF NOT EXISTS api_keys (
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

-- Alert notifications (docs/notifications.md). The triggers below write a notification in the very
-- transaction that records an alert's change or a run's end; the notifier (one process) fans each out to
-- one delivery per webhook target and sends the deliveries in order per target. An acknowledged alert
-- (alert_acks, gone when the alert clears) sends nothing more but its clearing.
CREATE TABLE IF NOT EXISTS alert_acks (
    alert_id TEXT PRIMARY KEY,
    acknowledged_at TEXT NOT NULL,
    note TEXT,
    until TEXT  -- the ack lapses then; null: until the alert clears
);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    event TEXT NOT NULL,  -- alert.raised, alert.cleared, training.failed, training.completed, test
    severity TEXT NOT NULL,
    alert_id TEXT,
    alert TEXT,  -- JSON {id, severity, source, message, since, ended_at}
    run TEXT,  -- JSON {run_id, status, error, started_at, finished_at}
    created_at TEXT NOT NULL,
    fanned_out INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_notifications_to_fan_out ON notifications (id) WHERE fanned_out = 0;
CREATE INDEX IF NOT EXISTS idx_notifications_alert ON notifications (alert_id, event, created_at);
CREATE TABLE IF NOT EXISTS notification_deliveries (
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
CREATE INDEX IF NOT EXISTS idx_deliveries_pending ON notification_deliveries (target, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_deliveries_created ON notification_deliveries (created_at);
CREATE TRIGGER IF NOT EXISTS notify_alert_raised AFTER INSERT ON alerts BEGIN
    INSERT INTO notifications (event, severity, alert_id, alert, created_at) VALUES ('alert.raised', NEW.severity,
        NEW.id, json_object('id', NEW.id, 'severity', NEW.severity, 'source', NEW.source, 'message', NEW.message,
        'since', NEW.since, 'ended_at', NULL), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS notify_alert_escalated AFTER UPDATE OF severity ON alerts
WHEN OLD.severity IS NOT NEW.severity AND NOT EXISTS (SELECT 1 FROM alert_acks WHERE alert_id = NEW.id) BEGIN
    INSERT INTO notifications (event, severity, alert_id, alert, created_at) VALUES ('alert.raised', NEW.severity,
        NEW.id, json_object('id', NEW.id, 'severity', NEW.severity, 'source', NEW.source, 'message', NEW.message,
        'since', NEW.since, 'ended_at', NULL), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS notify_alert_cleared AFTER DELETE ON alerts BEGIN
    DELETE FROM alert_acks WHERE alert_id = OLD.id;
    INSERT INTO notifications (event, severity, alert_id, alert, created_at) VALUES ('alert.cleared', OLD.severity,
        OLD.id, json_object('id', OLD.id, 'severity', OLD.severity, 'source', OLD.source, 'message', OLD.message,
        'since', OLD.since, 'ended_at', strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
END;
-- A run recorded already ended (read from the files) notifies when it ended in the last hour, so a first
-- ingest of a long history sends nothing old; a session seen running notifies when it ends.
CREATE TRIGGER IF NOT EXISTS notify_run_recorded AFTER INSERT ON training_sessions
WHEN NEW.status NOT IN ('running', 'stopped', 'unknown', 'skipped', 'simulated')
    AND COALESCE(NEW.end_time, NEW.start_time) >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 hour') BEGIN
    INSERT INTO notifications (event, severity, run, created_at) VALUES (
        CASE WHEN NEW.status IN ('completed', 'success') THEN 'training.completed' ELSE 'training.failed' END,
        CASE WHEN NEW.status IN ('completed', 'success') THEN 'info' ELSE 'critical' END,
        json_object('run_id', NEW.run_id, 'status', NEW.status, 'error', NEW.error_message,
                    'started_at', NEW.start_time, 'finished_at', NEW.end_time), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS notify_run_ended AFTER UPDATE OF status ON training_sessions
WHEN OLD.status = 'running' AND NEW.status NOT IN ('running', 'stopped', 'unknown', 'skipped', 'simulated') BEGIN
    INSERT INTO notifications (event, severity, run, created_at) VALUES (
        CASE WHEN NEW.status IN ('completed', 'success') THEN 'training.completed' ELSE 'training.failed' END,
        CASE WHEN NEW.status IN ('completed', 'success') THEN 'info' ELSE 'critical' END,
        json_object('run_id', NEW.run_id, 'status', NEW.status, 'error', NEW.error_message,
                    'started_at', NEW.start_time, 'finished_at', NEW.end_time), strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
END;
