"""`.venv/bin/python bench/report.py`: the benchmark tables of docs/performance.md, from bench/results/*.json.

`make bench` and `make load` run it at the end; alone, it renders again from the results as they are.
Each table goes between a pair of marker comments in docs/performance.md,

    <!-- BEGIN bench/report.py: NAME -->  ...  <!-- END bench/report.py: NAME -->

one pair per results file (NAME: latest, load, agents_scale, rewrite_memory); everything outside the markers
is kept as written. The bench/run.py and bench/load.py tables are their own report() functions, so the
figures and PASS/MISS verdicts read the same here as on the console. `--check` changes nothing and exits 1
when the page differs from what the results give (tests/test_docs.py runs it).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT / "bench"), str(PROJECT)]
RESULTS = PROJECT / "bench" / "results"
PAGE = PROJECT / "docs" / "performance.md"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def measured_on(res: dict) -> str:
    """One line: commit, date, machine and its load while measuring."""
    m, code = res.get("machine", {}), res.get("code", {})
    parts = [f"commit {code.get('git_head', '?')}" + (" with uncommitted changes" if code.get("uncommitted") else ""),
             f"started {res.get('started_at', '?')}"]
    if m:
        parts.append(f"{m.get('cpus')} vCPUs ({m.get('cpu_model')}), {m.get('memory_gb')} GB, Python {m.get('python')}, "
                     f"gunicorn {m.get('gunicorn')}")
        load_avg = m.get("loadavg_at_start")
        if load_avg:
            parts.append(f"load average {load_avg[0]} at the start"
                         + (f", {m['loadavg_at_end'][0]} at the end" if m.get("loadavg_at_end") else ""))
    return "Measured: " + "; ".join(parts) + "."


def errors_note(res: dict) -> list[str]:
    errors = res.get("errors") or []
    return [] if not errors else ["", f"**The run reported {len(errors)} error(s)**: " + "; ".join(
        f"`{e}`" for e in errors[:5]) + (" ..." if len(errors) > 5 else "")]


def render_latest(res: dict) -> list[str]:
    """bench/run.py: every GET endpoint against the bare app, cached and uncached; ingest, log size, RSS."""
    import run

    lines = [measured_on(res) + f" wrk `{res['settings']['wrk']}`"
             + (f", {res['settings']['rounds']} rounds per endpoint (medians)" if res["settings"].get("rounds") else "")
             + ".", ""]
    if res.get("code_changed_during_run"):
        lines += ["**The sources changed during this run: the figures mix versions.**", ""]
    lines += run.report(res)
    exports = ", ".join(f"{e.get('seconds')} s ({e.get('bytes', 0) / 1e3:.0f} kB)" for e in res.get("export", []))
    if exports:
        lines += ["", f"`/api/logs/export?format=ndjson&days=7` (1 GiB log, then 1 MiB log): {exports}."]
    misses = res.get("misses") or []
    lines += ["", f"Targets missed: {len(misses)}" + (" (" + ", ".join(f"`{m}`" for m in misses) + ")" if misses else "")
              + "."]
    return lines + errors_note(res)


def render_load(res: dict) -> list[str]:
    """bench/load.py: the mixed load and /healthz against their targets."""
    import load as load_bench

    s = res["settings"]
    lines = [measured_on(res) + f" {s['duration_s']} s of {s['get_connections']} GET + {s['post_connections']} "
             f"POST connections and {s['streams']} streams; /healthz for {s['health_duration_s']} s.", ""]
    return lines + load_bench.report(res) + errors_note(res)


def render_agents_scale(res: dict) -> list[str]:
    """bench/agents_scale.py: median ms per endpoint (x bare in brackets) per agent count, first call at the largest."""
    runs = res["runs"]
    largest = runs[-1]
    lines = [f"Measured: commit {res.get('commit', '?')}, Python {res.get('python', '?')}, in-process "
             "(Flask's test client), `RESPONSE_CACHE_SECONDS=0`, `MAX_AGENTS` 1000.", "",
             "| Endpoint (median ms, `× bare`) | " + " | ".join(f"{r['agents']:,} agents" for r in runs)
             + f" | first call at {largest['agents']:,} |",
             "|---|" + "---:|" * (len(runs) + 1)]
    by_rule = [{e["rule"]: e for e in r["endpoints"]} for r in runs]
    for rule in sorted(by_rule[0]):
        cells = [f"{row[rule]['ms']:.1f} ({row[rule]['x_bare']:.3f})" if rule in row else "" for row in by_rule]
        first = by_rule[-1].get(rule, {}).get("first_ms")
        label = rule if "project_id" in rule else by_rule[0][rule]["url"]  # a project's id differs per run
        lines.append(f"| `{label}` | " + " | ".join(cells) + f" | {'' if first is None else f'{first:.1f}'} |")
    lines.append("| the first ingest (s) | " + " | ".join(f"{r['ingest_seconds']}" for r in runs) + " | |")
    lines.append("| the newest daily report (MB) | " + " | ".join(f"{r['report_mb']}" for r in runs) + " | |")
    lines.append("| largest RSS of the process so far (MB) | " + " | ".join(f"{r['max_rss_mb']}" for r in runs) + " | |")
    failed = sorted({e["url"] for r in runs for e in r["endpoints"] if any(s >= 500 for s in e["status"])})
    if failed:
        lines += ["", "**5xx answers**: " + ", ".join(f"`{u}`" for u in failed)]
    return lines


def render_rewrite_memory(res: dict) -> list[str]:
    """bench/rewrite_memory.py: the workers' RSS after the first and the last rewrite of the metrics file."""
    first = sorted(res["rss_mb_after_first"].values())
    last = sorted(res["rss_mb_after_last"].values())
    largest, target = res["largest_rss_mb"], res["target_mb"]
    return [measured_on(res), "",
            f"| `training_metrics.json` of {res['data']['metrics_bytes'] / 1e6:.1f} MB "
            f"({res['data']['metric_points']:,} points), rewritten {res['rewrites']} times | RSS MB | target | |",
            "|---|---:|---:|---|",
            f"| the workers after the first rewrite | {', '.join(f'{mb:.1f}' for mb in first)} | | |",
            f"| the workers after the last rewrite | {', '.join(f'{mb:.1f}' for mb in last)} | | |",
            f"| the largest | {largest:.1f} | ≤ {target} | {'PASS' if largest <= target else 'MISS'} |"] + errors_note(res)


