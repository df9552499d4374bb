"""`make load`: the dashboard under a mixed load, then /healthz under 64 connections (test plan T38).

1. Mixed load for --duration seconds (default 300) against the production gunicorn settings on the
   bench data set (bench/dataset.py): --users connections split 80% GET (every GET endpoint under /api,
   chosen at random per request, wrk with a Lua script), 15% POST (storyboard projects, the write a
   dashboard user repeats; POST_RATE_LIMIT=0 so the one load client is not throttled) and 5% Server-Sent
   Event streams held open the whole time. wrk connections do not pause between requests: this is the
   most that many users can ask, not a model of people reading a page. The mix runs in --rounds rounds;
   after each, the same two wrk (the GET connections on its one route, the POST connections on a route
   that parses the body and answers it; for the round's length up to --health-duration) run on the bare
   Flask app of bench/run.py (bench/bare_app.py, same gunicorn settings, started beside it): the baseline
   of the GET p99 on this machine, under the same load generators, at that moment. The ratio is the
   median of the rounds'.
2. `wrk -t2 -c64 -d<--health-duration>s` on /healthz (liveness, what a load balancer polls), and the same
   right after on the bare app.

Prints each figure against its target (errors < 0.1%; GET p95 < 200 ms, p99 < 1 s and at most 2x the bare
app's p99 under the same wrk; /healthz p99 <
50 ms with no non-2xx; every stream alive to the end) and writes bench/results/load.json. Exits non-zero
only on errors (a crashed, timed-out or restarted worker, a failed setup), never on a missed target.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.client import HTTPConnection
from pathlib import Path

import run  # bench/run.py: data set, servers, wrk
from run import PROJECT, Bench, Server, dashboard_env, dataset, endpoint_urls, http, make_ids, parse_wrk, say

TARGETS = {"error_rate": 0.001, "get_p95_ms": 200.0, "get_p99_ms": 1000.0, "health_p99_ms": 50.0,
           "get_p99_vs_bare": 2.0}
LUA = """
local paths = {%(paths)s}
local post_share = %(post_share)s
local body = '%(body)s'
local counter = 0
request = function()
  counter = counter + 1
  if math.random() < post_share then
    return wrk.format("POST", "/api/storyboard/project/create", {["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("GET", paths[math.random(#paths)])
end
done = function(summary, latency, requests)
  io.write(string.format("P95_US %%d\\nP99_US %%d\\n", latency:percentile(95), latency:percentile(99)))
end
"""
PROJECT_BODY = json.dumps({"name": "load test", "scenes": [{"title": "Intro", "duration_sec": 5}]})


def wrk_mix(bench: Bench, server: Server, workdir: Path, name: str, paths: list[str], post_share: float,
            connections: int, duration: int) -> dict:
    """wrk with a Lua script picking a GET path at random, or a POST with probability `post_share`."""
    script = workdir / f"{name}.lua"
    script.write_text(LUA % {"paths": ", ".join(json.dumps(p) for p in paths), "post_share": post_share,
                             "body": PROJECT_BODY}, encoding="utf-8")
    cmd = [bench.wrk, "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "30s", "--latency",
           "-s", str(script), server.base]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    result = parse_wrk(proc.stdout)
    for pct in ("95", "99"):
        if m := re.search(rf"^P{pct}_US (\d+)", proc.stdout, re.M):
            result[f"p{pct}_ms"] = round(int(m.group(1)) / 1000, 2)
    if proc.returncode != 0:
        bench.errors.append(f"wrk ({name}) failed: {proc.stderr.strip()[:200]}")
    return result


def mix(bench: Bench, server: Server, workdir: Path, prefix: str, paths: list[str], getters: int, posters: int,
        duration: int) -> dict:
    """The GET mix's wrk and the POST connections' wrk at once on `server`: {"get": ..., "post": ...}."""
    results: dict = {}
    jobs = [threading.Thread(target=lambda: results.__setitem__("get", wrk_mix(
                bench, server, workdir, prefix + "get", paths, 0.0, getters, duration))),
            threading.Thread(target=lambda: results.__setitem__("post", wrk_mix(
                bench, server, workdir, prefix + "post", paths, 1.0, posters, duration)))]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    return results


class StreamClient(threading.Thread):
    """One browser-like /api/stream reader: counts events and heartbeats, notes when the stream broke."""

    def __init__(self, port: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.events = self.heartbeats = self.drops = 0
        self.error = ""

    def run(self) -> None:
        while not self.stop.is_set():
            conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", "/api/stream", headers={"Accept": "text/event-stream"})
                response = conn.getresponse()
                if response.status != 200:
                    self.error = f"HTTP {response.status}"
                    return
                while not self.stop.is_set():
                    line = response.fp.readline()
                    if not line:
                        break
                    self.events += line.startswith(b"event:")
                    self.heartbeats += line.startswith(b":")
                if not self.stop.is_set():
                    self.drops += 1  # the server ended it (STREAM_MAX_SECONDS): reconnect like EventSource
            except OSError as err:
                self.error = f"{type(err).__name__}: {err}"
                return
            finally:
                conn.close()


def wait_for_first_ingest(db: Path, limit: float = 600) -> float:
    """Seconds until the ingester has recorded every file once (ingested_files is written last)."""
    began = time.perf_counter()
    while time.perf_counter() - began < limit:
        with contextlib.suppress(sqlite3.Error), \
                contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)) as conn:
            if conn.execute("SELECT COUNT(*) FROM ingested_files").fetchone()[0]:
                break
        time.sleep(0.2)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=300, help="seconds of mixed load (default 300)")
    parser.add_argument("--health-duration", type=int, default=60, help="seconds of wrk on /healthz (default 60)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the mix is cut in this many rounds, each followed by the bare app's (default 3)")
    parser.add_argument("--users", type=int, default=50, help="connections of the mixed load (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="GUNICORN_WORKERS (default 2)")
    parser.add_argument("--gunicorn-threads", type=int, default=8, help="GUNICORN_THREADS (default 8)")
    parser.add_argument("--workdir", type=Path, default=PROJECT / "var" / "bench")
    parser.add_argument("--json", type=Path, default=PROJECT / "bench" / "results" / "load.json")
    args = parser.parse_args()
    args.response_cache_seconds = None
    args.wrk_threads, args.connections = 2, 64
    workdir = args.workdir.resolve()
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    info = dataset.ensure(workdir / "data", say=say)
    env = {**dashboard_env(args, workdir, "load", workdir / "data" / "large"), "POST_RATE_LIMIT": "0"}
    streams = max(1, round(args.users * 0.05))
    posters = max(1, round(args.users * 0.15))
    getters = max(1, args.users - streams - posters)
    res: dict = {"started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": run.machine(),
                 "code": run.code_state(), "dataset": {k: info.get(k) for k in ("built_on", "requested")},
                 "settings": {"users": args.users, "get_connections": getters, "post_connections": posters,
                              "streams": streams, "duration_s": args.duration, "health_duration_s": args.health_duration,
                              "GUNICORN_WORKERS": args.workers, "GUNICORN_THREADS": args.gunicorn_threads}}
    server, bare = Server("load", "app:app", env, workdir / "run"), None
    try:
        server.start()
        http("GET", server.base + "/api/metrics/quality?days=30", timeout=600)
        waited = wait_for_first_ingest(Path(env["DATABASE_PATH"]))  # the steady state is what is measured
        say(f"first ingest recorded {waited:.1f} s after the first answer")
        urls, _ = endpoint_urls(server, make_ids(server))
        paths = [path for _, path in urls]
        say(f"mixed load {args.duration}s: {getters} GET connections over {len(paths)} endpoints, "
            f"{posters} POST connections, {streams} streams")
        stop = threading.Event()
        readers = [StreamClient(server.port, stop) for _ in range(streams)]
        for reader in readers:
            reader.start()
        bare = Server("bare", "bench.bare_app:app", dashboard_env(args, workdir, "bare", workdir / "data" / "large"),
                      workdir / "run")
        bare.start()
        round_s = max(5, args.duration // args.rounds)
        bare_s = min(round_s, args.health_duration)
        res["rounds"] = []
        for n in range(args.rounds):
            say(f"round {n + 1}/{args.rounds}: the mix {round_s}s, then the bare app under the same two wrk "
                f"({getters} GET connections on its one route, {posters} POST connections; {bare_s}s)")
            results = mix(bench, server, workdir / "run", "", paths, getters, posters, round_s)
            baseline = mix(bench, bare, workdir / "run", "bare_", ["/"], getters, posters, bare_s)
            res["rounds"].append({**results, "bare_get": baseline["get"], "bare_post": baseline["post"]})
        stop.set()
        for reader in readers:
            reader.join(timeout=35)
        res["streams"] = [{"events": r.events, "heartbeats": r.heartbeats, "ended_by_server": r.drops,
                           "error": r.error} for r in readers]
        res["get"], res["post"], res["bare_get"], res["bare_post"] = (
            combined([r[name] for r in res["rounds"]]) for name in ("get", "post", "bare_get", "bare_post"))
        say(f"/healthz: wrk -t2 -c64 -d{args.health_duration}s")
        server.settle()
        res["health"] = bench.wrk_run(server.base + "/healthz", duration=args.health_duration)
        bench.errors = [e for e in bench.errors if "non-2xx" not in e]  # counted below, against the target
        bench.errors += server.check()
        server.stop()
        say(f"bare Flask app: wrk -t2 -c64 -d{args.health_duration}s")
        res["bare"] = bench.wrk_run(bare.base + "/", duration=args.health_duration)
    except Exception as exc:
        bench.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        server.stop()
        if bare is not None:
            bare.stop()
    res["errors"] = bench.errors
    if "bare" in res:
        res["table"] = report(res)
        say("\n" + "\n".join(res["table"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
    if bench.errors:
        say("\nERRORS:\n  " + "\n  ".join(bench.errors))
        return 1
    return 0


def combined(rounds: list[dict]) -> dict:
    """The rounds of one wrk as one figure: requests and failures summed, req/s averaged, each percentile
    the median of the rounds' (a few slow seconds of the shared machine weigh on one round, not on all)."""
    out = {"requests": sum(r["requests"] for r in rounds), "rps": statistics.mean(r["rps"] for r in rounds),
           "non_2xx": sum(r["non_2xx"] for r in rounds), "socket_errors": {}}
    for r in rounds:
        for kind, count in r["socket_errors"].items():
            out["socket_errors"][kind] = out["socket_errors"].get(kind, 0) + count
    for pct in ("p95_ms", "p99_ms"):
        if all(pct in r for r in rounds):
            out[pct] = statistics.median(r[pct] for r in rounds)
            out[pct + "_rounds"] = [r[pct] for r in rounds]
    return out


def failures(r: dict) -> int:
    return r["non_2xx"] + sum(r["socket_errors"].values())


def report(res: dict) -> list[str]:
    """The figures against their targets, as a Markdown table."""
    get, post, health, bare = res["get"], res["post"], res["health"], res["bare"]
    total = get["requests"] + post["requests"]
    rate = (failures(get) + failures(post)) / total if total else 1.0
    alive = all(not s["error"] and s["events"] > 0 for s in res["streams"])
    ratios = [r["get"].get("p99_ms", 1e9) / r["bare_get"]["p99_ms"] if r["bare_get"].get("p99_ms") else float("inf")
              for r in res.get("rounds", [])]
    get_vs_bare = statistics.median(ratios) if ratios else float("inf")

    def row(name, value, target, ok):
        return f"| {name} | {value} | {target} | {'PASS' if ok else 'MISS'} |"

    return ["| Figure | Measured | Target | |", "|---|---:|---:|---|",
            row("requests (GET + POST)", f"{get['requests']} + {post['requests']} "
                f"({get['rps']:.0f} + {post['rps']:.0f} req/s)", "", True),
            row("errors (non-2xx and socket errors)", f"{rate:.4%}", f"< {TARGETS['error_rate']:.1%}",
                rate < TARGETS["error_rate"]),
            row("GET p95 (median of the rounds)", f"{get.get('p95_ms', float('nan')):.1f} ms", f"< {TARGETS['get_p95_ms']:.0f} ms",
                get.get("p95_ms", 1e9) < TARGETS["get_p95_ms"]),
            row("GET p99 (median of the rounds)", f"{get.get('p99_ms', float('nan')):.1f} ms", f"< {TARGETS['get_p99_ms']:.0f} ms",
                get.get("p99_ms", 1e9) < TARGETS["get_p99_ms"]),
            row("GET p99 / the bare app's p99 under the same wrk (median of the rounds: "
                + ", ".join(f"{r:.2f}" for r in ratios) + ")", f"{get_vs_bare:.2f} ×",
                f"≤ {TARGETS['get_p99_vs_bare']:g} ×", get_vs_bare <= TARGETS["get_p99_vs_bare"]),
            row("POST p99", f"{post.get('p99_ms', float('nan')):.1f} ms", "", True),
            row(f"{len(res['streams'])} streams: events, heartbeats", ", ".join(
                f"{s['events']}, {s['heartbeats']}" for s in res["streams"]), "alive to the end", alive),
            row("/healthz p99 (64 connections)", f"{health.get('p99_ms', float('nan')):.1f} ms",
                f"< {TARGETS['health_p99_ms']:.0f} ms", health.get("p99_ms", 1e9) < TARGETS["health_p99_ms"]),
            row("/healthz non-2xx", f"{health['non_2xx']} of {health['requests']} ({health['rps']:.0f} req/s)",
                "0", health["non_2xx"] == 0 and not any(health["socket_errors"].values())),
            row("bare Flask app, same wrk (baseline)", f"p99 {bare.get('p99_ms', float('nan')):.1f} ms, "
                f"{bare['rps']:.0f} req/s", "", True),
            row("/healthz / bare", f"{health['rps'] / bare['rps']:.2f} × req/s, "
                f"{health.get('p99_ms', 0) / bare.get('p99_ms', 1):.2f} × p99", "", True)]


if __name__ == "__main__":
    sys.exit(main())
