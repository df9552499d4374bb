#!/usr/bin/env python3
"""Example training orchestrator: writes the same files, in the same shapes, as the real one.

A simulated daily 6-phase "holistic training" over the agents enabled in training/config.json,
leaving logs/holistic_training.log, logs/daily_report_YYYY-MM-DD.txt, logs/training_metrics.json
and holistic_training_result.json behind (orchestration_report.json for a production run). The
numbers are simulated but deterministic: the same day and history always give the same output, or,
with --seed N, the same seed and position relative to the last day, whatever the calendar says.
Commands: train [--verbose] [--seed N] | backfill --days N [--end YYYY-MM-DD] [--seed N]
| init --agents "agent_10:Name,..." | produce <genre> <mood>, all with --root DIR (default: this folder). ORCHESTRATOR_TIME_SCALE
(default 1.0) multiplies every sleep of `train`; ORCHESTRATOR_FAIL=1 makes it fail in phase 2.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import random
import re
import signal
import sys
import time as _time
from datetime import date, datetime, time, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOGGER_NAME = "HolisticTrainer"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
LOG_FILE = "holistic_training.log"
RESULT_FILE = "holistic_training_result.json"
PRODUCTION_FILE = "orchestration_report.json"
DEFAULT_SCHEDULE = "0 3 * * *"
AGENT_ID_RE = re.compile(r"^agent_[A-Za-z0-9]+$")
MODULE_RE = re.compile(r"^(agent_[A-Za-z0-9]+)_(.+)\.py$")
REPORT_RE = re.compile(r"^daily_report_(\d{4}-\d{2}-\d{2})\.txt$")
BOX_INNER = 77  # 79 columns with the two borders
TRAJECTORY = {"UP": "UP ↑", "DOWN": "DOWN ↓", "STABLE": "STABLE →"}
SOURCES = ["spotify_charts", "youtube_trends", "tiktok_sounds", "billboard_hot100", "user_feedback"]
# Scripted events by day number (Stream.number % 14): any 14 consecutive days contain each one once.
FAIL_DAY, DIP_DAY, NO_DATA_DAY, STEADY_DAY = 2, 5, 8, 10
RUN_FAIL_DAYS = {0, 1, 3, 4, 6, 7, 11, 12, 13}  # backfill may put its failed run on these
BUNDLED_AGENTS = [("agent_1", "Trend Detective", "critical"), ("agent_2", "Lyric Composer", "high"),
                  ("agent_3", "Beat Architect", "high"), ("agent_5a", "Veo Generator", "medium"),
                  ("agent_7", "Mix Engineer", "high"), ("agent_8", "Quality Critic", "critical")]


# --------------------------------------------------------------------------- the clock
class Clock:
    """The pipeline's time: real (sleeps scaled by ORCHESTRATOR_TIME_SCALE) or simulated (`at` set:
    sleeping only moves `at` forward, so backfill replays a past day instantly)."""

    def __init__(self, scale: float = 1.0, at: datetime | None = None):
        self.scale, self.at = scale, at

    def now(self) -> datetime:
        """The current naive local time, real or simulated."""
        return self.at or datetime.now()

    def monotonic(self) -> float:
        """Seconds for measuring durations."""
        return (self.at - datetime(2000, 1, 1)).total_seconds() if self.at else _time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds` times the scale, or advance the simulated time by `seconds`."""
        if self.at:
            self.at += timedelta(seconds=seconds)
        else:
            _time.sleep(seconds * self.scale)


# --------------------------------------------------------------------------- cron
def _cron_field(spec: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in spec.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(x) for x in span.split("-", 1))
        else:
            first = last = int(span)
            last = high if step else last
        values.update(range(first, last + 1, int(step) if step else 1))
    if not values or min(values) < low or max(values) > high:
        raise ValueError(f"cron field {spec!r} out of range {low}-{high}")
    return values


