"""Alert notifications: webhook targets, the outbox in SQLite and the one process that delivers it."""
