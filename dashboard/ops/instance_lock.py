"""One instance per state folder: the folder of DATABASE_PATH (the database, its lock files, the
Prometheus folder, gunicorn's control socket) belongs to the instance holding `instance.lock` in it.

The lock is an flock held for the life of gunicorn's master (its workers share it through the fork)
or of the one process of `python app.py` / `flask run`; the kernel releases it when they are gone. The
file records the holder: pid, descriptor and identity (ENVIRONMENT, ORCHESTRATOR_PATH, CLOUD_API_URL).
A start that finds it held:

- re-executed by its holder (gunicorn's USR2): the new master inherited the holder's descriptor
  (keep_across_exec, called by gunicorn's pre_exec hook), so it holds the same lock and goes on;
- with the holder's identity (a restart whose predecessor is still stopping): goes on, and takes the
  lock over once the predecessor lets go;
- with another identity: refused, naming DATABASE_PATH and the holder's pid.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dashboard.config import ConfigError

LOCK_NAME = "instance.lock"
RECORD_WAIT_SECONDS = 1.0  # how long a holder that has just taken the lock may take to write its record

log = logging.getLogger(__name__)


class StateFolderInUse(ConfigError):
    """Another instance, of another identity, runs on this state folder."""


@dataclass
class Claim:
    """This process's hold on a state folder."""

    path: Path  # the lock file
    fd: int  # the descriptor that holds the lock (or waits for it)
    fresh: bool  # the lock was free: this start owns the state from scratch (and empties its metrics)
    how: str  # "free", "inherited" or "restart" (waiting for the predecessor to let go)


_claims: dict[Path, Claim] = {}


def identity(config: dict) -> dict:
    """What makes two starts the same instance: the data source they serve."""
    return {"environment": config["ENVIRONMENT"], "orchestrator_path": str(config["ORCHESTRATOR_PATH"]),
            "cloud_api_url": config.get("CLOUD_API_URL", "")}


def state_folder(config: dict) -> Path:
    """The folder this instance keeps its state in: the folder of DATABASE_PATH."""
    return Path(config["DATABASE_PATH"]).parent


def lock_path(config: dict) -> Path:
    """The lock file of the state folder of `config`."""
    return (state_folder(config) / LOCK_NAME).resolve()


def held(config: dict) -> Optional[Claim]:
    """This process's claim on the state folder of `config` (made here or in the process it forked from)."""
    return _claims.get(lock_path(config))


def claim(config: dict) -> Claim:
    """Take (or, after a fork, keep) the state folder of `config` for this instance; StateFolderInUse
    when an instance of another identity holds it. Claiming twice in one process returns the first claim."""
    folder = state_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    path = lock_path(config)
    if path in _claims:
        return _claims[path]
    mine = identity(config)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    if _try_lock(fd):
        made = Claim(path, fd, True, "free")
    else:
        holder = _read_record(fd)
        inherited = _inherited_fd(path, holder) if holder.get("fd") != fd else None
        if inherited is not None:
            os.close(fd)
            made = Claim(path, inherited, False, "inherited")
        elif {k: holder.get(k) for k in mine} == mine:
            made = Claim(path, fd, False, "restart")
            threading.Thread(target=_take_over, args=(made, mine), name="instance-lock", daemon=True).start()
        elif _try_lock(fd):  # the holder has just gone
            made = Claim(path, fd, True, "free")
        else:
            os.close(fd)
            raise StateFolderInUse(_refusal(config, holder))
    if made.how != "restart":
        _write_record(made.fd, mine)
    _claims[path] = made
    return made


def keep_across_exec() -> None:
    """Let the held locks survive an exec (gunicorn's USR2 re-exec: the new master inherits them)."""
    for claimed in _claims.values():
        os.set_inheritable(claimed.fd, True)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _inherited_fd(path: Path, holder: dict) -> Optional[int]:
    """The holder's descriptor, if this process inherited it (then it holds the same lock)."""
    fd = holder.get("fd")
    if not isinstance(fd, int):
        return None
    try:
        mine, theirs = os.fstat(fd), os.stat(path)
    except OSError:
        return None
    if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
        return None
    return fd if _try_lock(fd) else None


def _take_over(made: Claim, mine: dict) -> None:
    fcntl.flock(made.fd, fcntl.LOCK_EX)  # blocks until the predecessor is gone
    _write_record(made.fd, mine)
    log.info("state folder %s: the previous instance let go; this one (pid %d) holds it now",
             made.path.parent, os.getpid())


def _write_record(fd: int, mine: dict) -> None:
    data = json.dumps({"pid": os.getpid(), "fd": fd, **mine}).encode()
    os.pwrite(fd, data, 0)  # then truncate, so a reader never sees an empty file
    os.ftruncate(fd, len(data))


def _read_record(fd: int) -> dict:
    deadline = time.monotonic() + RECORD_WAIT_SECONDS
    while True:
        try:
            record = json.loads(os.pread(fd, 4096, 0) or b"null")
            if isinstance(record, dict):
                return record
        except ValueError:
            pass
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.02)


def _refusal(config: dict, holder: dict) -> str:
    pid = holder.get("pid", "unknown")
    theirs = ", ".join(f"{key.upper()}={holder.get(key) or '(empty)'}" for key in identity(config))
    return (f"DATABASE_PATH {config['DATABASE_PATH']}: its folder {state_folder(config)} is the state of another "
            f"running instance (pid {pid}; {theirs}). Two instances need separate state: give this one a "
            f"DATABASE_PATH in a folder of its own (and its own PORT).")