def next_cron_time(expr: str, after: datetime) -> datetime:
    """The first minute strictly after `after` matching a 5-field cron expression (numbers, *, -, /, ,)."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression must have 5 fields: {expr!r}")
    minutes, hours, doms, months, dows = (_cron_field(f, low, high) for f, (low, high) in
                                          zip(fields, [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]))
    dows = {d % 7 for d in dows}  # 0 and 7: Sunday
    times = sorted(time(h, m) for h in hours for m in minutes)
    start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for offset in range(8 * 366 + 1):  # 29 February can be eight years away (2096 -> 2104)
        day = start.date() + timedelta(days=offset)
        dom_ok, dow_ok = day.day in doms, (day.weekday() + 1) % 7 in dows
        day_ok = (dom_ok and dow_ok) if "*" in (fields[2][0], fields[4][0]) else (dom_ok or dow_ok)
        if day.month in months and day_ok:
            for moment in (datetime.combine(day, t) for t in times):
                if moment >= start:
                    return moment
    raise ValueError(f"cron expression never fires: {expr!r}")


# --------------------------------------------------------------------------- config and agents
def read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def load_training_config(root: Path) -> dict:
    """The `training` section of <root>/training/config.json (the documented "current" shape)."""
    raw = read_json(root / "training" / "config.json")
    if raw is None or not isinstance(raw.get("training"), dict):
        raise RuntimeError(f"cannot read the training section of {root / 'training' / 'config.json'}")
    return raw["training"]


def _agent_modules(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted((root / "agents").glob("agent_*.py")):
        if match := MODULE_RE.match(path.name):
            found[match.group(1)] = match.group(2)
    return found


def agent_titles(root: Path) -> dict[str, str]:
    """Agent id -> human title: the first docstring line of agents/agent_<id>_<slug>.py (not executed)."""
    titles = {}
    for agent_id, slug in _agent_modules(root).items():
        try:
            doc = ast.get_docstring(ast.parse((root / "agents" / f"{agent_id}_{slug}.py").read_text("utf-8")))
        except (OSError, SyntaxError, ValueError):
            doc = None
        titles[agent_id] = doc.strip().splitlines()[0].strip() if doc and doc.strip() else agent_id
    return titles


def enabled_agents(root: Path, config: dict) -> list[tuple[str, str]]:
    """(agent id, display name) of the enabled agents of `agent_training`, in file order."""
    titles = agent_titles(root)
    return [(agent_id, titles.get(agent_id, agent_id))
            for agent_id, settings in (config.get("agent_training") or {}).items()
            if AGENT_ID_RE.match(agent_id) and (settings or {}).get("enabled", True)]


# --------------------------------------------------------------------------- simulated numbers
def baseline_score(agent_id: str) -> float:
    """The score an agent starts from when it has no history (6.0-7.8)."""
    return round(random.Random(f"baseline:{agent_id}").uniform(6.0, 7.8), 1)


class Stream:
    """Where a day's simulated numbers come from: the calendar (a date's ordinal) or a seed.

    Unseeded, day `d` draws from `d` itself, so `make run` shows the same history on the same date.
    Seeded, day `d` draws from (seed, days before `end`), so a backfill has the same content on any
    date, shifted only in time; another seed gives other numbers and scripted days.
    """

    def __init__(self, seed: int | None = None, end: date | None = None):
        self.seed, self.end = seed, end

    def number(self, day: date) -> int:
        """The day's number: its ordinal, or a seeded count that only depends on the distance to `end`."""
        if self.seed is None:
            return day.toordinal()
        return 14 * 10_000 + self.seed * 5 + ((day - (self.end or day)).days)

    def key(self, day: date) -> str:
        """The text every random generator of `day` is seeded with."""
        return day.isoformat() if self.seed is None else f"seed{self.seed}:{self.number(day)}"


def day_plan(number: int, agent_ids: list[str]) -> dict:
    """The scripted events of day `number`: a failing agent, an agent without data, a dip or steady day."""
    n, cycle, slot = len(agent_ids), number // 14, number % 14
    pick = (lambda k: agent_ids[(cycle + k) % n]) if n else (lambda k: None)
    return {"fail": pick(0) if slot == FAIL_DAY and n > 1 else None,
            "no_data": pick(2) if slot == NO_DATA_DAY and n > 1 else None,
            "mode": {DIP_DAY: "dip", STEADY_DAY: "steady"}.get(slot, "normal"),
            "dip_agent": pick(1), "one_decimal": agent_ids[number % n] if n else None}


