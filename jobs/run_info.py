"""What every job run records with its commits: who ran, which code, which inputs."""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from functools import cache
from pathlib import Path

from features.logs import set_run_id


@cache
def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("recpipe")
    except PackageNotFoundError:
        package = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{package}+{commit}" if commit else package


def new_run_id() -> str:
    """A job's id, set for its log lines at once (before its run record, which may need inputs first)."""
    run_id = uuid.uuid4().hex[:12]
    set_run_id(run_id)
    return run_id


def new_run(job: str, run_id: str | None = None, **fields) -> dict:
    """The run record every artefact and table row of a job carries; its id goes on every log line."""
    run_id = run_id or new_run_id()
    return {
        "job": job,
        "run_id": run_id,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        **fields,
    }
