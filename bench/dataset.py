"""The benchmark's data set: an orchestrator folder written by the example orchestrator, then scaled.

1. `orchestrator.py init` (the six bundled agents) and `backfill --days 30` (default) write a real
   month of history. Backfilling three years directly is quadratic (every run re-reads and rewrites
   training_metrics.json; 365 days of 2 agents take ~40 s here, 1095 days of 6 agents would take
   over 10 minutes) and the run's cleanup phase deletes reports older than `log_retention_days`.
2. Scaling copies what the program wrote, with shifted dates and timestamps, in front of the real
   month (which stays at the end, untouched, so the "latest" state is the program's own):
   - daily reports: one per day for `years` years, each a real report with its date rewritten;
   - logs/training_metrics.json: about `metric_points` points in total: every series gets real points
     replicated at evenly spaced timestamps (training_history stays one entry per day);
   - logs/holistic_training.log: real runs (all their lines, tracebacks included) repeated at evenly
     spaced start times until the file reaches `log_bytes`; written in big blocks.
3. A variant folder, identical (hard links) except that its log is `small_log_bytes` long.

Run alone: `.venv/bin/python bench/dataset.py --root var/bench/data`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timedelta
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
ORCHESTRATOR = PROJECT / "examples" / "orchestrator" / "orchestrator.py"
AGENTS = ("agent_1:Trend Detective,agent_2:Lyric Composer,agent_3:Beat Architect,"
          "agent_5a:Veo Generator,agent_7:Mix Engineer,agent_8:Quality Critic")
VERSION = 1  # bump when the generated data changes shape
REPORT_RE = re.compile(r"^daily_report_(\d{4}-\d{2}-\d{2})\.txt$")
LOG_LINE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3})( - .*)$", re.S)
RUN_START = "HOLISTIC TRAINING PIPELINE STARTED"
BLOCK = 8 << 20
DEFAULTS = {"backfill_days": 30, "years": 3, "metric_points": 1_000_000, "log_bytes": 1 << 30,
            "small_log_bytes": 1 << 20}


def orchestrator(*args: str) -> float:
    """Run the example orchestrator; return its wall time."""
    began = time.perf_counter()
    subprocess.run([sys.executable, str(ORCHESTRATOR), *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def scale_reports(logs: Path, days: int) -> int:
    """Add reports for the `days` days ending with the newest real one, real reports cycled, dates rewritten."""
    real = sorted((date.fromisoformat(m.group(1)), p) for p in logs.iterdir() if (m := REPORT_RE.match(p.name)))
    last = real[-1][0]
    have = {d for d, _ in real}
    texts = [(d.isoformat(), p.read_text(encoding="utf-8")) for d, p in real]
    written = 0
    for back in range(days):
        day = last - timedelta(days=back)
        if day in have:
            continue
        old_day, text = texts[back % len(texts)]
        text = text.replace(f"DAILY TRAINING REPORT [{old_day}]", f"DAILY TRAINING REPORT [{day.isoformat()}]", 1)
        (logs / f"daily_report_{day.isoformat()}.txt").write_text(text, encoding="utf-8")
        written += 1
    return written


def _point_template(point: dict) -> tuple[str, str]:
    """A metrics point as json.dump(indent=2) writes it inside the file's object, split at its timestamp."""
    marker = "\x00STAMP\x00"
    text = textwrap.indent(json.dumps(dict(point, timestamp=marker), indent=2, ensure_ascii=False), "    ")
    head, tail = text.split(json.dumps(marker), 1)
    return head + '"', '"' + tail


