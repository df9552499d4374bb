"""`make bench`: the dashboard under production gunicorn settings on a scaled data set, measured with wrk.

Steps (docs/performance.md):
1. the data set (bench/dataset.py): three years of daily reports, ~1 million metric points, a 1 GiB run
   log, and a variant folder whose log is 1 MiB; built under var/bench/data, reused the same day;
2. a bare Flask app (bench/bare_app.py) under the same gunicorn settings: the baseline, measured right
   before each endpoint (each ratio uses its paired figure: the machine's load varies);
3. the dashboard (gunicorn.conf.py, GUNICORN_WORKERS=2, default threads and HEALTH_SAMPLE_SECONDS) on
   the data set: the first ingest (the ingester records the history into SQLite while the API answers)
   timed with the largest RSS meanwhile, warm-up, then `wrk --latency` on every GET endpoint under /api
   (except /api/stream; /api/logs/export timed apart); then the same again with RESPONSE_CACHE_SECONDS=0
   (every answer computed) on the recorded database;
4. /api/system/logs/recent again on the 1 MiB-log variant; resident memory of each worker.

Prints a table with PASS/MISS per target and writes bench/results/latest.json. Exits non-zero only on
errors (a non-2xx answer, a socket error, a crashed or restarted worker, a failed setup), never on a MISS.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import psutil

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT / "bench"), str(PROJECT)]
import dataset  # noqa: E402

GUNICORN = Path(sys.executable).parent / "gunicorn"
POLLED = ("/api/dashboard/overview", "/api/agents/status", "/api/training/status", "/api/metrics/quality",
          "/api/system/health")
POLLED_TARGET, OTHER_TARGET = 0.8, 0.5
POLLED_UNCACHED_TARGET, OTHER_UNCACHED_TARGET = 0.3, 0.15  # RESPONSE_CACHE_SECONDS=0: every answer computed
INGEST_TARGET_SECONDS, INGEST_RSS_TARGET_MB = 60, 150
LOG_RATIO_TARGET = 1.5
RSS_TARGET_MB = 120
# The queries the dashboard page sends (static/js/dashboard.js); other endpoints use their defaults.
QUERIES = {"/api/metrics/quality": "days=30", "/api/metrics/trends": "days=30", "/api/training/history": "days=30",
           "/api/system/health/history": "hours=24"}
SKIPPED = {"/api/stream": "Server-Sent Events: one long response, not a request rate",
           "/api/logs/export": "a download: timed apart below"}
LOGS_URL = "/api/system/logs/recent"


def say(text: str = "", end: str = "\n") -> None:
    print(text, end=end, flush=True)


# --------------------------------------------------------------------------- wrk
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: apt-get install -y --no-install-recommends wrk (as root)")
    say("installing wrk (Debian package) ...")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "wrk"], check=False,
                   stdout=subprocess.DEVNULL)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk could not be installed")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(out: str) -> dict:
    """Requests/s, latency percentiles (ms), request count, non-2xx count and socket errors from wrk's output."""
    result = {"rps": 0.0, "requests": 0, "non_2xx": 0, "socket_errors": {}}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        result["requests"] = int(m.group(1))
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M):
        result[f"p{pct}_ms"] = round(_ms(value), 2)
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        result["non_2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    return result


class Bench:
    def __init__(self, args):
        self.args = args
        self.wrk = ensure_wrk()
        self.errors: list[str] = []

    def wrk_run(self, url: str, duration: float | None = None) -> dict:
        a = self.args
        cmd = [self.wrk, f"-t{a.wrk_threads}", f"-c{a.connections}", f"-d{int(duration or a.duration)}s",
               "--timeout", "30s", "--latency", url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=(duration or a.duration) + 60)
        result = parse_wrk(proc.stdout)
        if proc.returncode != 0:
            self.errors.append(f"wrk failed on {url}: {proc.stderr.strip()[:200]}")
        if result["non_2xx"]:
            self.errors.append(f"{url}: {result['non_2xx']} non-2xx answers")
        broken = {k: v for k, v in result["socket_errors"].items() if v and k != "timeout"}
        if broken:
            self.errors.append(f"{url}: socket errors {broken}")
        if result["socket_errors"].get("timeout"):
            self.errors.append(f"{url}: {result['socket_errors']['timeout']} requests took over 30 s")
        return result


# --------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 120) -> tuple[int, bytes, float]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            return response.status, payload, time.perf_counter() - began
    except urllib.error.HTTPError as err:
        return err.code, err.read(), time.perf_counter() - began


class Server:
    """gunicorn --config gunicorn.conf.py <app> from the project folder, in its own session."""

    def __init__(self, name: str, app: str, env: dict, logdir: Path):
        self.name, self.app, self.port = name, app, free_port()
        self.env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.out = logdir / f"{name}.gunicorn.log"
        self.proc: subprocess.Popen | None = None
        self.workers: list[int] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start and wait until it listens; return the seconds that took."""
        began = time.perf_counter()
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([str(GUNICORN), "--config", "gunicorn.conf.py", self.app], cwd=PROJECT,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: gunicorn exited with {self.proc.returncode}; see {self.out}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{self.name}: not listening after 60 s; see {self.out}")
        listening = time.perf_counter() - began
        deadline = time.monotonic() + 30
        while len(self.worker_pids()) < int(self.env["GUNICORN_WORKERS"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.workers = self.worker_pids()
        return listening

    def worker_pids(self) -> list[int]:
        try:
            return sorted(c.pid for c in psutil.Process(self.proc.pid).children() if "gunicorn" in " ".join(c.cmdline()))
        except psutil.Error:
            return []

    def rss_mb(self) -> dict:
        sizes = {}
        for pid in self.worker_pids():
            try:
                sizes[pid] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
            except psutil.Error:
                pass
        return sizes

    def settle(self, limit: float = 180) -> float:
        """Wait until the requests wrk left behind are answered; return the seconds waited.

        wrk stops at its deadline with requests still queued in the workers; the server keeps those
        connections (ESTABLISHED, or CLOSE_WAIT once wrk has closed its end) until it has answered.
        """
        began = time.monotonic()
        while time.monotonic() - began < limit:
            try:
                busy = [c for c in psutil.net_connections(kind="tcp") if c.laddr and c.laddr.port == self.port
                        and c.status in (psutil.CONN_ESTABLISHED, psutil.CONN_CLOSE_WAIT)]
            except psutil.Error:
                busy = []
            if not busy:
                break
            time.sleep(0.1)
        return time.monotonic() - began

    def check(self) -> list[str]:
        """Problems: the master gone, a worker that died (boots not explained by max_requests recycling),
        worker timeouts or tracebacks in gunicorn's output."""
        problems = []
        if self.proc.poll() is not None:
            problems.append(f"{self.name}: gunicorn exited ({self.proc.returncode})")
        text = self.out.read_text(encoding="utf-8", errors="replace")
        boots, recycled = text.count("Booting worker with pid"), text.count("Autorestarting worker")
        if boots - int(self.env["GUNICORN_WORKERS"]) > recycled:
            problems.append(f"{self.name}: {boots - int(self.env['GUNICORN_WORKERS']) - recycled} worker(s) died "
                            f"and were replaced; see {self.out}")
        for marker in ("WORKER TIMEOUT", "Traceback (most recent call last)", "was sent SIGKILL", "Out of memory"):
            if marker in text:
                problems.append(f"{self.name}: {marker!r} in {self.out}")
        return problems

    def recycled(self) -> int:
        """Workers gunicorn replaced after max_requests (production setting, not an error)."""
        return self.out.read_text(encoding="utf-8", errors="replace").count("Autorestarting worker")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


@contextlib.contextmanager
def serving(server: Server):
    try:
        yield server
    finally:
        server.stop()


def dashboard_env(args, workdir: Path, name: str, orchestrator: Path) -> dict:
    """The production settings: what changes the measurement is set explicitly (to the app's defaults
    unless an option says otherwise), so that a developer's .env cannot change what is measured."""
    from dashboard.config import load_config

    defaults = load_config({})
    state = workdir / "run" / name
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    env = {**os.environ, "ENVIRONMENT": "local", "DEBUG": "false", "API_KEY": "", "REQUIRE_AUTH_FOR_READS": "false",
           "ORCHESTRATOR_PATH": str(orchestrator), "ORCHESTRATOR_TIMEZONE": "",
           "DATABASE_PATH": str(state / "dashboard.db"), "LOG_FILE": str(state / "dashboard.log"),
           "LOG_LEVEL": "INFO", "TRAINING_RUNS_DIR": str(state / "runs"),
           # One real session for /api/training/session/<id>, without writing into the data set.
           "TRAINING_COMMAND": "python -c pass",
           "GUNICORN_WORKERS": str(args.workers), "GUNICORN_THREADS": str(args.gunicorn_threads),
           "GUNICORN_MAX_REQUESTS": "1000000", "GUNICORN_ACCESS_LOG": "", "PROMETHEUS_MULTIPROC_DIR": "",
           # gunicorn >= 25.1 opens a control socket in $XDG_RUNTIME_DIR (else ~/.gunicorn, shared by every
           # gunicorn of the user): one per bench server, not the developer's.
           "XDG_RUNTIME_DIR": str(state)}
    for key in ("HEALTH_SAMPLE_SECONDS", "RESPONSE_CACHE_SECONDS", "POST_RATE_LIMIT", "MAX_CONTENT_LENGTH"):
        if key in defaults:
            env[key] = f"{defaults[key]:g}" if isinstance(defaults[key], float) else str(defaults[key])
    if args.response_cache_seconds is not None:
        env["RESPONSE_CACHE_SECONDS"] = f"{args.response_cache_seconds:g}"
    return env


# --------------------------------------------------------------------------- the steps
def endpoint_urls(server: Server, ids: dict) -> tuple[list[tuple[str, str]], dict]:
    """(rule, url path) of every GET endpoint under /api with its ids filled in; skipped rules with why."""
    status, body, _ = http("GET", server.base + "/api/endpoints")
    if status != 200:
        raise RuntimeError(f"/api/endpoints answered {status}")
    urls, skipped = [], {}
    for row in json.loads(body):
        rule = row["path"]
        if "GET" not in row["methods"] or not rule.startswith("/api/"):
            continue
        if rule in SKIPPED:
            skipped[rule] = SKIPPED[rule]
            continue
        path = rule
        for param in re.findall(r"<(?:[a-z]+:)?([a-z_]+)>", rule):
            if ids.get(param) is None:
                skipped[rule] = f"no id for <{param}>"
                break
            path = re.sub(rf"<(?:[a-z]+:)?{param}>", str(ids[param]), path)
        else:
            urls.append((rule, path + (f"?{QUERIES[rule]}" if rule in QUERIES else "")))
    return urls, skipped


def make_ids(server: Server) -> dict:
    """Real ids: agent_1, system_overall_quality, a storyboard project created here, a finished session."""
    ids = {"agent_id": "agent_1", "metric_name": "system_overall_quality", "project_id": None, "session_id": None}
    status, body, _ = http("POST", server.base + "/api/storyboard/project/create",
                           {"name": "Benchmark storyboard", "description": "created by bench/run.py",
                            "scenes": [{"title": "Intro", "duration_sec": 12}, {"title": "Drop", "duration_sec": 30}]})
    if status == 201:
        ids["project_id"] = json.loads(body)["id"]
    else:
        say(f"  storyboard project not created ({status}): {body[:200]!r}")
    status, body, _ = http("POST", server.base + "/api/training/start", {})
    if status == 202:
        session = json.loads(body)["session_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, body, _ = http("GET", server.base + f"/api/training/session/{session}")
            if status == 200 and json.loads(body).get("status") != "running":
                break
            time.sleep(0.3)
        ids["session_id"] = session
    else:
        say(f"  training session not started ({status}): {body[:200]!r}")
    return ids


def ingestion_probe(db: Path, began: float, stop: threading.Event, seen: dict, server=None) -> None:
    """Note when the first ingest has recorded every file (ingested_files is written last), and the
    largest RSS of the server's processes (workers and the ingester among them) meanwhile."""
    seen["peak_rss_mb"] = 0.0
    while not stop.is_set():
        if server is not None:
            with contextlib.suppress(psutil.Error):
                seen["peak_rss_mb"] = max([seen["peak_rss_mb"], *server.rss_mb().values()])
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)) as conn:
                if conn.execute("SELECT COUNT(*) FROM ingested_files").fetchone()[0]:
                    seen["seconds"] = round(time.perf_counter() - began, 2)
                    seen["rows"] = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                                    for t in ("metrics", "training_sessions", "events")}
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.1)