def simulate_agent(day_key: str, agent_id: str, previous: float, plan: dict) -> tuple[int, float]:
    """(processing ms, new score 0..10) of one agent's training on the day of `day_key` (Stream.key)."""
    rng = random.Random(f"{day_key}:{agent_id}")
    time_ms = rng.randrange(51, 300) * 10  # 0.51-2.99 s, two decimals at most
    if agent_id == plan["one_decimal"]:
        time_ms = round(time_ms, -2)
    elif time_ms % 100 == 0:
        time_ms += 10
    if plan["mode"] == "steady":
        delta = 0.0
    elif plan["mode"] == "dip":
        delta = -0.4 if agent_id == plan["dip_agent"] else -rng.choice((0.1, 0.2, 0.3))
    else:
        delta = rng.gauss(0.08 if previous < 9.3 else -0.05, 0.12)
    return time_ms, round(min(9.9, max(0.0, previous + delta)), 1)


def _percent(new: float, old: float) -> float:
    return round((new - old) / old * 100, 1) + 0.0 if old else 0.0  # + 0.0 turns -0.0 into 0.0


# --------------------------------------------------------------------------- logging
class _ClockFormatter(logging.Formatter):
    """Formats asctime from the pipeline's clock, so simulated runs carry simulated timestamps."""

    def __init__(self, clock):
        super().__init__(LOG_FORMAT)
        self.clock = clock

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging API)
        moment = self.clock.now()
        return f"{moment:%Y-%m-%d %H:%M:%S},{moment.microsecond // 1000:03d}"


