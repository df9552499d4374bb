"""`flask --app app keys create|list|revoke`: named API keys (dashboard/store/api_keys.py, docs/access.md)."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

import database
from dashboard.store import api_keys

keys = AppGroup("keys", help="Create, list and revoke named API keys.")


def _connection():
    database.migrate(current_app.config["DATABASE_PATH"])
    return database.connect(current_app.config["DATABASE_PATH"])


@keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(api_keys.SCOPES), required=True, help="what the key may do")
@click.option("--expires", "expires_days", type=float, default=None, help="days until it stops working")
def create_command(name: str, scope: str, expires_days) -> None:
    """Create a key and print it: the only time it is shown (only its salted hash is stored)."""
    conn = _connection()
    try:
        key = api_keys.create(conn, name, scope, expires_days)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    finally:
        conn.close()
    click.echo(key)
    click.echo(f"key {name} ({scope}) created; it is shown only now: keep it in a secret store", err=True)


@keys.command("list")
def list_command() -> None:
    """Name, scope, created, last used, expiry and revocation of every key (never a key or its hash)."""
    conn = _connection()
    try:
        rows = api_keys.listing(conn)
    finally:
        conn.close()
    columns = ("name", "scope", "created_at", "last_used_at", "expires_at", "revoked_at")
    table = [columns] + [tuple(row[c] or "-" for c in columns) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


@keys.command("revoke")
@click.argument("name")
def revoke_command(name: str) -> None:
    """Revoke a key: every worker refuses it (401) from its next request."""
    conn = _connection()
    try:
        revoked = api_keys.revoke(conn, name)
    finally:
        conn.close()
    if not revoked:
        raise click.ClickException(f"no active key named {name}")
    click.echo(f"key {name} revoked")