BLOCKS: dict[str, Callable[[dict], list[str]]] = {
    "latest": render_latest, "load": render_load, "agents_scale": render_agents_scale,
    "rewrite_memory": render_rewrite_memory}
COMMANDS = {"latest": "make bench", "load": "make load", "agents_scale": ".venv/bin/python bench/agents_scale.py",
            "rewrite_memory": "make bench"}


def block(name: str) -> str:
    """The generated text of one block (without its markers)."""
    res = load(name)
    source = f"bench/results/{name}.json"
    if res is None:
        body = [f"No results yet: `{COMMANDS[name]}` writes `{source}`."]
    else:
        try:
            body = BLOCKS[name](res)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:  # an incomplete run (it failed)
            body = [f"`{source}` is incomplete ({type(exc).__name__}: {exc}); see its `errors`."] + errors_note(res)
    note = f"<!-- generated by bench/report.py from {source}: edit the prose outside the markers, not this -->"
    return "\n".join([note, *body])


def render(text: str) -> str:
    """`text` with every block replaced by what the results give now."""
    for name in BLOCKS:
        begin, end = f"<!-- BEGIN bench/report.py: {name} -->", f"<!-- END bench/report.py: {name} -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise SystemExit(f"{PAGE.relative_to(PROJECT)}: no block {begin} ... {end}")
        text = pattern.sub(lambda _: f"{begin}\n{block(name)}\n{end}", text, count=1)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the page is not up to date")
    args = parser.parse_args(argv)
    old = PAGE.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        if new != old:
            print(f"{PAGE.relative_to(PROJECT)} differs from bench/results: run .venv/bin/python bench/report.py")
            return 1
        return 0
    if new != old:
        PAGE.write_text(new, encoding="utf-8")
        print(f"{PAGE.relative_to(PROJECT)}: tables rendered from bench/results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