def warm_up(bench: Bench, server: Server, urls: list[tuple[str, str]], rounds: int) -> dict:
    """Each endpoint `rounds` times, 4 at once (so both workers parse their caches); first-request times."""
    first = {}

    def get(path):
        status, body, took = http("GET", server.base + path)
        return status, body, took

    with ThreadPoolExecutor(4) as pool:
        for rule, path in urls:
            answers = list(pool.map(get, [path] * rounds))
            first[rule] = round(answers[0][2], 3)
            failed = [(status, body) for status, body, _ in answers if not 200 <= status < 300]
            if failed:
                bench.errors.append(f"warm-up {path}: {len(failed)} of {rounds} answered {failed[0][0]} "
                                    f"{failed[0][1][:200]!r}")
    return first


def measure(bench: Bench, server: Server, urls: list[tuple[str, str]], peak: dict | None = None,
            baseline=None, rounds: int = 1) -> dict:
    """wrk on each url, `rounds` times; `peak` collects the largest RSS (MB) seen per worker pid after each
    endpoint; `baseline()`, when given, measures the bare app right before each run (paired). With several
    rounds the medians count: a few seconds in which the shared machine slows down weigh on one round."""
    results = {}
    for rule, path in urls:
        runs = []
        for _ in range(rounds):
            bare = baseline() if baseline is not None else None
            server.settle()
            r = bench.wrk_run(server.base + path)
            r["drain_seconds"] = round(server.settle(), 1)  # how long the requests still queued at wrk's end took
            if bare is not None:
                r["bare_rps"], r["bare_p99_ms"] = bare["rps"], bare.get("p99_ms")
            runs.append(r)
        r = median_run(runs)
        results[rule] = {"url": path, **r}
        if peak is not None:
            for pid, mb in server.rss_mb().items():
                peak[pid] = max(mb, peak.get(pid, 0.0))
        paired = f"   (bare {r['bare_rps']:.0f} rps)" if baseline is not None else ""
        say(f"  {path:<48} {r['rps']:>8.1f} rps   p99 {r.get('p99_ms', float('nan')):>8.1f} ms{paired}"
            + (f"   ({len(runs)} rounds, median)" if len(runs) > 1 else ""))
    return results


