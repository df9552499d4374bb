"""deploy/dashboard.service: systemd accepts it, and it keeps the settings the dashboard relies on."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
UNIT = PROJECT / "deploy" / "dashboard.service"
CHECKOUT = "/opt/training-dashboard"
ENV_FILE = "/etc/training-dashboard/env"


def unit_sections() -> configparser.ConfigParser:
    """The unit parsed like an INI file (keys case-sensitive; a repeated key keeps its last value)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def all_values(key: str) -> list[str]:
    """Every value of a key that systemd accumulates (e.g. ReadWritePaths=), space-separated items."""
    values = []
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{key}="):
            values += line.split("=", 1)[1].split()
    return values


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value.strip())
    assert match, f"unexpected time span {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_key_settings():
    service = unit_sections()["Service"]
    # Training runs started from the dashboard must outlive a restart: only gunicorn's master is signalled.
    assert service["KillMode"] == "process"
    assert service["Restart"] == "on-failure"
    assert service["User"] == "dashboard" and service["Group"] == "dashboard"
    assert service["EnvironmentFile"] == ENV_FILE
    assert service["NoNewPrivileges"] == "yes"
    assert service["WorkingDirectory"] == CHECKOUT
    assert service["ExecStart"] == f"{CHECKOUT}/.venv/bin/gunicorn --config gunicorn.conf.py app:app"
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"


def test_stop_timeout_covers_gunicorn_graceful_timeout():
    graceful = re.search(r"^graceful_timeout\s*=\s*(\d+)", (PROJECT / "gunicorn.conf.py").read_text(), re.M)
    assert graceful, "gunicorn.conf.py sets no graceful_timeout"
    assert seconds(unit_sections()["Service"]["TimeoutStopSec"]) > int(graceful.group(1))


def test_sandbox_leaves_the_app_its_writable_paths():
    service = unit_sections()["Service"]
    assert service["ProtectSystem"] == "strict"
    assert f"{CHECKOUT}/var" in all_values("ReadWritePaths")  # DATABASE_PATH, LOG_FILE, TRAINING_RUNS_DIR
    assert service["CapabilityBoundingSet"] == ""
    families = set(service["RestrictAddressFamilies"].split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= families
    assert {"/tmp", "/var/tmp"} <= set(all_values("ReadWritePaths"))  # ProtectSystem=strict covers them too


def test_sandbox_spares_training_runs_that_outlive_the_dashboard():
    # Runs started from the dashboard inherit the sandbox and outlive a restart: nothing that deletes
    # their temporary files or IPC objects at stop, hides GPUs or forbids JIT memory is active.
    service = unit_sections()["Service"]
    for option in ("PrivateTmp", "RemoveIPC", "PrivateDevices", "MemoryDenyWriteExecute"):
        assert option not in service, option
    assert service["RuntimeDirectoryPreserve"] == "yes"


def verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` on a copy of the unit whose paths point at existing stand-ins under tmp_path."""
    checkout = tmp_path / "checkout"
    gunicorn = checkout / ".venv" / "bin" / "gunicorn"
    gunicorn.parent.mkdir(parents=True)
    gunicorn.write_text("#!/bin/sh\n")
    gunicorn.chmod(0o755)
    (checkout / "var").mkdir()
    env = tmp_path / "env"
    env.write_text("ENVIRONMENT=local\n")
    unit = tmp_path / "dashboard.service"
    unit.write_text(text.replace(CHECKOUT, str(checkout)).replace(ENV_FILE, str(env)), encoding="utf-8")
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze not installed (Debian package systemd)")


@needs_systemd_analyze
def test_systemd_analyze_verify_is_clean(tmp_path):
    # Only the paths that exist on the target machine alone (/opt/..., /etc/...) are substituted;
    # with them in place systemd has nothing to say, so any message is an error in the unit.
    proc = verify(tmp_path, UNIT.read_text(encoding="utf-8"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


@needs_systemd_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    broken = UNIT.read_text(encoding="utf-8").replace("KillMode=process", "KillMode=bogus\nKillModes=process")
    proc = verify(tmp_path, broken)
    assert "kill mode" in proc.stderr.lower() and "KillModes" in proc.stderr


def test_env_example_reads_the_same_as_a_systemd_environment_file():
    # The README installs .env.example as EnvironmentFile=. systemd and python-dotenv agree on plain
    # KEY=value lines; quotes, backslashes, `$` and trailing comments are where they differ.
    for number, line in enumerate((PROJECT / ".env.example").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=[^\"'\\$#]*", line), f".env.example:{number}: {line!r}"