def make_logger(root: Path, clock) -> logging.Logger:
    """The `HolisticTrainer` logger appending to <root>/logs/holistic_training.log (flushed per line)."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.FileHandler(root / "logs" / LOG_FILE, mode="a", encoding="utf-8")
    handler.setFormatter(_ClockFormatter(clock))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


# --------------------------------------------------------------------------- the pipeline
class Interrupted(BaseException):
    """Raised by the SIGTERM/SIGINT handler (BaseException: logging must not swallow it); args[0] = the signal."""


def _on_signal(signum, _frame):
    signal.signal(signum, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum))


class HolisticTraining:
    """One holistic training run over the enabled agents, driven by a real or a simulated clock."""

    def __init__(self, root: Path, clock, logger: logging.Logger, *, verbose: bool = False,
                 quiet: bool = False, fail: bool = False, stream: Stream | None = None):
        self.root, self.clock, self.log = root, clock, logger
        self.verbose, self.quiet, self.fail = verbose, quiet, fail
        self.stream = stream or Stream()
        self.config: dict = {}
        self.agents: list[tuple[str, str]] = []
        self.outcomes: dict[str, dict] = {}
        self.summary: dict = {}

    def say(self, text: str, detail: bool = False) -> None:
        """Print progress to stdout (detail lines only with --verbose)."""
        if not self.quiet and (self.verbose or not detail):
            print(text, flush=True)

    def run(self) -> int:
        """Run the six phases and write the report, metrics and result; return the exit code."""
        self.started = self.clock.monotonic()
        self.day = self.clock.now().date()
        self.key, self.number = self.stream.key(self.day), self.stream.number(self.day)
        phases = [("harvesting", "Data Harvesting", self.harvest), ("validation", "Data Validation", self.validate),
                  ("training", "Agent Training", self.train_agents), ("production", "Production Run", self.produce),
                  ("monitoring", "Monitoring & Logging", self.monitor),
                  ("cleanup", "Cleanup & Archiving", self.cleanup)]
        try:
            self.log.info("HOLISTIC TRAINING PIPELINE STARTED")
            self.config = load_training_config(self.root)
            self.agents = enabled_agents(self.root, self.config)
            self.log.info(f"Agents enabled: {len(self.agents)} ({', '.join(a for a, _ in self.agents)})")
            self.say(f"Holistic training {self.day} - {len(self.agents)} agents")
            if not self.agents:
                raise RuntimeError("no enabled agents in training/config.json")
            results = {}
            for number, (key, name, step) in enumerate(phases, 1):
                self.log.info(f"Phase {number}: {name} - START")
                self.say(f"[{number}/6] {name} ...")
                began = self.clock.monotonic()
                info, detail = step()
                took = self.clock.monotonic() - began
                results[key] = {"status": "success", "time_seconds": round(took, 2), **info}
                self.log.info(f"Phase {number}: {name} - COMPLETE ({took:.2f}s, {detail})")
                self.say(f"      done in {took:.2f}s ({detail})")
            result = self.finish(results)
            self.log.info("Holistic training completed successfully")
            self.log.info(f"Total time: {result['total_time_minutes']:.2f} minutes")
            self.say(f"OK: {result['agents_trained']}/{len(self.agents)} agents trained, system quality "
                     f"{self.summary['score']:.1f}/10 ({self.summary['change']:+.1f}%)")
            return 0
        except Interrupted as exc:
            error = f"interrupted by signal {exc.args[0].name}"
            self.log.error(f"Holistic training failed: {error}")
            self.write_failure(error)
            self.say(f"FAILED: {error}")
            return 128 + exc.args[0]
        except Exception as exc:  # any unexpected error fails the run with a traceback in the log
            self.log.exception(f"Holistic training failed: {exc}")
            self.write_failure(str(exc))
            self.say(f"FAILED: {exc}")
            return 1

    # ----- phases: each returns (extra fields for the result, detail for the COMPLETE line)
    def harvest(self):
        """Phase 1: 'harvest' records from a few sources."""
        rng, total = random.Random(f"{self.key}:harvest"), 0
        for source in SOURCES:
            self.clock.sleep(rng.uniform(1.4, 2.0))
            count = rng.randint(60, 100)
            total += count
            self.log.info(f"Harvested {count} records from {source}")
            self.say(f"      {source}: {count} records", detail=True)
        self.records = total
        return {"records": total, "sources": len(SOURCES)}, f"{total} records"

    def validate(self):
        """Phase 2: check the harvested records against the quality threshold (ORCHESTRATOR_FAIL breaks it)."""
        rng = random.Random(f"{self.key}:validate")
        threshold = (self.config.get("harvester") or {}).get("data_quality_threshold", 6.5)
        batch = [json.dumps({"record": i, "quality": round(rng.uniform(5.5, 10), 1)}) for i in range(self.records)]
        if self.fail:
            batch[137] = batch[137][:22]  # a truncated record: json.loads raises below
        self.clock.sleep(rng.uniform(2.0, 3.0))
        valid = sum(1 for i, text in enumerate(batch) if _parse_record(i, text)["quality"] >= threshold)
        self.log.info(f"Validated {valid}/{self.records} records (quality threshold {threshold})")
        return {"valid_records": valid, "rejected_records": self.records - valid}, f"{valid} valid records"

    def train_agents(self):
        """Phase 3: train every enabled agent in config order; failures and missing data do not stop the run."""
        plan = day_plan(self.number, [a for a, _ in self.agents])
        self.metrics = read_json(self.root / "logs" / "training_metrics.json") or {}
        timeout = self.config.get("timeout_per_agent_seconds", 300)
        for agent_id, name in self.agents:
            if agent_id == plan["no_data"]:
                self.log.warning(f"No training data for {agent_id}")
                self.say(f"      {agent_id}: no training data", detail=True)
                self.outcomes[agent_id] = {"status": "skipped", "reason": "no training data"}
                continue
            self.log.info(f"Training {agent_id} ({name}) - START")
            points = self.metrics.get(f"{agent_id}_quality") or []
            previous = _last_score(points, baseline_score(agent_id))
            time_ms, score = simulate_agent(self.key, agent_id, previous, plan)
            self.clock.sleep(time_ms / 1000)
            stamp = self.clock.now().isoformat(timespec="microseconds")
            if agent_id == plan["fail"]:
                self.log.error(f"{agent_id} training failed: timeout after {timeout}s")
                self.say(f"      {agent_id}: FAILED (timeout after {timeout}s)", detail=True)
                self.outcomes[agent_id] = {"status": "failed", "error": f"timeout after {timeout}s", "timestamp": stamp}
                continue
            change, improvement = round(score - previous, 1) + 0.0, _percent(score, previous)
            self.log.info(f"{agent_id} training completed: {time_ms}ms, improvement {improvement:+.1f}%")
            self.say(f"      {name} ({agent_id}): {score:.1f}/10 ({change:+.1f}), {time_ms}ms", detail=True)
            self.outcomes[agent_id] = {"status": "success", "score": score, "change": change,
                                       "improvement": improvement, "time_ms": time_ms, "timestamp": stamp}
        count = {s: sum(o["status"] == s for o in self.outcomes.values()) for s in ("success", "failed")}
        results = {agent_id: {k: v for k, v in outcome.items() if k not in ("timestamp", "change")}
                   for agent_id, outcome in self.outcomes.items()}
        return ({"agents_trained": count["success"], "agents_failed": count["failed"], "results": results},
                f"{count['success']} agents")

    def produce(self):
        """Phase 4: skipped unless `production_run.enabled`; then only simulated (see `produce` command)."""
        if not (self.config.get("production_run") or {}).get("enabled"):
            return {"status": "skipped"}, "skipped"
        self.clock.sleep(1.5)
        return {"status": "simulated"}, "simulated"

    def monitor(self):
        """Phase 5: system quality, its change and the trajectory, from this run and the metrics history."""
        self.clock.sleep(random.Random(f"{self.key}:monitor").uniform(2.0, 3.0))
        scored = [o for o in self.outcomes.values() if o["status"] == "success"]
        if not scored:
            raise RuntimeError("no agent produced a score")
        score = round(sum(o["score"] for o in scored) / len(scored), 1)
        baseline = round(sum(baseline_score(a) for a, o in self.outcomes.items() if "score" in o) / len(scored), 1)
        previous = _last_score(self.metrics.get("system_overall_quality") or [], baseline)
        trend = "UP" if score > previous else "DOWN" if score < previous else "STABLE"
        self.summary = {"score": score, "change": _percent(score, previous), "trajectory": trend}
        self.log.info(f"System quality {score:.1f}/10 ({self.summary['change']:+.1f}%), trajectory {trend}")
        return {"system_quality": score, "trajectory": trend}, f"system quality {score:.1f}/10"

    def cleanup(self):
        """Phase 6: delete daily reports older than `log_retention_days` (relative to the run's day)."""
        keep = int((self.config.get("monitoring") or {}).get("log_retention_days", 30))
        deleted = 0
        for path in sorted((self.root / "logs").glob("daily_report_*.txt")):
            match = REPORT_RE.match(path.name)
            if match and (self.day - date.fromisoformat(match.group(1))).days > keep:
                path.unlink(missing_ok=True)
                deleted += 1
        self.clock.sleep(0.4)
        return {"reports_deleted": deleted}, f"{deleted} old reports removed"

    # ----- outputs
    def finish(self, phases: dict) -> dict:
        """Build the run result, then write the daily report, the metrics and the result file, in that order."""
        total = self.clock.monotonic() - self.started
        end = self.clock.now()
        schedule = self.config.get("schedule") or DEFAULT_SCHEDULE
        result = {"status": "success", "total_time_seconds": round(total, 1),
                  "total_time_minutes": round(total / 60, 2), "phases": phases,
                  "agents_trained": phases["training"]["agents_trained"],
                  "system_quality_delta": self.summary["change"],
                  "timestamp": end.isoformat(timespec="microseconds"),
                  "next_scheduled": next_cron_time(schedule, end).isoformat(timespec="seconds")}
        logs = self.root / "logs"
        (logs / f"daily_report_{self.day}.txt").write_text(
            render_report(self.day, total / 60, self.summary, self.agents, self.outcomes), encoding="utf-8")
        self.update_metrics(result)
        write_json(self.root / RESULT_FILE, result)
        self.log.info(f"Results saved to {RESULT_FILE}")
        return result

    def update_metrics(self, result: dict) -> None:
        """Append this run's points to logs/training_metrics.json, rewritten in place (no atomic rename)."""
        path = self.root / "logs" / "training_metrics.json"
        metrics = read_json(path) or {}
        for key in [f"{a}_quality" for a, _ in self.agents] + ["system_overall_quality", "training_speed_ms",
                                                                "success_rate", "training_history"]:
            metrics.setdefault(key, [])
        for agent_id, outcome in self.outcomes.items():
            if outcome["status"] == "success":
                metrics[f"{agent_id}_quality"].append(
                    {"timestamp": outcome["timestamp"], "score": outcome["score"],
                     "improvement": outcome["improvement"], "time_ms": outcome["time_ms"]})
                metrics["training_speed_ms"].append(
                    {"timestamp": outcome["timestamp"], "agent": agent_id, "time_ms": outcome["time_ms"]})
            if outcome["status"] in ("success", "failed"):
                metrics["success_rate"].append({"timestamp": outcome["timestamp"], "agent": agent_id,
                                                "success": outcome["status"] == "success"})
        metrics["system_overall_quality"].append(
            {"timestamp": result["timestamp"], "score": self.summary["score"], "improvement": self.summary["change"],
             "time_ms": int(result["total_time_seconds"] * 1000)})
        metrics["training_history"].append(
            {"timestamp": result["timestamp"], "event_type": "holistic_training_complete", "data": result})
        write_json(path, metrics)

    def write_failure(self, error: str) -> None:
        """Write the failure-shaped holistic_training_result.json (no phases)."""
        write_json(self.root / RESULT_FILE, {
            "status": "failed", "error": error, "timestamp": self.clock.now().isoformat(timespec="microseconds"),
            "total_time_seconds": round(self.clock.monotonic() - self.started, 1)})


def _parse_record(index: int, text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"corrupt record {index} in harvested batch: {exc}") from exc


def _last_score(points: list, default: float) -> float:
    for point in reversed(points):
        if isinstance(point, dict) and isinstance(point.get("score"), (int, float)):
            return float(point["score"])
    return default


def write_json(path: Path, value: dict) -> None:
    """Write `value` as indented UTF-8 JSON, in place (open 'w', like the real orchestrator)."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


# --------------------------------------------------------------------------- the daily report
def _box(text: str) -> str:
    return "║" + text.ljust(BOX_INNER) + "║"


def render_report(day: date, minutes: float, summary: dict, agents: list, outcomes: dict) -> str:
    """The daily report text: 79-column box, one section per agent, up to 3 recommendations."""
    top, rule, bottom = (left + "═" * BOX_INNER + right for left, right in ("╔╗", "╠╣", "╚╝"))
    lines = [top, _box(f"  DAILY TRAINING REPORT [{day.isoformat()}]"),
             _box(f"  Training Duration: {minutes:.2f} minutes"),
             _box(f"  Overall System Quality: {summary['score']:.1f}/10 ({summary['change']:+.1f}%)")]
    for agent_id, name in agents:
        outcome = outcomes.get(agent_id, {"status": "skipped"})
        lines += [rule, _box(f" {name} ({agent_id})")]
        if outcome["status"] != "success":
            lines.append(_box("   Status: No data available"))
            continue
        status = "✅ Improved" if outcome["change"] >= 0 else "⚠️  Declined"
        lines += [_box(f"   Quality: {outcome['score']:.1f}/10 ({outcome['change']:+.1f} vs yesterday)"),
                  _box(f"   Processing: {outcome['time_ms'] / 1000}s"), _box(f"   Status: {status}")]
    scored = [(o["score"], a) for a, o in outcomes.items() if o["status"] == "success"]
    advice = [f"Focus on {min(scored)[1]} (lowest score)"]
    failed = [a for a, o in outcomes.items() if o["status"] == "failed"]
    missing = [a for a, o in outcomes.items() if o["status"] == "skipped"]
    if failed:
        advice.append(f"Investigate {failed[0]} training failure")
    elif missing:
        advice.append(f"Collect training data for {missing[0]}")
    advice.append(f"Current trajectory: {TRAJECTORY[summary['trajectory']]}")
    lines += [rule, _box(" RECOMMENDATIONS FOR NEXT RUN:"), *(_box(f" - {a}") for a in advice), bottom]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- production run
def cmd_produce(args) -> int:
    """`produce`: a quick simulated production run of <genre> <mood>, written to orchestration_report.json."""
    genre, mood, now = args.genre, args.mood, datetime.now()
    agents = enabled_agents(args.root, load_training_config(args.root))
    rng = random.Random(f"{now.date()}:{genre}:{mood}")
    ok = {agent_id: rng.random() > 0.15 for agent_id, _ in agents}
    qualities = {agent_id: round(rng.uniform(6.5, 9.6), 1) for agent_id, _ in agents}
    succeeded = sum(ok.values())
    average = round(sum(qualities[a] for a in ok if ok[a]) / succeeded, 1) if succeeded else 0.0
    report = {
        "project_metadata": {"timestamp": now.isoformat(timespec="microseconds"), "music_genre": genre,
                             "mood": mood, "system_version": "2.4.0-example",
                             "status": "completed" if succeeded == len(agents) else "partial"},
        "workflow_status": {a: f"{'✅' if ok[a] else '❌'} {name}" for a, name in agents},
        "integrated_results": {a: {"agent": name, "quality": qualities[a] if ok[a] else None,
                                   "output": f"{name.lower()} output for a {mood} {genre} track" if ok[a] else None}
                               for a, name in agents},
        "execution_plan": {"steps": [a for a, _ in agents], "parallel_groups": [[a for a, _ in agents[:2]]],
                           "estimated_duration_minutes": round(1.5 * len(agents), 1)},
        "success_metrics": {"agents_succeeded": succeeded, "agents_failed": len(agents) - succeeded,
                            "success_rate": round(100 * succeeded / len(agents), 1) if agents else 0.0,
                            "average_quality": average},
        "next_steps": ([f"Re-run {a}" for a in ok if not ok[a]] or ["Master the final mix"])
                      + ["Review the integrated results", "Schedule distribution"],
        "system_summary": {"total_agents": len(agents), "live_apis": rng.randint(1, max(1, succeeded)),
                           "production_ready": succeeded == len(agents),
                           "deployment_ready": succeeded == len(agents) and average >= 7.0},
    }
    write_json(args.root / PRODUCTION_FILE, report)
    print(f"production run {genre}/{mood}: {succeeded}/{len(agents)} agents ok -> {PRODUCTION_FILE}")
    return 0


# --------------------------------------------------------------------------- init
AGENT_TEMPLATE = '"""{title}\n\n{description}\n"""\n\nAGENT_ID = "{agent_id}"\n'


def default_config(agents: list[tuple[str, str, str]]) -> dict:
    """A config.json in the documented "current" shape enabling `agents` ((id, title, priority) triples)."""
    return {"training": {
        "enabled": True, "schedule": DEFAULT_SCHEDULE,
        "timeout_per_agent_seconds": 300, "timeout_total_seconds": 1800,
        "harvester": {"data_quality_threshold": 6.5, "min_records_per_type": 20},
        "monitoring": {"track_metrics": True, "generate_reports": True, "save_logs": True,
                       "log_retention_days": 30},
        "production_run": {"enabled": False},
        "agent_training": {agent_id: {"enabled": True, "priority": priority, "description": f"Train the {title}"}
                           for agent_id, title, priority in agents}}}


def cmd_init(args) -> int:
    """`init`: create a new root with training/config.json and one agent module per `id:Title` of --agents."""
    root, agents = args.root, []
    for item in filter(None, (part.strip() for part in args.agents.split(","))):
        agent_id, _, title = (x.strip() for x in item.partition(":"))
        if not AGENT_ID_RE.match(agent_id) or not title:
            raise SystemExit(f"bad agent {item!r}: expected agent_<id>:<Title>, e.g. agent_10:Signal Scout")
        agents.append((agent_id, title, "high"))
    if not agents:
        raise SystemExit("--agents lists no agent")
    config = root / "training" / "config.json"
    if config.exists():
        raise SystemExit(f"{config} already exists")
    config.parent.mkdir(parents=True, exist_ok=True)
    write_json(config, default_config(agents))
    (root / "agents").mkdir(exist_ok=True)
    for agent_id, title, _ in agents:  # agents/agent_<id>_<slug>.py, docstring's first line = the title
        slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "agent"
        (root / "agents" / f"{agent_id}_{slug}.py").write_text(AGENT_TEMPLATE.format(
            title=title, agent_id=agent_id, description=f"Example agent {agent_id} of the example orchestrator."),
            encoding="utf-8")
    print(f"initialised {root} with {len(agents)} agents")
    return 0


# --------------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    """`train`: one real-time run; exit 0 on success, 1 on failure, 143 on SIGTERM."""
    raw = os.environ.get("ORCHESTRATOR_TIME_SCALE", "").strip()
    try:
        clock = Clock(scale=max(0.0, float(raw)) if raw else 1.0)
    except ValueError:
        raise SystemExit(f"ORCHESTRATOR_TIME_SCALE must be a number, not {raw!r}") from None
    pipeline = HolisticTraining(args.root, clock, make_logger(args.root, clock), verbose=args.verbose,
                                fail=os.environ.get("ORCHESTRATOR_FAIL", "") == "1",
                                stream=Stream(args.seed, clock.now().date()))
    return pipeline.run()


def last_run_day(schedule: str, now: datetime) -> date:
    """The last day whose scheduled run is over by `now` (an hour after it fired): today, yesterday, or
    the day before when yesterday's run fired less than an hour ago (a run late in the evening)."""
    def fires_on(day: date) -> datetime | None:
        fires = next_cron_time(schedule, datetime.combine(day, time()) - timedelta(minutes=1))
        return fires if fires.date() == day else None

    today, yesterday, hour = now.date(), now.date() - timedelta(days=1), timedelta(hours=1)
    fired_today, fired_yesterday = fires_on(today), fires_on(yesterday)
    if fired_today is not None and now >= fired_today + hour:
        return today
    if fired_yesterday is not None and now < fired_yesterday + hour:
        return yesterday - timedelta(days=1)
    return yesterday


def cmd_backfill(args) -> int:
    """`backfill`: replay the same pipeline once per day, on a simulated clock, in chronological order."""
    schedule = load_training_config(args.root).get("schedule") or DEFAULT_SCHEDULE
    end = date.fromisoformat(args.end) if args.end else last_run_day(schedule, datetime.now())
    days = [end - timedelta(days=args.days - 1 - i) for i in range(args.days)]
    stream = Stream(args.seed, end)
    plain = [i for i, day in enumerate(days[:-1]) if stream.number(day) % 14 in RUN_FAIL_DAYS]
    failing = min(plain, key=lambda i: (abs(i - len(days) // 2), i)) if plain else None  # one failed run
    clock = Clock(at=datetime.combine(days[0], time()))
    logger = make_logger(args.root, clock)
    for index, day in enumerate(days):
        fires = next_cron_time(schedule, datetime.combine(day, time()) - timedelta(minutes=1))
        startup = random.Random(f"{stream.key(day)}:startup").uniform(0.8, 2.2)  # cron fires, python starts
        clock.at = datetime.combine(day, fires.time()) + timedelta(seconds=startup)
        code = HolisticTraining(args.root, clock, logger, verbose=args.verbose, quiet=not args.verbose,
                                fail=index == failing, stream=stream).run()
        print(f"{day}: {'success' if code == 0 else 'failed'}", flush=True)
        if code not in (0, 1):
            return code
    return 0


def _env_seed() -> int | None:
    raw = os.environ.get("ORCHESTRATOR_SEED", "").strip()
    try:
        return int(raw) if raw else None
    except ValueError:
        raise SystemExit(f"ORCHESTRATOR_SEED must be a whole number, not {raw!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; return the exit code."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=lambda p: Path(p).resolve(), default=HERE,
                        help="orchestrator root folder (default: the folder of this file)")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", parents=[common], help="one holistic training run, in real time")
    train.add_argument("--verbose", action="store_true", help="print per-source and per-agent detail")
    train.add_argument("--seed", type=int, default=_env_seed(),
                       help="draw the run's numbers from this seed, not today's date (default: $ORCHESTRATOR_SEED)")
    backfill = commands.add_parser("backfill", parents=[common], help="simulate past daily runs")
    backfill.add_argument("--days", type=int, default=14, help="number of days (default 14)")
    backfill.add_argument("--end", help="last day, YYYY-MM-DD (default: today once today's scheduled run "
                                           "is an hour past, else yesterday)")
    backfill.add_argument("--verbose", action="store_true", help="print every run's progress")
    backfill.add_argument("--seed", type=int, default=_env_seed(),
                          help="draw each day's numbers from this seed and the day's distance to --end, not "
                               "from the date: the same history on any date (default: $ORCHESTRATOR_SEED)")
    init = commands.add_parser("init", parents=[common], help="create a new orchestrator root")
    init.add_argument("--agents", required=True, help='e.g. "agent_10:Signal Scout,agent_11b:Cover Artist"')
    produce = commands.add_parser("produce", parents=[common], help="a quick production run")
    produce.add_argument("genre")
    produce.add_argument("mood")
    args = parser.parse_args(argv)
    if args.command == "backfill" and args.days < 1:
        parser.error("--days must be at least 1")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    handlers = {"train": cmd_train, "backfill": cmd_backfill, "init": cmd_init, "produce": cmd_produce}
    try:
        return handlers[args.command](args)
    except Interrupted as exc:
        print(f"interrupted by signal {exc.args[0].name}", file=sys.stderr)
        return 128 + exc.args[0]


if __name__ == "__main__":
    sys.exit(main())
