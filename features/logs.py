"""Logging for recpipe: library modules log through `logging.getLogger(__name__)`; the CLI calls
`configure()` once, which sends the `features`, `training` and `jobs` loggers to stderr with the job's
run id on every line. A job's run id is set when its run record is made (jobs.run_info.new_run), so
`recpipe run` shows each stage's own id. Results (summaries, tables) are printed by the CLI on stdout.

    2026-11-26 02:50:01,123 INFO run=3f9c0a1b2c3d features.tables: table samples: ...
"""

from __future__ import annotations

import contextvars
import logging
import sys

LOGGERS = ("features", "training", "jobs")
FORMAT = "%(asctime)s %(levelname)s run=%(run_id)s %(name)s: %(message)s"
_run_id: contextvars.ContextVar[str] = contextvars.ContextVar("recpipe_run_id", default="-")


def set_run_id(run_id: str) -> None:
    """Every later log line of this job (this thread or task context) carries `run_id`."""
    _run_id.set(run_id)


def current_run_id() -> str:
    return _run_id.get()


class _RunId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _run_id.get()
        return True


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (pytest's capture replaces it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(level: int | str = logging.INFO) -> None:
    """Idempotent: one stderr handler on the project's loggers, whatever the root logger does."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, _Stderr) for h in logger.handlers):
            handler = _Stderr()
            handler.addFilter(_RunId())
            handler.setFormatter(logging.Formatter(FORMAT))
            logger.addHandler(handler)
        logger.propagate = False  # one line per record, not one more from a root handler