def scale_metrics(path: Path, start: datetime, total_points: int) -> dict[str, int]:
    """Rewrite training_metrics.json with about `total_points` points, the synthetic ones from `start`
    up to the first real point of each series; return the number of points per key."""
    real = json.loads(path.read_text(encoding="utf-8"))
    history_days = (min(datetime.fromisoformat(p["timestamp"]) for p in real["training_history"]) - start).days
    spread = total_points - sum(len(v) for v in real.values()) - history_days
    weights = {k: len(v) for k, v in real.items() if k != "training_history"}
    counts = {}
    with open(path, "w", encoding="utf-8") as out:
        out.write("{")
        for index, (key, points) in enumerate(real.items()):
            first = datetime.fromisoformat(points[0]["timestamp"])
            if key == "training_history":  # one run result per day, as the orchestrator writes them
                extra = [dict(points[i % len(points)], data=dict(points[i % len(points)]["data"]))
                         for i in range(history_days)]
                stamps = [first - timedelta(days=history_days - i) for i in range(history_days)]
                for point, stamp in zip(extra, stamps):
                    point["data"]["timestamp"] = stamp.isoformat(timespec="microseconds")
                templates = [_point_template(p) for p in extra]
                pick = list(range(history_days))
            else:
                n = round(spread * weights[key] / sum(weights.values()))
                step = (first - start) / max(n, 1)
                stamps = [start + step * i for i in range(n)]
                templates = [_point_template(p) for p in points]
                pick = [i % len(points) for i in range(n)]
            out.write(("," if index else "") + f"\n  {json.dumps(key)}: [")
            parts = [templates[t][0] + s.isoformat(timespec="microseconds") + templates[t][1]
                     for t, s in zip(pick, stamps)]
            real_text = textwrap.indent(json.dumps(points, indent=2, ensure_ascii=False)[1:-1].strip("\n"), "  ")
            body = ",\n".join(parts + [real_text])
            out.write("\n" + body + "\n  ]")
            counts[key] = len(parts) + len(points)
        out.write("\n}\n")
    return counts


def _runs(log_text: str) -> list[list[tuple[int, str]]]:
    """The log's runs: lists of (ms since the run's start, rest of the line after the timestamp)."""
    runs: list[list[tuple[int, str]]] = []
    start = None
    for line in log_text.splitlines(keepends=True):
        m = LOG_LINE_RE.match(line)
        if m is None:  # a continuation line (traceback): part of the previous line
            if runs:
                offset, rest = runs[-1][-1]
                runs[-1][-1] = (offset, rest + line)
            continue
        when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") + timedelta(milliseconds=int(m.group(2)))
        if RUN_START in line or start is None:
            start = when
            runs.append([])
        runs[-1].append((int((when - start).total_seconds() * 1000), m.group(3)))
    return runs


def write_log(target: Path, real: Path, start: datetime, size: int) -> int:
    """Write `target`: real runs repeated from `start` up to the real log's first line, then the real log."""
    real_bytes = real.read_bytes()
    runs = _runs(real_bytes.decode("utf-8"))
    first = datetime.strptime(real_bytes[:19].decode(), "%Y-%m-%d %H:%M:%S")
    run_bytes = sum(len(rest.encode()) + 23 for run in runs for _, rest in run) / len(runs)
    count = max(0, int((size - len(real_bytes)) / run_bytes))
    step_ms = int((first - start).total_seconds() * 1000 / max(count, 1))
    base = datetime(1970, 1, 1)
    start_ms = int((start - base).total_seconds() * 1000)
    written = 0
    with open(target, "wb") as out:
        chunk: list[str] = []
        pending, minute, prefix = 0, None, ""
        for k in range(count):
            run = runs[k % len(runs)]
            run_ms = start_ms + k * step_ms
            for offset, rest in run:
                ms = run_ms + offset
                if ms // 60000 != minute:  # strftime once per minute: the lines of a run share minutes
                    minute = ms // 60000
                    prefix = f"{base + timedelta(minutes=minute):%Y-%m-%d %H:%M:}"
                line = f"{prefix}{ms // 1000 % 60:02d},{ms % 1000:03d}{rest}"
                chunk.append(line)
                pending += len(line)
            if pending >= BLOCK:
                data = "".join(chunk).encode("utf-8")
                out.write(data)
                written += len(data)
                chunk, pending = [], 0
        data = "".join(chunk).encode("utf-8") + real_bytes
        out.write(data)
        written += len(data)
    return written


