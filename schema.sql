-- Schema version 1. Later versions are forward migrations in database.py (PRAGMA user_version).
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    agent_id TEXT,
    metric_type TEXT NOT NULL,
    value REAL,
    notes TEXT
);
CREATE INDEX IF NOT EXISTS idx_metrics_type_time ON metrics (metric_type, timestamp);
CREATE INDEX IF NOT EXISTS idx_metrics_agent_time ON metrics (agent_id, timestamp);

CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    event_type TEXT NOT NULL,
    agent_id TEXT,
    message TEXT NOT NULL,
    severity TEXT NOT NULL DEFAULT 'info',
    metadata TEXT
);
CREATE INDEX IF NOT EXISTS idx_events_time ON events (timestamp);
CREATE INDEX IF NOT EXISTS idx_events_type_time ON events (event_type, timestamp);

CREATE TABLE IF NOT EXISTS training_sessions (
    id INTEGER PRIMARY KEY,
    start_time TEXT NOT NULL,
    end_time TEXT,
    agents_trained INTEGER,
    overall_improvement REAL,
    status TEXT NOT NULL,
    phase TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS idx_sessions_start ON training_sessions (start_time);

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

CREATE TABLE IF NOT EXISTS storyboard_scenes (
    id INTEGER PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES storyboard_projects (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    title TEXT NOT NULL,
    description TEXT,
    duration_sec REAL NOT NULL,
    UNIQUE (project_id, position)
);
