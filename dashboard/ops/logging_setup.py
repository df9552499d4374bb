"""Logging for the app: the console and LOG_FILE, written by one thread per process so that a request
never waits on the disk or the journal."""
from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import time

from flask import Flask

_log_listener: logging.handlers.QueueListener | None = None


def configure_logging(app: Flask) -> None:
    """Log to the console and, when LOG_FILE is set, to that file (reopened after logrotate).

    Requests only put records on a queue; one thread per process formats and writes them, so a
    request never waits on the disk or the journal.
    """
    global _log_listener
    # Record only what the format prints: no caller frame, thread or process name lookups per record
    # (the logging HOWTO's "Optimization"; a log line per request adds up under load).
    logging._srcfile = None
    logging.logThreads = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.setLevel(app.config["LOG_LEVEL"])
    formatter = LineFormatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if app.config.get("LOG_FILE"):
        os.makedirs(os.path.dirname(app.config["LOG_FILE"]), exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(app.config["LOG_FILE"], encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
    if _log_listener is not None:
        _log_listener.stop()
    for handler in list(root.handlers):
        if getattr(handler, "_dashboard", False):
            root.removeHandler(handler)
    records: queue.SimpleQueue = queue.SimpleQueue()
    to_queue = RecordQueue(records)
    to_queue._dashboard = True
    root.addHandler(to_queue)
    _log_listener = logging.handlers.QueueListener(records, *handlers)
    _log_listener.start()


class LineFormatter(logging.Formatter):
    """The log line: made once per record for every handler (console and file), its time text once a second."""

    _second, _time_text = None, ""

    def format(self, record: logging.LogRecord) -> str:
        line = record.__dict__.get("_line")
        if line is None:
            line = record._line = super().format(record)
        return line

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._time_text = second, time.strftime(self.default_time_format, self.converter(second))
        return self.default_msec_format % (self._time_text, record.msecs)


class RecordQueue(logging.handlers.QueueHandler):
    """Puts a record on the listener's queue with its message made now (its arguments may change later),
    the record itself rather than a copy unless it carries a traceback to render."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().prepare(record)
        if record.args:
            record.msg, record.args = record.getMessage(), None
        return record


@atexit.register
def _flush_logs() -> None:
    if _log_listener is not None:
        _log_listener.stop()


def _listen_again_after_fork() -> None:
    # The listener thread stays in the parent (gunicorn's master under --preload): a child needs its own.
    global _log_listener
    if _log_listener is not None:
        records: queue.SimpleQueue = queue.SimpleQueue()
        for handler in logging.getLogger().handlers:
            if getattr(handler, "_dashboard", False):
                handler.queue = records
        _log_listener = logging.handlers.QueueListener(records, *_log_listener.handlers)
        _log_listener.start()


os.register_at_fork(after_in_child=_listen_again_after_fork)
