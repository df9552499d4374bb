"""Fixtures: orchestrator folders written by the example orchestrator, the app, a client."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

from app import create_app  # noqa: E402

ORCHESTRATOR = PROJECT / "examples" / "orchestrator" / "orchestrator.py"
EXAMPLE_AGENTS = ["agent_1", "agent_2", "agent_3", "agent_5a", "agent_7", "agent_8"]
OTHER_AGENTS = "agent_10:Signal Scout,agent_11b:Cover Artist,agent_12:Universal Harvester"
# The example orchestrator draws its numbers from this seed instead of the date, so every fixture has
# the same content on any day (docs/development.md "How the tests work": TEST_SEED=N runs the suite on other data). Set in the
# environment too, so runs started by a test's server (`train`) draw from it as well.
SEED = int(os.environ.get("TEST_SEED") or 1)
os.environ["ORCHESTRATOR_SEED"] = str(SEED)


def poll(fetch, condition, deadline_seconds: float = 30.0, interval: float = 0.05) -> list:
    """Call fetch() until condition(value) holds; return every value seen (fails at the deadline)."""
    seen, deadline = [], time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        value = fetch()
        seen.append(value)
        if condition(value):
            return seen
        time.sleep(interval)
    raise AssertionError(f"condition not met; last value: {seen[-1] if seen else None}")


def run_orchestrator(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the example orchestrator as a real subprocess and fail the test on a non-zero exit."""
    proc = subprocess.run([sys.executable, str(ORCHESTRATOR), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="session")
def _built(tmp_path_factory):
    """Orchestrator folders built once per session, keyed by agent set; tests get copies."""
    cache: dict[str, Path] = {}

    def build(agents: str | None, days: int) -> Path:
        key = f"{agents}-{days}"
        if key not in cache:
            root = tmp_path_factory.mktemp("orch")
            if agents is None:
                example = ORCHESTRATOR.parent
                shutil.copytree(example / "training", root / "training")
                shutil.copytree(example / "agents", root / "agents")
            else:
                run_orchestrator("init", "--root", str(root), "--agents", agents)
            if days:
                run_orchestrator("backfill", "--root", str(root), "--days", str(days), "--seed", str(SEED))
            cache[key] = root
        return cache[key]

    return build


@pytest.fixture
def orchestrator(_built, tmp_path):
    """Factory: a fresh copy of an orchestrator folder with `days` of history (agents=None: the example's)."""

    def make(agents: str | None = None, days: int = 14) -> Path:
        target = tmp_path / f"orchestrator-{len(list(tmp_path.glob('orchestrator-*')))}"
        shutil.copytree(_built(agents, days), target)
        return target

    return make


@pytest.fixture
def make_app(tmp_path):
    """Factory: an app over `root` with a database in tmp_path."""

    def make(root: Path, **config):
        settings = {"TESTING": True, "ORCHESTRATOR_PATH": root, "DATABASE_PATH": tmp_path / "db.sqlite",
                    "LOG_FILE": None, "HEALTH_SAMPLE_SECONDS": 0, "TRAINING_RUNS_DIR": tmp_path / "runs",
                    "RESPONSE_CACHE_SECONDS": 0, "INGEST_SECONDS": 0,
                    # Host alerts depend on this machine's load; tests that check them set thresholds.
                    **{f"ALERT_{r}_{lvl}": 0.0 for r in ("CPU", "MEMORY", "DISK") for lvl in ("WARNING", "CRITICAL")}}
        settings.update(config)
        app = create_app(settings)
        if settings.get("INGEST_SECONDS", 0) == 0:
            with contextlib.suppress(sqlite3.Error, OSError):  # a test of a broken database
                ingest(app)
        apps.append(app)
        return app

    apps: list = []
    yield make
    for app in apps:  # its background loops end with the test (its tmp_path goes)
        for name in ("ingester", "sampler", "notifier"):
            loop = app.extensions.get(name)
            if loop is not None and getattr(loop, "_thread", None) is not None:
                loop.stop()


def get_route_urls(app, values: dict, every: bool = False) -> list[str]:
    """Every GET rule of the app's route table, each path parameter filled in from `values`; with
    `every`, also the static files and /api/stream (which never ends)."""
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or not every and (rule.endpoint == "static" or rule.rule == "/api/stream"):
            continue
        url = rule.rule
        for name in rule.arguments:
            url = re.sub(rf"<(?:[^:<>]+:)?{name}>", str(values[name]), url)
        urls.append(url)
    return urls


def ingest(app) -> None:
    """One ingester round now, as its thread would do it (off in the test apps: INGEST_SECONDS=0)."""
    app.extensions["ingester"].run_once()


@pytest.fixture
def app(make_app, orchestrator):
    """The app over a copy of the example orchestrator with two weeks of history."""
    return make_app(orchestrator())


@pytest.fixture
def client(app):
    return app.test_client()