def build(root: Path, backfill_days: int = 30, years: int = 3, metric_points: int = 1_000_000,
          log_bytes: int = 1 << 30, small_log_bytes: int = 1 << 20, say=print) -> dict:
    """Build <root>/large (the log `log_bytes` long) and <root>/small (the same, log `small_log_bytes`)."""
    if root.exists():
        shutil.rmtree(root)
    large, small = root / "large", root / "small"
    large.parent.mkdir(parents=True, exist_ok=True)
    info: dict = {"version": VERSION, "built_on": date.today().isoformat(),
                  "requested": {"backfill_days": backfill_days, "years": years, "metric_points": metric_points,
                                "log_bytes": log_bytes, "small_log_bytes": small_log_bytes}}
    say(f"dataset: orchestrator.py init + backfill --days {backfill_days} ...")
    orchestrator("init", "--root", str(large), "--agents", AGENTS)
    info["backfill_seconds"] = round(orchestrator("backfill", "--root", str(large), "--days", str(backfill_days)), 2)
    logs = large / "logs"
    real_log = root / "real.log"
    shutil.move(logs / "holistic_training.log", real_log)
    last_day = max(date.fromisoformat(m.group(1)) for p in logs.iterdir() if (m := REPORT_RE.match(p.name)))
    days = years * 365
    start = datetime.combine(last_day - timedelta(days=days - 1), datetime.min.time())

    began = time.perf_counter()
    info["reports_added"] = scale_reports(logs, days)
    info["reports"] = sum(1 for p in logs.iterdir() if REPORT_RE.match(p.name))
    info["reports_seconds"] = round(time.perf_counter() - began, 2)
    say(f"dataset: {info['reports']} daily reports ({info['reports_seconds']} s)")

    began = time.perf_counter()
    counts = scale_metrics(logs / "training_metrics.json", start, metric_points)
    info["metric_points"] = sum(counts.values())
    info["metric_points_by_key"] = counts
    info["metrics_bytes"] = (logs / "training_metrics.json").stat().st_size
    info["metrics_seconds"] = round(time.perf_counter() - began, 2)
    say(f"dataset: training_metrics.json with {info['metric_points']} points, "
        f"{info['metrics_bytes'] / 1e6:.0f} MB ({info['metrics_seconds']} s)")

    began = time.perf_counter()
    info["log_bytes"] = write_log(logs / "holistic_training.log", real_log, start, log_bytes)
    info["log_seconds"] = round(time.perf_counter() - began, 2)
    say(f"dataset: holistic_training.log {info['log_bytes'] / 2**20:.0f} MiB ({info['log_seconds']} s)")

    # The variant: the same files (hard links: identical content, no copy), a small log.
    for dirpath, _dirs, files in os.walk(large):
        rel = Path(dirpath).relative_to(large)
        (small / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if rel == Path("logs") and name == "holistic_training.log":
                continue
            os.link(Path(dirpath) / name, small / rel / name)
    info["small_log_bytes"] = write_log(small / "logs" / "holistic_training.log", real_log, start, small_log_bytes)
    (root / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def ensure(root: Path, regenerate: bool = False, say=print, **params) -> dict:
    """The data set under `root`, rebuilt when missing, outdated (built another day, other parameters or
    generator version) or when asked to."""
    wanted = {**DEFAULTS, **params}
    stamp = root / "dataset.json"
    if not regenerate and stamp.exists():
        info = json.loads(stamp.read_text(encoding="utf-8"))
        if (info.get("version"), info.get("built_on"), info.get("requested")) == (
                VERSION, date.today().isoformat(), wanted):
            say(f"dataset: reusing {root} (built today with the same parameters; --regenerate rebuilds it)")
            return info
    return build(root, say=say, **wanted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=PROJECT / "var" / "bench" / "data")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    args = parser.parse_args()
    params = {k: getattr(args, k) for k in DEFAULTS}
    print(json.dumps(ensure(args.root.resolve(), regenerate=True, **params), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
