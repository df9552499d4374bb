"""Readers of the run log: its lines as events (a traceback joined to the line it follows), the newest
events by a backward tail, every event streamed or from a byte offset on, and what the last run did.

Nothing raises and nothing but a regular file is read; a line still being written (no newline yet) is
never served as complete. Standard library only.
"""
from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple, Optional

from dashboard.local.file_reading import BLOCK_SIZE, open_regular, parse_naive_timestamp, resolve_inside

if TYPE_CHECKING:
    from dashboard.local.parse_cache import ParseCache

TAIL_MAX_BYTES = 1024 * 1024
MAX_EVENT_CHARS = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024
BISECT_STOP_BYTES = 64 * 1024
LONG_LINE_SCAN_BYTES = 64 * 1024 * 1024  # a tail reads past at most this much of lines longer than its window
BISECT_PROBE_LINES = 200
PHASES = [("harvesting", "Data Harvesting"), ("validation", "Data Validation"),
          ("agent_training", "Agent Training"), ("production", "Production Run"),
          ("monitoring", "Monitoring & Logging"), ("cleanup", "Cleanup & Archiving")]
PHASE_BY_NAME = {name.lower(): key for key, name in PHASES}
LOG_LINE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:[,.]\d+)?) - (.+?) - ([A-Z]+) - (.*)$")
PHASE_LINE_RE = re.compile(r"^Phase\s+\d+:\s*(.+?)\s+-\s+(START|COMPLETE)\b(?:\s*\(\s*([+-]?\d+(?:\.\d+)?)\s*s\b)?")
AGENT_START_RE = re.compile(r"^Training (agent_[A-Za-z0-9]+)\b.*-\s*START\b")
AGENT_LINE_RE = re.compile(r"^(agent_[A-Za-z0-9]+) training\b(?:\s+(completed|failed)\b)?")
RUN_STARTED, RUN_OK, RUN_FAILED = ("HOLISTIC TRAINING PIPELINE STARTED", "Holistic training completed successfully",
                                   "Holistic training failed")


def parse_log_line(line: str) -> Optional[dict]:
    """{"timestamp", "source", "level", "message"} for a logging line, None for a continuation line."""
    m = LOG_LINE_RE.match(line.rstrip("\r\n"))
    when = parse_naive_timestamp(m.group(1)) if m else None
    if when is None:
        return None
    return {"timestamp": when, "source": m.group(2), "level": m.group(3), "message": m.group(4)}


def list_log_files(logs_dir) -> list:
    """The regular *.log files in logs_dir, oldest modification time first."""
    found = []
    try:
        with os.scandir(logs_dir) as entries:
            for entry in entries:
                if entry.name.endswith(".log") and entry.is_file() and (not entry.is_symlink()
                                                                        or resolve_inside(logs_dir, entry.name)):
                    found.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
    except (OSError, ValueError, TypeError):
        return []
    return [path for _mtime, _name, path in sorted(found)]


