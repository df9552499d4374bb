"""`make bench` (memory part): worker RSS after a 3 MB training_metrics.json is rewritten 100 times.

1. An orchestrator folder under var/bench/rewrite/data: `orchestrator.py init` (the six bundled agents)
   and `backfill --days 30`, its training_metrics.json then scaled (bench/dataset.scale_metrics: real
   points replicated at evenly spaced earlier timestamps) to about --metrics-bytes (3 MB).
2. The dashboard under gunicorn with the production settings (bench/run.dashboard_env: the app's defaults
   for RESPONSE_CACHE_SECONDS, INGEST_SECONDS and the like, GUNICORN_WORKERS=2).
3. --rewrites times: the file is rewritten in place (as the orchestrator does) with its newest
   system_overall_quality point changed; /api/metrics/history/system_overall_quality is asked until it
   shows the new value, and meanwhile the other endpoints that parse the file are asked concurrently
   (so both workers, and the ingester in one of them, parse every version).
4. The RSS of every worker (psutil, from /proc) after the first rewrite and after the last.

Prints the figures against the target (<= 150 MB per worker) and writes bench/results/rewrite_memory.json.
Exits non-zero only on errors (a non-200 answer, a rewrite that never showed, a worker that died).
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: servers, production settings, data-set helpers)
from run import PROJECT, Server, dashboard_env, dataset, http, say  # noqa: E402

RSS_TARGET_MB = 150
METRIC = "system_overall_quality"
WATCHED = f"/api/metrics/history/{METRIC}?days=30"
# The endpoints whose answers come from training_metrics.json (besides WATCHED).
PARSING = ("/api/metrics/quality?days=30", "/api/metrics/trends?days=30", "/api/dashboard/overview",
           "/api/agents/status", "/api/metrics/comparison", "/api/agents/agent_1")


def build(root: Path, metrics_bytes: int) -> dict:
    """A real month of history with its training_metrics.json scaled to about `metrics_bytes`."""
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    dataset.orchestrator("init", "--root", str(root), "--agents", dataset.AGENTS)
    dataset.orchestrator("backfill", "--root", str(root), "--days", "30")
    path = root / "logs" / "training_metrics.json"
    real = path.read_bytes()
    first = min(datetime.fromisoformat(p["timestamp"]) for p in json.loads(real)["training_history"])
    start = first - timedelta(days=365)
    points = 20_000
    for _ in range(4):  # scale, measure, rescale from the real file: bytes per point are near constant
        path.write_bytes(real)
        dataset.scale_metrics(path, start, points)
        size = path.stat().st_size
        if abs(size - metrics_bytes) < metrics_bytes * 0.02:
            break
        points = int(points * metrics_bytes / size)
    return {"metrics_bytes": path.stat().st_size, "metric_points": points}


def rewrite(path: Path, metrics: dict, round_no: int) -> float:
    """Rewrite the file in place with the newest point of METRIC set to a value of this round; return it."""
    value = round(1 + round_no / 1000, 3)
    metrics[METRIC][-1]["score"] = value
    with open(path, "w", encoding="utf-8") as out:  # in place, no rename: the orchestrator's own way
        json.dump(metrics, out, indent=2)
    return value


def status_of(server: Server, url: str) -> int | str:
    """The HTTP status of GET url, or the socket error's name."""
    try:
        return http("GET", server.base + url)[0]
    except OSError as err:
        return type(err).__name__


def shows(server: Server, value: float) -> bool:
    status, body, _ = http("GET", server.base + WATCHED)
    if status != 200:
        raise RuntimeError(f"{WATCHED}: {status} {body[:200]!r}")
    return any(p.get("value") == value for p in json.loads(body)["points"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewrites", type=int, default=100)
    parser.add_argument("--metrics-bytes", type=int, default=3_000_000)
    parser.add_argument("--workers", type=int, default=2, help="GUNICORN_WORKERS (default 2)")
    parser.add_argument("--gunicorn-threads", type=int, default=8, help="GUNICORN_THREADS (default 8)")
    parser.add_argument("--workdir", type=Path, default=PROJECT / "var" / "bench" / "rewrite")
    parser.add_argument("--json", type=Path, default=PROJECT / "bench" / "results" / "rewrite_memory.json")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped on the way out
    workdir = args.workdir.resolve()
    root = workdir / "data"
    res: dict = {"started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": run.machine(),
                 "code": run.code_state(), "rewrites": args.rewrites}
    say(f"data: orchestrator.py init + backfill --days 30, metrics scaled to {args.metrics_bytes / 1e6:.1f} MB ...")
    res["data"] = build(root, args.metrics_bytes)
    path = root / "logs" / "training_metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    env = dashboard_env(SimpleNamespace(workers=args.workers, gunicorn_threads=args.gunicorn_threads,
                                        response_cache_seconds=None), workdir, "rewrite", root)
    res["settings"] = {k: env[k] for k in ("GUNICORN_WORKERS", "GUNICORN_THREADS", "RESPONSE_CACHE_SECONDS",
                                           "HEALTH_SAMPLE_SECONDS") if k in env}
    server = Server("rewrite", "app:app", env, workdir / "run")
    errors: list[str] = []
    began = time.perf_counter()
    with run.serving(server), ThreadPoolExecutor(8) as pool:
        server.start()
        for round_no in range(1, args.rewrites + 1):
            value = rewrite(path, metrics, round_no)
            deadline = time.monotonic() + 60
            while True:
                answers = list(pool.map(lambda url: status_of(server, url), PARSING * 2))
                errors += [f"round {round_no}: {url} answered {s}" for url, s in zip(PARSING * 2, answers) if s != 200]
                if shows(server, value):
                    break
                if time.monotonic() > deadline:
                    errors.append(f"round {round_no}: the rewrite did not show within 60 s")
                    break
                time.sleep(0.2)
            if round_no == 1:
                res["rss_mb_after_first"] = server.rss_mb()
            if round_no % 10 == 0:
                say(f"  {round_no} rewrites; workers' RSS MB {sorted(server.rss_mb().values())}")
        res["rss_mb_after_last"] = server.rss_mb()
        errors += server.check()
    res["seconds"] = round(time.perf_counter() - began, 1)
    largest = max(res["rss_mb_after_last"].values(), default=0.0)
    res["largest_rss_mb"], res["target_mb"], res["errors"] = largest, RSS_TARGET_MB, errors
    verdict = "PASS" if largest <= RSS_TARGET_MB else "MISS"
    say(f"metrics file {res['data']['metrics_bytes'] / 1e6:.1f} MB rewritten {args.rewrites} times "
        f"({res['seconds']} s): workers' RSS MB after the first {sorted(res['rss_mb_after_first'].values())}, "
        f"after the last {sorted(res['rss_mb_after_last'].values())}; largest {largest} (target <= "
        f"{RSS_TARGET_MB}) {verdict}")
    for error in errors:
        say(f"ERROR {error}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