def median_run(runs: list[dict]) -> dict:
    """One wrk result from several rounds of the same url: the median of each figure, the sum of the
    counts, and the rounds themselves (the ratio is the median of each round's paired ratio)."""
    if len(runs) == 1:
        return runs[0]
    figures = ("rps", "p50_ms", "p75_ms", "p90_ms", "p99_ms", "drain_seconds", "bare_rps", "bare_p99_ms")
    merged = {k: statistics.median(r[k] for r in runs) for k in figures if all(k in r for r in runs)}
    merged["requests"] = sum(r.get("requests", 0) for r in runs)
    merged["non_2xx"] = sum(r.get("non_2xx", 0) for r in runs)
    merged["socket_errors"] = {k: sum(r["socket_errors"].get(k, 0) for r in runs)
                               for k in ("connect", "read", "write", "timeout")}
    if all(r.get("bare_rps") for r in runs):
        merged["paired_ratio"] = statistics.median(r["rps"] / r["bare_rps"] for r in runs)
    merged["rounds"] = runs
    return merged


def time_export(server: Server, path: str, timeout: float) -> dict:
    began = time.perf_counter()
    size, status = 0, None
    try:
        with urllib.request.urlopen(server.base + path, timeout=timeout) as response:
            status = response.status
            while chunk := response.read(1 << 20):
                size += len(chunk)
    except urllib.error.HTTPError as err:
        status = err.code
    except (TimeoutError, OSError) as err:
        return {"url": path, "error": f"{type(err).__name__}: {err}", "seconds": round(time.perf_counter() - began, 1)}
    return {"url": path, "status": status, "bytes": size, "seconds": round(time.perf_counter() - began, 2)}


