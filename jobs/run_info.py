"""What every job run records with its commits: who ran, which code, which inputs."""
from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from functools import cache
from pathlib import Path


@cache
def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("recpipe")
    except PackageNotFoundError:
        package = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{package}+{commit}" if commit else package


def new_run(job: str, **fields) -> dict:
    return {"job": job, "run_id": uuid.uuid4().hex[:12],
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version(), **fields}
