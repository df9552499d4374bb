"""What an instance does once at start, before it serves: claim its state folder (instance_lock) and
say when its data source cannot be read. gunicorn's master does it (gunicorn.conf.py on_starting), so
its workers do not repeat it; `python app.py` and `flask run` do it in create_app."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from dashboard.ops import instance_lock


def start_instance(config: dict, log: logging.Logger) -> instance_lock.Claim:
    """Claim the state folder of `config` (StateFolderInUse if another instance has it) and, the first
    time in this process, log a WARNING when the local provider's ORCHESTRATOR_PATH cannot be read."""
    first = instance_lock.held(config) is None
    claim = instance_lock.claim(config)
    if first:
        if claim.how == "restart":
            log.info("state folder %s: held by this instance's predecessor, taken over when it stops",
                     claim.path.parent)
        problem = orchestrator_path_problem(config)
        if problem:
            log.warning("%s", problem)
    return claim


def orchestrator_path_problem(config: dict) -> Optional[str]:
    """Why ORCHESTRATOR_PATH cannot be read in local mode, or None (also in cloud mode)."""
    if config["ENVIRONMENT"] != "local":
        return None
    root = Path(config["ORCHESTRATOR_PATH"])
    if not root.exists():
        reason = "does not exist"
    elif not root.is_dir():
        reason = "is not a folder"
    elif not os.access(root, os.R_OK | os.X_OK):
        reason = "is not readable by this user"
    else:
        return None
    return (f"ORCHESTRATOR_PATH {root} {reason}: the dashboard shows no agents, runs or metrics "
            f"until it can read the orchestrator's folder (set ORCHESTRATOR_PATH and restart)")