def code_state() -> dict:
    """The app's code as measured: git HEAD, uncommitted files, and a hash of the Python sources
    (gunicorn workers import the code afresh when recycled, so an edit during the run mixes versions)."""
    import hashlib
    digest = hashlib.sha256()
    for path in sorted(PROJECT.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT, capture_output=True, text=True).stdout

    return {"git_head": git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted": [line[3:] for line in git("status", "--porcelain").splitlines()
                            if line[3:].endswith(".py") and not line[3:].startswith("bench/")],
            "sources_sha256": digest.hexdigest()[:16]}


def machine() -> dict:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    import gunicorn
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(), "gunicorn": gunicorn.__version__,
            "wrk": wrk_version, "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


# --------------------------------------------------------------------------- report
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(res: dict) -> list[str]:
    lines = []
    b = res["bare"]
    lines.append("| Endpoint | req/s | p99 ms | bare req/s (paired) | × bare | target | | uncached req/s | "
                 "p99 ms | × bare | target | |")
    lines.append("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|")
    lines.append(f"| bare Flask `jsonify` (median of {b['runs']} runs, {b['min_rps']:.0f}-{b['max_rps']:.0f}) | "
                 f"{b['rps']:.0f} | {b.get('p99_ms', 0):.1f} | | 1.00 | | | | | | | |")
    for rule, r in res["endpoints"].items():
        cells = []
        for results, targets in ((res["endpoints"], (POLLED_TARGET, OTHER_TARGET)),
                                 (res.get("endpoints_uncached", {}), (POLLED_UNCACHED_TARGET, OTHER_UNCACHED_TARGET))):
            m = results.get(rule)
            if m is None:
                cells.append("| | | | |")
                continue
            target = targets[0] if rule in POLLED else targets[1]
            bare = m.get("bare_rps") or b["rps"]
            ratio = m.get("paired_ratio") or (m["rps"] / bare if bare else 0.0)
            m["ratio"], m["target"], m["result"] = round(ratio, 3), target, verdict(ratio >= target)
            cells.append(f"{m['rps']:.0f} | {m.get('p99_ms', float('nan')):.1f} | "
                         + (f"{bare:.0f} | " if results is res["endpoints"] else "")
                         + f"{ratio:.2f} | ≥ {target} | {m['result']} |")
        query = r.get("url", "").partition("?")[2]  # the query measured (the rule: ids vary per run)
        shown = rule + (f"?{query}" if query else "")
        name = f"**`{shown}`** (polled)" if rule in POLLED else f"`{shown}`"
        lines.append(f"| {name} | " + " ".join(cells))
    fr = res["first_request"]
    ingest_ok = (fr.get("ingestion_committed_after_s") or float("inf")) <= INGEST_TARGET_SECONDS
    lines += ["", "| First ingest of the data set | value | target | |", "|---|---:|---:|---|",
              f"| seconds until every file was recorded | {fr.get('ingestion_committed_after_s')} | "
              f"≤ {INGEST_TARGET_SECONDS} | {verdict(ingest_ok)} |",
              f"| largest RSS (MB) of any server process meanwhile | {fr.get('peak_rss_mb_during_ingest')} | "
              f"≤ {INGEST_RSS_TARGET_MB} | {verdict((fr.get('peak_rss_mb_during_ingest') or 0) <= INGEST_RSS_TARGET_MB)} |",
              f"| the first request, answered meanwhile (s) | {fr['seconds']} | | |"]
    slowest = max(res["endpoints"].values(), key=lambda r: r.get("drain_seconds", 0))
    lines += ["", f"p99 is wrk's, over the requests answered within the {res['settings']['wrk'].split()[2][2:]} run; "
              f"requests still queued when wrk stopped are not in it (the longest queue, "
              f"`{slowest['url']}`, took {slowest.get('drain_seconds', 0):.0f} s more to drain)."]
    logs = res["logs"]
    lines += ["", "| `/api/system/logs/recent` | req/s | p99 ms |", "|---|---:|---:|",
              f"| 1 MiB log | {logs['small']['rps']:.1f} | {logs['small'].get('p99_ms', 0):.1f} |",
              f"| 1 GiB log | {logs['large']['rps']:.1f} | {logs['large'].get('p99_ms', 0):.1f} |",
              f"| ratio (1 GiB cost / 1 MiB cost) | {logs['rps_ratio']:.2f} | {logs['p99_ratio']:.2f} |",
              "", f"Log size: {verdict(logs['ok'])} (target: within {LOG_RATIO_TARGET}× in req/s and p99)"]
    mem = res["memory"]
    largest = max(mem["peak_rss_mb_by_pid"].values(), default=0.0)
    now = ", ".join(f"{mb:.0f}" for mb in mem["workers_rss_mb"].values())
    lines += ["", "| Workers | RSS MB | target | |", "|---|---:|---:|---|",
              f"| largest of the {len(mem['peak_rss_mb_by_pid'])} worker processes seen (sampled after each "
              f"endpoint; {mem['workers_recycled_by_max_requests']} replaced after GUNICORN_MAX_REQUESTS) | "
              f"{largest:.0f} | ≤ {RSS_TARGET_MB} | {verdict(largest <= RSS_TARGET_MB)} |",
              f"| the workers at the end | {now} | | |"]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", 3)),
                        help="seconds of each wrk run (default 3, env BENCH_DURATION)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="wrk runs per endpoint, each right after one of the bare app (medians count)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="GUNICORN_WORKERS (default 2)")
    parser.add_argument("--gunicorn-threads", type=int, default=8, help="GUNICORN_THREADS (default 8)")
    parser.add_argument("--workdir", type=Path, default=PROJECT / "var" / "bench")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the data set even if reusable")
    parser.add_argument("--metric-points", type=int, default=dataset.DEFAULTS["metric_points"])
    parser.add_argument("--log-bytes", type=int, default=dataset.DEFAULTS["log_bytes"])
    parser.add_argument("--warmup-rounds", type=int, default=4)
    parser.add_argument("--log-rounds", type=int, default=3,
                        help="alternating wrk runs of /api/system/logs/recent on each log size (median counts)")
    parser.add_argument("--response-cache-seconds", type=float, default=None,
                        help="RESPONSE_CACHE_SECONDS for the dashboard (default: the app's default)")
    parser.add_argument("--export-timeout", type=float, default=300)
    parser.add_argument("--json", type=Path, default=PROJECT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    began = time.perf_counter()
    res: dict = {"started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
                 "settings": {"wrk": f"-t{args.wrk_threads} -c{args.connections} -d{args.duration}s --latency",
                              "rounds": args.rounds,
                              "GUNICORN_WORKERS": args.workers, "GUNICORN_THREADS": args.gunicorn_threads,
                              "worker_class": "gunicorn_worker.JsonErrorWorker (gthread)"}}
    res["code"] = code_state()
    say(f"machine: {res['machine']['cpus']} CPUs ({res['machine']['cpu_model']}), {res['machine']['memory_gb']} GB")
    res["dataset"] = dataset.ensure(workdir / "data", regenerate=args.regenerate, say=say,
                                    metric_points=args.metric_points, log_bytes=args.log_bytes)
    large, small = workdir / "data" / "large", workdir / "data" / "small"
    stack = contextlib.ExitStack()  # the bare server, stopped on any exit
    try:
        # 1. the baseline: the bare app is measured right before each endpoint, and each ratio uses that
        # paired figure, so that the machine's changing load weighs on both sides of a ratio alike.
        say("bare Flask app ...")
        bare = stack.enter_context(serving(Server("bare", "bench.bare_app:app",
                                                  dashboard_env(args, workdir, "bare", large), workdir / "run")))
        bare.start()
        for _ in range(50):
            http("GET", bare.base + "/")
        baseline: list[dict] = []

        def bare_run() -> dict:
            bare.settle()
            r = bench.wrk_run(bare.base + "/")
            baseline.append(r)
            return r

        first = bare_run()
        say(f"  bare /  {first['rps']:.1f} rps   p99 {first.get('p99_ms', 0):.1f} ms")

        # 2. the dashboard on the scaled data set (1 GiB log)
        say("dashboard on the scaled data set (1 GiB log) ...")
        env = dashboard_env(args, workdir, "large", large)
        res["settings"]["dashboard_env"] = {k: env[k] for k in (
            "GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_MAX_REQUESTS", "HEALTH_SAMPLE_SECONDS",
            "RESPONSE_CACHE_SECONDS", "LOG_LEVEL", "TRAINING_COMMAND") if k in env}
        server = Server("large", "app:app", env, workdir / "run")
        with stack, serving(server):
            stop, seen = threading.Event(), {}
            listening = server.start()
            t0 = time.perf_counter()
            probe = threading.Thread(target=ingestion_probe, args=(Path(env["DATABASE_PATH"]), t0, stop, seen, server),
                                     daemon=True)
            probe.start()
            status, body, took = http("GET", server.base + "/api/metrics/quality?days=30", timeout=600)
            if status != 200:
                bench.errors.append(f"first request: {status} {body[:200]!r}")
            first_warnings = json.loads(body).get("warnings", []) if status == 200 else []
            probe.join(timeout=300)
            stop.set()
            res["first_request"] = {"listening_after_s": round(listening, 2),
                                    "url": "/api/metrics/quality?days=30", "seconds": round(took, 2),
                                    "ingestion_committed_after_s": seen.get("seconds"),
                                    "peak_rss_mb_during_ingest": round(seen.get("peak_rss_mb", 0.0), 1),
                                    "rows_after_ingestion": seen.get("rows"), "warnings": first_warnings[:10]}
            say(f"  first request {took:.2f} s; ingestion committed {seen.get('seconds')} s after listening; "
                f"rows {seen.get('rows')}")
            for warning in first_warnings[:10]:
                say(f"  warning: {warning}")
            ids = make_ids(server)
            urls, skipped = endpoint_urls(server, ids)
            res["ids"], res["skipped"] = ids, skipped
            res["warm_up_first_seconds"] = warm_up(bench, server, urls, args.warmup_rounds)
            server.workers = server.worker_pids()
            say(f"  {len(urls)} endpoints; wrk {res['settings']['wrk']} each")
            peak: dict = {}
            res["endpoints"] = measure(bench, server, urls, peak, baseline=bare_run, rounds=args.rounds)
            server.settle()
            # 2b. the same answers computed on every request (RESPONSE_CACHE_SECONDS=0), on the database
            # the first server recorded (no second first ingest).
            say("the same, uncached (RESPONSE_CACHE_SECONDS=0) ...")
            uncached_env = {**dashboard_env(args, workdir, "uncached", large), "RESPONSE_CACHE_SECONDS": "0",
                            "DATABASE_PATH": env["DATABASE_PATH"]}
            uncached = Server("uncached", "app:app", uncached_env, workdir / "run")
            with serving(uncached):
                uncached.start()
                warm_up(bench, uncached, urls, args.warmup_rounds)
                uncached.workers = uncached.worker_pids()
                res["endpoints_uncached"] = measure(bench, uncached, urls, peak, baseline=bare_run,
                                                    rounds=args.rounds)
                bench.errors += uncached.check()
            rates = sorted(r["rps"] for r in baseline)
            res["bare"] = {"rps": statistics.median(rates), "min_rps": rates[0], "max_rps": rates[-1],
                           "p99_ms": statistics.median(r.get("p99_ms", float("nan")) for r in baseline),
                           "runs": len(baseline), "workers_rss_mb": bare.rss_mb()}
            bench.errors += bare.check()
            res["memory"] = {"workers_rss_mb": server.rss_mb(), "peak_rss_mb_by_pid": peak,
                             "workers_recycled_by_max_requests": server.recycled()}
            res["export"] = [time_export(server, "/api/logs/export?format=ndjson&days=7", args.export_timeout)]
            say(f"  export {res['export'][0]}")

            # 3. /api/system/logs/recent on the 1 MiB-log variant, alternating with the 1 GiB one (both
            # servers up, one measured at a time) so that the machine's load weighs on both alike.
            say(f"dashboard on the variant (1 MiB log), {LOGS_URL} alternating with the 1 GiB log ...")
            small_server = Server("small", "app:app", dashboard_env(args, workdir, "small", small), workdir / "run")
            with serving(small_server):
                small_server.start()
                http("GET", small_server.base + "/api/metrics/quality?days=30", timeout=600)
                warm_up(bench, small_server, [(LOGS_URL, LOGS_URL)], args.warmup_rounds)
                small_server.workers = small_server.worker_pids()
                rounds: dict[str, list[dict]] = {"small": [], "large": []}
                for _ in range(args.log_rounds):
                    for name, srv in (("small", small_server), ("large", server)):
                        say(f"  {name}:", end="")
                        rounds[name].append(measure(bench, srv, [(LOGS_URL, LOGS_URL)])[LOGS_URL])
                res["export"].append(time_export(small_server, "/api/logs/export?format=ndjson&days=7",
                                                 args.export_timeout))
                say(f"  export {res['export'][1]}")
                bench.errors += small_server.check()
            bench.errors += server.check()
        med = {name: {"rps": statistics.median(r["rps"] for r in runs),
                      "p99_ms": statistics.median(r.get("p99_ms", float("nan")) for r in runs), "runs": runs}
               for name, runs in rounds.items()}
        rps_ratio = med["small"]["rps"] / med["large"]["rps"] if med["large"]["rps"] else float("inf")
        p99_ratio = med["large"]["p99_ms"] / med["small"]["p99_ms"] if med["small"]["p99_ms"] else float("inf")
        res["logs"] = {**med, "rps_ratio": round(rps_ratio, 3), "p99_ratio": round(p99_ratio, 3),
                       "ok": rps_ratio <= LOG_RATIO_TARGET and p99_ratio <= LOG_RATIO_TARGET}
    except Exception as exc:  # a failed setup or a crashed server: an error, reported and non-zero
        bench.errors.append(f"{type(exc).__name__}: {exc}")
        res["errors"] = bench.errors
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
        say("\nERRORS:\n  " + "\n  ".join(bench.errors))
        return 1
    finally:
        stack.close()

    res["seconds"] = round(time.perf_counter() - began, 1)
    res["code_changed_during_run"] = code_state()["sources_sha256"] != res["code"]["sources_sha256"]
    res["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    table = report(res)
    res["errors"] = bench.errors
    res["table"] = table
    misses = [r["url"] for r in res["endpoints"].values() if r["result"] == "MISS"]
    misses += [f"{r['url']} (uncached)" for r in res.get("endpoints_uncached", {}).values() if r.get("result") == "MISS"]
    if not res["logs"]["ok"]:
        misses.append("log size (1 GiB vs 1 MiB)")
    misses += [f"worker {pid} RSS" for pid, mb in res["memory"]["peak_rss_mb_by_pid"].items() if mb > RSS_TARGET_MB]
    res["misses"] = misses
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
    say("")
    say("\n".join(table))
    fr = res["first_request"]
    say(f"\nFirst request, answered during the first ingest: {fr['seconds']} s; the ingest recorded every file "
        f"{fr['ingestion_committed_after_s']} s after the server listened (largest RSS meanwhile "
        f"{fr['peak_rss_mb_during_ingest']} MB).")
    for e in res["export"]:
        say(f"Export {e['url']}: {e}")
    if res["skipped"]:
        say("Not measured: " + "; ".join(f"{k} ({v})" for k, v in res["skipped"].items()))
    say(f"\n{len(misses)} target(s) missed" + (": " + ", ".join(misses) if misses else "") +
        f". Whole bench: {res['seconds']:.0f} s. Results: {args.json.relative_to(PROJECT) if args.json.is_relative_to(PROJECT) else args.json}")
    if res["code_changed_during_run"]:
        say("\nWARNING: the app's Python sources changed during the run (recycled workers load the new code):"
            " the figures mix versions; run it again.")
    if bench.errors:
        say("\nERRORS:\n  " + "\n  ".join(bench.errors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
