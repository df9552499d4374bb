"""`.venv/bin/python bench/agents_scale.py`: what every GET endpoint costs in-process when the newest daily
report names thousands of agents (docs/performance.md "Many agents").

For each size (default 2,500, 10,000 and 25,000 agents): the example orchestrator writes two weeks of
history (`backfill --days 14`, the six bundled agents), its newest daily report is given sections for
`agent_s1`, `agent_s2`, ... up to the size (scale_report), one ingester round records it, and each GET
endpoint of the app's route table is called through Flask's test client with RESPONSE_CACHE_SECONDS=0:
the first call (the files' parse and indexes built) and the median of `--repeat` more (what a poller
pays). The baseline is a bare Flask `jsonify` route (bench/bare_app.py) called the same way right before
each endpoint; `x bare` is its time over the endpoint's (1.0 = as fast as the bare app, like bench/run.py's
req/s ratio). Not a test: nothing is asserted. Writes bench/results/agents_scale.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT / "bench"), str(PROJECT)]
ORCHESTRATOR = PROJECT / "examples" / "orchestrator" / "orchestrator.py"
RESULTS = PROJECT / "bench" / "results" / "agents_scale.json"
SKIPPED = {"/api/stream": "Server-Sent Events: one long response",
           "/api/training/session/<int:session_id>": "no dashboard session in this data set"}
IDS = {"agent_id": "agent_1", "metric_name": "system_overall_quality"}
AGENT_LINE = re.compile(r"\((agent_[A-Za-z0-9]+)\)\s*║?\s*$")


def _example():
    spec = importlib.util.spec_from_file_location("example_orchestrator", ORCHESTRATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unpadded(line: str) -> str:
    """A report line without the 79-column padding: borders kept, as short as the parser allows."""
    if line and line[0] in "╔╠╚":
        return line[0] + "═" + line[-1]
    return re.sub(r" +║$", " ║", line)


def scale_report(root: Path, count: int) -> Path:
    """Give the newest daily report of `root` sections for agent_s1, agent_s2, ... until it names `count`
    agents; rendered by the example orchestrator (scores 5.0-9.9, every seventh agent without data),
    every line without its padding, so that 25,000 sections (3.6 MB) stay under the 10 MiB read cap."""
    example = _example()
    path = sorted((root / "logs").glob("daily_report_*.txt"))[-1]
    lines = path.read_text(encoding="utf-8").split("\n")
    own = sum(1 for line in lines if AGENT_LINE.search(line))
    extra = [(f"agent_s{i}", f"Scale Agent {i}") for i in range(1, count - own + 1)]
    outcomes = {agent_id: {"status": "skipped"} if i % 7 == 0 else
                {"status": "success", "score": 5.0 + i % 50 / 10, "change": 0.1, "time_ms": 1000 + i % 997}
                for i, (agent_id, _name) in enumerate(extra, 1)}
    day = date.fromisoformat(re.search(r"\d{4}-\d{2}-\d{2}", path.name).group())
    rendered = example.render_report(day, 1.0, {"score": 8.0, "change": 0.0, "trajectory": "UP"}, extra,
                                     outcomes).split("\n")
    rendered_end = next(i for i, line in enumerate(rendered) if "RECOMMENDATIONS" in line) - 1
    sections = rendered[4:rendered_end]  # each agent's rule line and lines, without header and advice
    at = next(i for i, line in enumerate(lines) if "RECOMMENDATIONS" in line) - 1
    lines[at:at] = sections
    path.write_text("\n".join(_unpadded(line) for line in lines), encoding="utf-8")
    return path


def build(root: Path, count: int) -> Path:
    """An orchestrator folder with two weeks of history whose newest report names `count` agents."""
    shutil.copytree(ORCHESTRATOR.parent / "training", root / "training")
    shutil.copytree(ORCHESTRATOR.parent / "agents", root / "agents")
    subprocess.run([sys.executable, str(ORCHESTRATOR), "backfill", "--root", str(root), "--days", "14",
                    "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    return scale_report(root, count)


def timed(client, url: str) -> tuple[int, float]:
    """(status, seconds) of one GET, the body read to its end."""
    began = time.perf_counter()
    response = client.get(url)
    response.get_data()
    return response.status_code, time.perf_counter() - began


def endpoint_urls(app, ids: dict) -> tuple[list[tuple[str, str]], dict]:
    """(rule, url) of every GET rule of the route table, ids filled in; the skipped rules with why."""
    urls, skipped = [], {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if "GET" not in rule.methods or rule.endpoint == "static" or rule.rule == "/":
            continue
        if rule.rule in SKIPPED:
            skipped[rule.rule] = SKIPPED[rule.rule]
            continue
        url = rule.rule
        for param in rule.arguments:
            url = re.sub(rf"<(?:[a-z]+:)?{param}>", str(ids[param]), url)
        urls.append((rule.rule, url))
    return urls, skipped


def measure(count: int, repeat: int, workdir: Path) -> dict:
    """Build the data set of `count` agents, ingest it, time every endpoint against the bare app."""
    from app import create_app
    from bare_app import app as bare_app

    root = workdir / f"orchestrator-{count}"
    report = build(root, count)
    app = create_app({"ORCHESTRATOR_PATH": root, "DATABASE_PATH": workdir / f"db-{count}.sqlite", "LOG_FILE": None,
                      "LOG_LEVEL": "WARNING", "TRAINING_RUNS_DIR": workdir / "runs", "HEALTH_SAMPLE_SECONDS": 0,
                      "RESPONSE_CACHE_SECONDS": 0, "INGEST_SECONDS": 0, "POST_RATE_LIMIT": 0})
    began = time.perf_counter()
    app.extensions["ingester"].run_once()
    ingest = time.perf_counter() - began
    client, bare = app.test_client(), bare_app.test_client()
    created = client.post("/api/storyboard/project/create", json={"name": "Agents scale bench"})
    urls, skipped = endpoint_urls(app, {**IDS, "project_id": created.get_json()["id"]})
    rows = []
    for rule, url in urls:
        bare_times = [timed(bare, "/")[1] for _ in range(repeat + 1)][1:]
        status, first = timed(client, url)
        statuses, times = zip(*(timed(client, url) for _ in range(repeat)))
        seconds, bare_seconds = statistics.median(times), statistics.median(bare_times)
        rows.append({"rule": rule, "url": url, "status": sorted({status, *statuses}), "first_ms": round(first * 1e3, 2),
                     "ms": round(seconds * 1e3, 2), "bare_ms": round(bare_seconds * 1e3, 3),
                     "x_bare": round(bare_seconds / seconds, 4)})
    return {"agents": count, "report_mb": round(report.stat().st_size / 1e6, 2), "ingest_seconds": round(ingest, 2),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "endpoints": rows, "skipped": skipped}


def print_table(runs: list[dict]) -> None:
    sizes = [f"{r['agents']:,}" for r in runs]
    print("\n| Endpoint | " + " | ".join(f"{s}: first ms | ms | x bare" for s in sizes) + " |")
    print("|---|" + "---:|---:|---:|" * len(runs))
    for i, row in enumerate(runs[0]["endpoints"]):
        cells = [f"{r['endpoints'][i]['first_ms']:.1f} | {r['endpoints'][i]['ms']:.1f} | {r['endpoints'][i]['x_bare']:.3f}"
                 for r in runs]
        print(f"| `{row['url']}` | " + " | ".join(cells) + " |")
    for r in runs:
        print(f"\n{r['agents']:,} agents: report {r['report_mb']} MB, first ingest {r['ingest_seconds']} s, "
              f"largest RSS of this process so far {r['max_rss_mb']} MB")
        bad = [e["url"] for e in r["endpoints"] if any(s >= 500 for s in e["status"])]
        if bad:
            print(f"  5xx answers: {', '.join(bad)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="2500,10000,25000", help="comma list of sizes (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per endpoint after the first")
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="agents-scale-") as workdir:
        for count in (int(n) for n in args.agents.split(",")):
            print(f"{count:,} agents ...", flush=True)
            runs.append(measure(count, args.repeat, Path(workdir)))
    print_table(runs)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT, capture_output=True, text=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"commit": commit.stdout.strip(), "python": platform.python_version(),
                                   "runs": runs}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {RESULTS.relative_to(PROJECT)}")
    return 1 if any(s >= 500 for r in runs for e in r["endpoints"] for s in e["status"]) else 0


if __name__ == "__main__":
    sys.exit(main())
