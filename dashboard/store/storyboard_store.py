"""Storyboard projects and their scenes in SQLite (the only data this API creates itself)."""
from __future__ import annotations

import sqlite3
import uuid

from database import transaction
from dashboard.timestamps import utc_now


def list_projects(conn: sqlite3.Connection, limit: int, offset: int = 0) -> tuple[list[dict], int]:
    """Storyboard projects with their scene count and total duration, newest first: `limit` of them from
    `offset`, and how many there are in all."""
    rows = conn.execute(
        "SELECT p.id, p.name, p.description, p.created_at, p.updated_at,"
        " COUNT(s.id) AS scene_count, COALESCE(SUM(s.duration_sec), 0) AS total_duration_sec"
        " FROM (SELECT rowid AS seq, * FROM storyboard_projects ORDER BY created_at DESC, rowid DESC"
        "       LIMIT ? OFFSET ?) p"
        " LEFT JOIN storyboard_scenes s ON s.project_id = p.id"
        " GROUP BY p.id ORDER BY p.created_at DESC, p.seq DESC", (limit, offset)
    ).fetchall()
    total = conn.execute("SELECT COUNT(*) FROM storyboard_projects").fetchone()[0]
    return [dict(row) for row in rows], total


def get_project(conn: sqlite3.Connection, project_id: str) -> dict | None:
    """One project with its scenes in order, or None."""
    row = conn.execute(
        "SELECT id, name, description, created_at, updated_at FROM storyboard_projects WHERE id = ?",
        (project_id,),
    ).fetchone()
    if row is None:
        return None
    scenes = [dict(s) for s in conn.execute(
        "SELECT position, title, description, duration_sec FROM storyboard_scenes"
        " WHERE project_id = ? ORDER BY position", (project_id,))]
    project = dict(row)
    project.update(scenes=scenes, scene_count=len(scenes),
                   total_duration_sec=float(sum(s["duration_sec"] for s in scenes)))
    return project


def create_project(conn: sqlite3.Connection, name: str, description: str | None, scenes: list[dict]) -> str:
    """Store a project and its scenes in one transaction; return its new id."""
    project_id = uuid.uuid4().hex
    now = utc_now()
    with transaction(conn, read_by_provider=False):  # read as it is, never kept
        conn.execute(
            "INSERT INTO storyboard_projects (id, name, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (project_id, name, description, now, now),
        )
        conn.executemany(
            "INSERT INTO storyboard_scenes (project_id, position, title, description, duration_sec)"
            " VALUES (?, ?, ?, ?, ?)",
            [(project_id, i, s["title"], s.get("description"), s["duration_sec"]) for i, s in enumerate(scenes)],
        )
    return project_id
