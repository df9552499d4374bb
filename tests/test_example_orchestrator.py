"""The example orchestrator, run as a real program: file formats, quirks, determinism, runs, signals, failures."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

from conftest import poll

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "orchestrator"
PROGRAM = EXAMPLE / "orchestrator.py"
AGENTS = "agent_10:Signal Scout,agent_11b:Cover Artist,agent_12:Universal Harvester"
AGENT_IDS = ["agent_10", "agent_11b", "agent_12"]
END = date(2025, 3, 20)
PHASES = ["Data Harvesting", "Data Validation", "Agent Training", "Production Run", "Monitoring & Logging",
          "Cleanup & Archiving"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - \S+ - (INFO|WARNING|ERROR) - ")
NUM = r"[+-]?\d+\.\d"
REPORT_LINES = [  # every content line of a daily report matches one of these (between the borders)
    re.compile(r"^  DAILY TRAINING REPORT \[\d{4}-\d\d-\d\d\] *$"),
    re.compile(r"^  Training Duration: \d+\.\d\d minutes *$"),
    re.compile(rf"^  Overall System Quality: \d+\.\d/10 \({NUM}%\) *$"),
    re.compile(r"^ [A-Z][\w ]+ \(agent_[A-Za-z0-9]+\) *$"),
    re.compile(rf"^   Quality: \d+\.\d/10 \({NUM} vs yesterday\) *$"),
    re.compile(r"^   Processing: \d\.\d\d?s *$"),
    re.compile(r"^   Status: (✅ Improved|⚠️  Declined|No data available) *$"),
    re.compile(r"^ RECOMMENDATIONS FOR NEXT RUN: *$"),
    re.compile(r"^ - (Focus on agent_\w+ \(lowest score\)|Investigate agent_\w+ training failure"
               r"|Collect training data for agent_\w+|Current trajectory: (UP ↑|DOWN ↓|STABLE →)) *$"),
]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the example orchestrator as a subprocess and return the finished process."""
    return subprocess.run([sys.executable, str(PROGRAM), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def make_root(tmp_path: Path, name: str = "orch", days: int = 0, end: date = END) -> Path:
    """A root made by `init` with AGENTS, optionally with `days` of backfilled history."""
    root = tmp_path / name
    assert run("init", "--root", str(root), "--agents", AGENTS).returncode == 0
    if days:
        proc = run("backfill", "--root", str(root), "--days", str(days), "--end", end.isoformat())
        assert proc.returncode == 0, proc.stderr
    return root


def example_copy(tmp_path: Path) -> Path:
    """A copy of the bundled example's configuration and agents, without any history."""
    root = tmp_path / "example"
    shutil.copytree(EXAMPLE / "training", root / "training")
    shutil.copytree(EXAMPLE / "agents", root / "agents")
    return root


def reports(root: Path) -> dict[str, str]:
    """Daily reports by date string."""
    return {p.name[13:23]: p.read_text(encoding="utf-8") for p in sorted((root / "logs").glob("daily_report_*.txt"))}


def log_text(root: Path) -> str:
    return (root / "logs" / "holistic_training.log").read_text(encoding="utf-8")


def test_init_creates_a_current_config_and_agent_modules(tmp_path):
    root = make_root(tmp_path)
    training = json.loads((root / "training" / "config.json").read_text(encoding="utf-8"))["training"]
    assert training["schedule"] == "0 3 * * *" and training["monitoring"]["log_retention_days"] == 30
    assert list(training["agent_training"]) == AGENT_IDS
    assert all(a["enabled"] for a in training["agent_training"].values())
    module = root / "agents" / "agent_11b_cover_artist.py"
    assert module.read_text(encoding="utf-8").startswith('"""Cover Artist\n')
    assert sorted(p.name for p in (root / "agents").iterdir()) == [
        "agent_10_signal_scout.py", "agent_11b_cover_artist.py", "agent_12_universal_harvester.py"]


def test_bundled_example_has_the_six_agents_in_config_order():
    training = json.loads((EXAMPLE / "training" / "config.json").read_text(encoding="utf-8"))["training"]
    assert list(training["agent_training"]) == ["agent_1", "agent_2", "agent_3", "agent_5a", "agent_7", "agent_8"]
    titles = {p.name: p.read_text(encoding="utf-8").splitlines()[0] for p in (EXAMPLE / "agents").glob("*.py")}
    assert titles["agent_5a_veo_generator.py"] == '"""Veo Generator'
    assert titles["agent_1_trend_detective.py"] == '"""Trend Detective'
    assert len(titles) == 6


def test_backfill_reports_follow_the_box_layout(tmp_path):
    root = make_root(tmp_path, days=14)
    found = reports(root)
    assert len(found) == 13  # one of the 14 days is a failed run
    assert max(found) == END.isoformat()
    for day, text in found.items():
        lines = text.rstrip("\n").split("\n")
        assert lines[0] == "╔" + "═" * 77 + "╗" and lines[-1] == "╚" + "═" * 77 + "╝"
        assert lines[1] == "║" + f"  DAILY TRAINING REPORT [{day}]".ljust(77) + "║"
        assert all(len(line) == 79 for line in lines), day
        for line in lines[1:-1]:
            if line[0] == "╠":
                assert line == "╠" + "═" * 77 + "╣"
                continue
            assert line[0] == "║" and line[-1] == "║"
            assert any(rx.match(line[1:-1]) for rx in REPORT_LINES), line
        sections = re.findall(r"^║ (.+?) \((agent_\w+)\) *║$", text, re.M)
        assert [agent for _, agent in sections] == AGENT_IDS
        assert [name for name, _ in sections] == ["Signal Scout", "Cover Artist", "Universal Harvester"]
        advice = re.findall(r"^║ - ", text, re.M)
        assert 1 <= len(advice) <= 3 and "Current trajectory: " in text.split("RECOMMENDATIONS")[1]


def test_backfill_history_shows_every_documented_quirk(tmp_path):
    root = make_root(tmp_path, days=14)
    text = "".join(reports(root).values())
    log = log_text(root)
    assert "║   Status: ⚠️  Declined" in text and "║   Status: ✅ Improved" in text
    assert "(+0.0 vs yesterday)" in text and "(-0.4 vs yesterday)" in text
    assert re.search(r"Processing: \d\.\ds ", text) and re.search(r"Processing: \d\.\d\ds ", text)
    assert "║   Status: No data available" in text
    for trajectory in ("UP ↑", "DOWN ↓", "STABLE →"):
        assert f"Current trajectory: {trajectory}" in text
    assert re.search(r" - ERROR - agent_\w+ training failed: timeout after 300s$", log, re.M)
    assert re.search(r" - WARNING - No training data for agent_\w+$", log, re.M)
    assert re.search(r" - INFO - agent_\w+ training completed: \d+ms, improvement [+-]\d+\.\d%$", log, re.M)
    rates = json.loads((root / "logs" / "training_metrics.json").read_text(encoding="utf-8"))["success_rate"]
    assert any(p["success"] is False for p in rates) and any(p["success"] is True for p in rates)


def test_backfill_metrics_and_result_have_the_documented_keys(tmp_path):
    root = make_root(tmp_path, days=14)
    metrics = json.loads((root / "logs" / "training_metrics.json").read_text(encoding="utf-8"))
    assert {f"{a}_quality" for a in AGENT_IDS} | {"system_overall_quality", "training_speed_ms", "success_rate",
                                                   "training_history"} == set(metrics)
    for agent in AGENT_IDS + ["system_overall"]:
        for point in metrics[f"{agent}_quality"]:
            assert set(point) == {"timestamp", "score", "improvement", "time_ms"}
            assert 0 <= point["score"] <= 10 and isinstance(point["time_ms"], int)
            datetime.fromisoformat(point["timestamp"])
    assert len(metrics["system_overall_quality"]) == 13
    assert all(set(p) == {"timestamp", "agent", "time_ms"} for p in metrics["training_speed_ms"])
    assert all(set(p) == {"timestamp", "agent", "success"} for p in metrics["success_rate"])
    history = metrics["training_history"]
    assert len(history) == 13 and {e["event_type"] for e in history} == {"holistic_training_complete"}
    assert all(e["data"]["status"] == "success" for e in history)
    times = [e["timestamp"] for e in history]
    assert times == sorted(times)

    result = json.loads((root / "holistic_training_result.json").read_text(encoding="utf-8"))
    assert result == history[-1]["data"]
    assert set(result) == {"status", "total_time_seconds", "total_time_minutes", "phases", "agents_trained",
                           "system_quality_delta", "timestamp", "next_scheduled"}
    assert list(result["phases"]) == ["harvesting", "validation", "training", "production", "monitoring", "cleanup"]
    assert result["phases"]["production"]["status"] == "skipped"
    assert all(p["status"] in ("success", "skipped") and "time_seconds" in p for p in result["phases"].values())
    assert set(result["phases"]["training"]["results"]) == set(AGENT_IDS)
    stamp = datetime.fromisoformat(result["timestamp"])
    assert stamp.tzinfo is None and stamp.date() == END and stamp.hour == 3
    assert result["next_scheduled"] == f"{END + timedelta(days=1)}T03:00:00"
    assert 5 < result["total_time_seconds"] < 60
    assert abs(result["total_time_minutes"] - result["total_time_seconds"] / 60) < 0.01


def test_backfill_log_has_one_failed_run_with_a_traceback(tmp_path):
    root = make_root(tmp_path, days=14)
    lines = log_text(root).split("\n")[:-1]
    assert lines and LOG_LINE.match(lines[0])
    assert all(LOG_LINE.match(line) or not re.match(r"\d{4}-", line) for line in lines)
    assert sum(1 for line in lines if line.endswith(" - INFO - HOLISTIC TRAINING PIPELINE STARTED")) == 14
    assert sum(1 for line in lines if line.endswith(" - INFO - Holistic training completed successfully")) == 13
    failed = [i for i, line in enumerate(lines) if " - ERROR - Holistic training failed: " in line]
    assert len(failed) == 1
    assert lines[failed[0] + 1] == "Traceback (most recent call last):"
    fail_day = lines[failed[0]][:10]
    assert fail_day != END.isoformat() and fail_day not in reports(root)
    started = [line for line in lines if "Phase " in line]
    for day in reports(root):  # every successful day logs the six phases in order
        assert [re.sub(r"^.* - INFO - Phase \d: ", "", line).split(" (")[0] for line in started
                if line.startswith(day)] == [f"{p} - {s}" for p in PHASES for s in ("START", "COMPLETE")]


def test_backfill_is_deterministic(tmp_path):
    first, second = make_root(tmp_path, "a", days=14), make_root(tmp_path, "b", days=14)
    assert reports(first) == reports(second)
    for name in ("logs/training_metrics.json", "holistic_training_result.json", "logs/holistic_training.log"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def _without_times(root: Path) -> dict:
    """The metrics file with every timestamp dropped: what a seeded history holds, wherever it ends."""
    metrics = json.loads((root / "logs" / "training_metrics.json").read_text(encoding="utf-8"))
    return {key: [{k: v for k, v in p.items() if k not in ("timestamp", "data")} for p in points]
            for key, points in metrics.items()}


def test_a_seeded_backfill_holds_the_same_history_whatever_day_it_ends(tmp_path):
    def seeded(name: str, end: date, seed: str) -> Path:
        root = make_root(tmp_path, name)
        assert run("backfill", "--root", str(root), "--days", "14", "--end", end.isoformat(),
                   "--seed", seed).returncode == 0
        return root

    first, later = seeded("a", date(2026, 12, 1), "4"), seeded("b", date(2028, 2, 29), "4")
    assert _without_times(first) == _without_times(later)
    assert [r.split("\n", 2)[2] for r in reports(first).values()] == [r.split("\n", 2)[2] for r in reports(later).values()]
    assert _without_times(seeded("c", date(2026, 12, 1), "5")) != _without_times(first)
    unseeded = make_root(tmp_path, "d")
    assert run("backfill", "--root", str(unseeded), "--days", "14", "--end", "2026-12-01",
               env={"ORCHESTRATOR_SEED": ""}).returncode == 0
    assert _without_times(unseeded) != _without_times(first)  # without a seed, the date decides


def test_backfill_applies_retention_and_the_schedule(tmp_path):
    root = make_root(tmp_path)
    path = root / "training" / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["training"]["schedule"] = "30 4 * * *"
    config["training"]["monitoring"]["log_retention_days"] = 5
    path.write_text(json.dumps(config), encoding="utf-8")
    assert run("backfill", "--root", str(root), "--days", "14", "--end", END.isoformat()).returncode == 0
    kept = reports(root)
    assert kept and min(kept) >= (END - timedelta(days=5)).isoformat()
    assert log_text(root).startswith(f"{END - timedelta(days=13)} 04:30:0")
    result = json.loads((root / "holistic_training_result.json").read_text(encoding="utf-8"))
    assert result["next_scheduled"] == f"{END + timedelta(days=1)}T04:30:00"
    history = json.loads((root / "logs" / "training_metrics.json").read_text(encoding="utf-8"))["training_history"]
    assert sum(e["data"]["phases"]["cleanup"]["reports_deleted"] for e in history) == 13 - len(kept) > 0


def test_train_runs_the_six_phases_and_writes_its_files(tmp_path):
    root = example_copy(tmp_path)
    proc = run("train", "--root", str(root), "--verbose", env={"ORCHESTRATOR_TIME_SCALE": "0.05"})
    assert proc.returncode == 0, proc.stderr
    assert "Agent Training" in proc.stdout
    messages = [line.split(" - ", 3)[3] for line in log_text(root).splitlines()]
    phases = [m.split(" (")[0] for m in messages if m.startswith("Phase ")]
    assert phases == [f"Phase {n}: {p} - {s}" for n, p in enumerate(PHASES, 1) for s in ("START", "COMPLETE")]
    titles = {"agent_1": "Trend Detective", "agent_2": "Lyric Composer", "agent_3": "Beat Architect",
              "agent_5a": "Veo Generator", "agent_7": "Mix Engineer", "agent_8": "Quality Critic"}
    started = [a for a, title in titles.items() if f"Training {a} ({title}) - START" in messages]
    skipped = [a for a in titles if f"No training data for {a}" in messages]
    assert sorted(started + skipped) == sorted(titles) and len(skipped) <= 1  # every agent, in or out
    assert messages[-2:] == ["Holistic training completed successfully", messages[-1]]
    result = json.loads((root / "holistic_training_result.json").read_text(encoding="utf-8"))
    assert result["status"] == "success" and len(result["phases"]) == 6
    assert datetime.fromisoformat(result["next_scheduled"]) > datetime.fromisoformat(result["timestamp"])
    assert f"daily_report_{datetime.fromisoformat(result['timestamp']).date()}.txt" in os.listdir(root / "logs")
    metrics = json.loads((root / "logs" / "training_metrics.json").read_text(encoding="utf-8"))
    assert len(metrics["training_history"]) == 1 and "agent_8_quality" in metrics


def test_sigterm_ends_a_run_with_exit_143_and_a_failure_result(tmp_path):
    root = make_root(tmp_path)
    log = root / "logs" / "holistic_training.log"
    env = {**os.environ, "ORCHESTRATOR_TIME_SCALE": "0.2"}
    with subprocess.Popen([sys.executable, str(PROGRAM), "train", "--root", str(root)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            poll(lambda: log.exists() and "Phase 3: Agent Training - START" in log.read_text("utf-8"), bool, 20)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 143
        finally:
            proc.kill()
    result = json.loads((root / "holistic_training_result.json").read_text(encoding="utf-8"))
    assert set(result) == {"status", "error", "timestamp", "total_time_seconds"}
    assert result["status"] == "failed" and result["error"] == "interrupted by signal SIGTERM"
    last = log_text(root).splitlines()[-1]
    assert LOG_LINE.match(last) and last.endswith(" - ERROR - Holistic training failed: interrupted by signal SIGTERM")
    assert not list((root / "logs").glob("daily_report_*.txt"))


def test_forced_failure_exits_1_with_a_traceback_in_the_log(tmp_path):
    root = make_root(tmp_path)
    proc = run("train", "--root", str(root), env={"ORCHESTRATOR_TIME_SCALE": "0.05", "ORCHESTRATOR_FAIL": "1"})
    assert proc.returncode == 1
    lines = log_text(root).splitlines()
    failed = next(i for i, line in enumerate(lines) if " - ERROR - Holistic training failed: " in line)
    assert lines[failed - 1].endswith("Phase 2: Data Validation - START")
    assert lines[failed + 1] == "Traceback (most recent call last):"
    assert all(not LOG_LINE.match(line) for line in lines[failed + 1:])
    result = json.loads((root / "holistic_training_result.json").read_text(encoding="utf-8"))
    assert set(result) == {"status", "error", "timestamp", "total_time_seconds"} and result["status"] == "failed"
    assert not (root / "logs" / "training_metrics.json").exists()
    assert not list((root / "logs").glob("daily_report_*.txt"))


def test_produce_writes_the_orchestration_report(tmp_path):
    root = example_copy(tmp_path)
    assert run("produce", "synthwave", "nostalgic", "--root", str(root)).returncode == 0
    report = json.loads((root / "orchestration_report.json").read_text(encoding="utf-8"))
    assert set(report) == {"project_metadata", "workflow_status", "integrated_results", "execution_plan",
                           "success_metrics", "next_steps", "system_summary"}
    assert report["project_metadata"]["music_genre"] == "synthwave" and report["project_metadata"]["mood"] == "nostalgic"
    assert set(report["project_metadata"]) == {"timestamp", "music_genre", "mood", "system_version", "status"}
    assert "agent_5a" in report["workflow_status"]
    assert all(re.match(r"^(✅|❌) \w", v) for v in report["workflow_status"].values())
    assert set(report["system_summary"]) == {"total_agents", "live_apis", "production_ready", "deployment_ready"}
    assert report["system_summary"]["total_agents"] == 6 and isinstance(report["next_steps"], list)


def test_backfill_ends_with_the_last_run_that_is_over_so_fresh_history_is_never_overdue():
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_orchestrator", PROGRAM)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    day = date(2025, 3, 20)
    for now, expected in ((datetime(2025, 3, 20, 2, 0), day - timedelta(days=1)),
                          (datetime(2025, 3, 20, 3, 30), day - timedelta(days=1)),
                          (datetime(2025, 3, 20, 4, 1), day),
                          (datetime(2025, 3, 20, 23, 59), day)):
        assert program.last_run_day("0 3 * * *", now) == expected, now
    assert program.last_run_day("0 3 * * 1", datetime(2025, 3, 20, 12, 0)) == day - timedelta(days=1)  # not today
