"""deploy/prometheus/alerts.yml: valid rules (promtool, when installed) over metrics /metrics really exports."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import PROJECT

RULES = PROJECT / "deploy" / "prometheus" / "alerts.yml"


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; `make test-packages` installs it)")
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_rules_use_metrics_the_dashboard_exports(client):
    exported = set(re.findall(r"^# TYPE (\S+) ", client.get("/metrics").get_data(as_text=True), re.M))
    text = RULES.read_text(encoding="utf-8")
    exprs = re.findall(r"^\s+expr: (.+)$", text, re.M)
    used = {name for expr in exprs for name in re.findall(r"\b(dashboard_[a-z_]+)", expr)}
    assert used and used <= exported, used - exported
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", text, re.M))
    assert {"TrainingRunFailed", "TrainingOverdue", "AgentBelowQualityThreshold", "HostCpuHigh"} <= alerts