class _Line:
    """The line a backward tail is reading, from its end towards its start; past `limit` bytes only its
    size is kept, not its bytes."""

    def __init__(self, limit: int):
        self.limit, self.size, self.chunks = limit, 0, []

    def prepend(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.chunks = []
        elif chunk:
            self.chunks.append(chunk)

    @property
    def long(self) -> bool:
        return self.size > self.limit

    def text(self) -> bytes:
        return b"".join(reversed(self.chunks))


def _tail(path: Path, n: int, max_bytes: int):
    """(lines, warnings, capped): up to n last complete lines; capped if max_bytes ran out first.

    A line that alone is longer than the window is skipped with a warning (its bytes are not kept), and
    the lines before it are looked for, past at most LONG_LINE_SCAN_BYTES of such lines."""
    fd, _st, warnings = open_regular(Path(path))
    if fd is None or n <= 0:
        if fd is not None:
            os.close(fd)
        return [], warnings, False
    window = max(max_bytes - 1, 0)  # one byte is kept to learn whether the window starts a line
    kept, kept_bytes, scanned_long, capped, bom = [], 0, 0, False, False
    try:
        pos = os.lseek(fd, 0, os.SEEK_END)
        line, unfinished = _Line(window), True  # the text after the last newline is still being written
        while pos > 0 and len(kept) < n and not capped:
            size = min(max(BLOCK_SIZE, 1), pos)
            block = os.pread(fd, size, pos - size)
            if len(block) != size:
                warnings.append(f"{path.name}: file shrank while reading")
                break
            pos -= size
            cut = len(block)
            while len(kept) < n and not capped:
                newline = block.rfind(b"\n", 0, cut)
                line.prepend(block[newline + 1:cut])
                if newline < 0 and pos > 0:
                    break  # the line goes on in the block before
                if unfinished:
                    unfinished = False
                elif line.long:
                    warnings.append(f"{path.name}: skipped a line of {line.size} bytes at byte {pos + newline + 1}"
                                    f" (longer than the {max_bytes}-byte window)")
                elif kept_bytes + line.size + 1 <= window:
                    kept.append(line.text())
                    kept_bytes += line.size + 1
                    bom = newline < 0
                else:
                    capped = True
                scanned_long += line.size if line.long else 0
                if scanned_long > LONG_LINE_SCAN_BYTES and not capped:
                    warnings.append(f"{path.name}: earlier lines not read (over {LONG_LINE_SCAN_BYTES} bytes of"
                                    " lines longer than the window)")
                    capped = True
                line, cut = _Line(window), newline
                if newline < 0:
                    break  # that was the file's first line
            if line.long and not capped and scanned_long + line.size > LONG_LINE_SCAN_BYTES:
                warnings.append(f"{path.name}: a line of more than {line.size} bytes ends at byte {pos + line.size};"
                                f" earlier lines not read (over {LONG_LINE_SCAN_BYTES} bytes of lines longer"
                                " than the window)")
                capped = True
    except OSError as exc:
        return [], [f"{path.name}: cannot read ({exc.strerror})"], False
    finally:
        os.close(fd)
    text = [raw.decode("utf-8", errors="replace").removesuffix("\r") for raw in reversed(kept)]
    if bom:
        text[0] = text[0].removeprefix("\ufeff")
    return text, warnings, capped


def tail_lines(path, n: int, max_bytes: int = TAIL_MAX_BYTES) -> tuple[list[str], list[str]]:
    """(the last `n` complete lines of a file within its last `max_bytes`, oldest first; warnings)."""
    lines, warnings, _capped = _tail(Path(path), n, max_bytes)
    return lines, warnings


def _group(lines: Iterable[Optional[str]]) -> Iterator[dict]:
    """Events from lines: continuation lines join the previous event; leading ones are dropped (and so
    are those after a None, a skipped line)."""
    event = None
    for line in lines:
        if line is None:  # a skipped line: it ends the event before it, and its continuation lines go too
            if event is not None:
                yield event
            event = None
            continue
        parsed = parse_log_line(line)
        if parsed is not None:
            if event is not None:
                yield event
            event = parsed
        elif event is not None and len(event["message"]) < MAX_EVENT_CHARS:
            event["message"] += "\n" + line
    if event is not None:
        yield event


def read_log_events(path, limit, max_bytes=TAIL_MAX_BYTES, *, cache: Optional[ParseCache] = None) -> tuple:
    """(the newest `limit` events of a log, oldest first, warnings), within a max_bytes tail window.

    With a cache, an unchanged log (same inode, size and mtime) is answered from it; the events are
    shared, so callers must not change them.
    """
    if limit <= 0:
        return [], []
    if cache is None:
        return _read_log_events(path, limit, max_bytes)
    events, warnings = cache.of_file(f"tail:{limit}:{max_bytes}", Path(path),
                                     lambda: _read_log_events(path, limit, max_bytes), max_bytes)
    return list(events), warnings


def _read_log_events(path, limit, max_bytes) -> tuple:
    n = limit * 2 + 16
    while True:
        lines, warnings, capped = _tail(Path(path), n, max_bytes)
        events = list(_group(lines))
        if len(events) >= limit or len(lines) < n:
            break
        n *= 4  # long tracebacks: widen the window
    if capped and len(events) < limit:
        warnings.append(f"{Path(path).name}: only {len(events)} events within the last {max_bytes} bytes")
    return events[-limit:], warnings


def _offset_near(f, size: int, since: datetime) -> int:
    """A line-start offset at or before the first line stamped `since` or later (bisection on the
    byte offsets: a log's lines are in time order), so a window of a huge log is read, not all of it."""
    lo, hi = 0, size
    while hi - lo > BISECT_STOP_BYTES:
        mid = (lo + hi) // 2
        f.seek(mid)
        f.readline(MAX_LINE_BYTES)  # the rest of the line `mid` fell in
        stamp = None
        for _ in range(BISECT_PROBE_LINES):
            raw = f.readline(MAX_LINE_BYTES)
            if not raw:
                break
            event = parse_log_line(raw.decode("utf-8", errors="replace"))
            if event is not None:
                stamp = event["timestamp"]
                break
        if stamp is not None and stamp < since:
            lo = mid
        else:
            hi = mid
    return lo


class LongLine(NamedTuple):
    """log_events_from: a line over MAX_LINE_BYTES, skipped (its bytes were never held at once)."""
    offset: int  # where it starts
    size: int  # its length in bytes, without the newline


def _complete_lines(f) -> Iterator[tuple[Optional[bytes], int]]:
    """(line, its size in bytes) for each complete line from f's position on; the line is None when it is
    over MAX_LINE_BYTES (read through in bounded pieces). Stops before a last line still being written."""
    while (line := _complete_line(f)) is not None:
        yield line


def _complete_line(f) -> Optional[tuple[Optional[bytes], int]]:
    """The next of _complete_lines, or None where they stop."""
    raw = f.readline(MAX_LINE_BYTES + 1)
    if raw.endswith(b"\n"):
        return raw, len(raw)
    if len(raw) <= MAX_LINE_BYTES:
        return None
    size = len(raw)
    while piece := f.readline(MAX_LINE_BYTES):
        size += len(piece)
        if piece.endswith(b"\n"):
            return None, size
    return None


def iter_log_events(path, since: Optional[datetime] = None) -> Iterator[dict]:
    """Every event of a log (with `since`: from about that time on), oldest first, streamed; nothing
    for a missing or non-regular file."""
    fd, st, _warnings = open_regular(Path(path))
    if fd is None:
        return

    def lines(f):
        first = True
        if since is not None:
            start = _offset_near(f, st.st_size, since)
            f.seek(start)
            if start:
                f.readline(MAX_LINE_BYTES)  # a partial line
                first = False
        for raw, _size in _complete_lines(f):
            if raw is None:  # over MAX_LINE_BYTES: not an event, nor part of one
                yield None
                continue
            line = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
            yield line.removeprefix("\ufeff") if first else line
            first = False

    with os.fdopen(fd, "rb") as f:
        yield from _group(lines(f))


_OTHER_LEVEL = {}  # log_events_from: an event of a level not asked for (its lines are skipped)
SKIP_CHUNK_BYTES = 1024 * 1024  # at most MAX_LINE_BYTES is used: a line over that never fits in one


def log_events_from(path, offset: int = 0, levels: Optional[frozenset] = None) -> Iterator[tuple[object, int]]:
    """The events of a log (only those of `levels`, when given) from byte `offset` (a line start) on,
    oldest first, each with the offset just past its last line, then (None, where reading stopped);
    streamed. A line over MAX_LINE_BYTES comes as a LongLine (it ends the event before it and starts
    none). A last line still being written (no newline yet) is left for later; nothing for a missing
    or non-regular file. Lines of other levels are passed over unread: a large log is fast."""
    fd, _st, _warnings = open_regular(Path(path))
    if fd is None:
        return
    # Every line that starts an event of `levels` holds " - LEVEL - "; between the lines of an event
    # asked for, the runs of lines without any are found by one search, not read line by line.
    wanted = re.compile(b" - (?:" + b"|".join(re.escape(level.encode()) for level in sorted(levels)) + b") - ") \
        if levels else None
    with os.fdopen(fd, "rb") as f:
        event, end, position = None, offset, offset
        f.seek(offset)
        chunk, chunk_at, complete = b"", offset, 0  # file bytes from chunk_at; its lines end before `complete`
        while True:
            if wanted is not None and (event is None or event is _OTHER_LEVEL):
                at = position - chunk_at
                if not chunk_at <= position < chunk_at + complete:
                    chunk, chunk_at, at = os.pread(f.fileno(), min(SKIP_CHUNK_BYTES, MAX_LINE_BYTES), position), position, 0
                    complete = chunk.rfind(b"\n") + 1
                if complete:
                    found = wanted.search(chunk, at, complete)
                    skip = complete if found is None else max(at, chunk.rfind(b"\n", at, found.start()) + 1)
                    if skip > at:
                        event = None if event is None else _OTHER_LEVEL
                        position = end = chunk_at + skip
                        continue
                f.seek(position)  # a line to read as it is (a long line, never within a chunk, goes this way)
            next_line = _complete_line(f)
            if next_line is None:
                break
            raw, size = next_line
            if raw is None:
                if event is not None and event is not _OTHER_LEVEL:
                    yield event, end
                position += size
                event, end = _OTHER_LEVEL, position  # its continuation lines go with it
                yield LongLine(position - size, size - 1), end
                continue
            line = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
            line = line.removeprefix("\ufeff") if position == 0 else line
            position += size
            m = LOG_LINE_RE.match(line)
            if m and levels is not None and m.group(3) not in levels:
                parsed = _OTHER_LEVEL
            else:
                when = parse_naive_timestamp(m.group(1)) if m else None
                parsed = None if when is None else {"timestamp": when, "source": m.group(2),
                                                    "level": m.group(3), "message": m.group(4)}
            if parsed is not None:
                if event is not None and event is not _OTHER_LEVEL:
                    yield event, end
                event = parsed
            elif event is not None and event is not _OTHER_LEVEL and len(event["message"]) < MAX_EVENT_CHARS:
                event["message"] += "\n" + line
            end = position
        if event is not None and event is not _OTHER_LEVEL:  # logging writes a record in one go: complete
            yield event, end
        yield None, end


def parse_run_progress(events) -> dict:
    """What the last run in `events` (oldest first) did: start, phases, agents, finish."""
    progress = {"found": False, "started_at": None, "finished": None, "finished_at": None, "error": None,
                "current_phase": None, "phase_started_at": None, "completed_phases": {},
                "current_agent": None, "agents_completed": [], "agents_failed": [],
                "last_event_at": events[-1]["timestamp"] if events else None}
    starts = [i for i, event in enumerate(events) if RUN_STARTED in event["message"]]
    if not starts:
        return progress
    progress["found"] = True
    progress["started_at"] = events[starts[-1]]["timestamp"]
    open_phases, agent = {}, None
    for event in events[starts[-1]:]:
        message, when = event["message"].split("\n", 1)[0].strip(), event["timestamp"]
        if (m := PHASE_LINE_RE.match(message)) and m.group(1).lower() in PHASE_BY_NAME:
            key = PHASE_BY_NAME[m.group(1).lower()]
            open_phases.pop(key, None)
            if m.group(2) == "START":
                open_phases[key] = when
                agent = None if key == "agent_training" else agent
            else:
                progress["completed_phases"][key] = float(m.group(3)) if m.group(3) else None
        elif message.startswith(RUN_OK):
            progress["finished"], progress["finished_at"] = "success", when
        elif message.startswith(RUN_FAILED):
            progress["finished"], progress["finished_at"] = "failed", when
            progress["error"] = message[len(RUN_FAILED):].lstrip(": ").strip() or message
        elif m := AGENT_START_RE.match(message) or AGENT_LINE_RE.match(message):
            agent = m.group(1)
            outcome = m.group(2) if m.re is AGENT_LINE_RE else None
            done = {"completed": progress["agents_completed"], "failed": progress["agents_failed"]}.get(outcome)
            if done is not None and agent not in done:
                done.append(agent)
    if progress["finished"] is None and open_phases:
        progress["current_phase"], progress["phase_started_at"] = list(open_phases.items())[-1]
        if progress["current_phase"] == "agent_training":
            progress["current_agent"] = agent
    return progress
