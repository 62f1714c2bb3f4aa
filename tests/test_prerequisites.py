"""Tests that need MovieLens 100K or Airflow's virtualenv skip with the reason where they are missing,
and fail under CI=true (tests/conftest.py): a CI run must not pass by skipping. No Spark here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEEDS_BOTH = """
def test_needs_movielens(ml100k_dir):
    pass


def test_needs_airflow(airflow_bin):
    pass
"""


def _pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """pytest on a two-test file that uses the fixtures of tests/conftest.py (as a plugin), with both
    prerequisites pointed at an empty directory."""
    (tmp_path / "test_needs_both.py").write_text(NEEDS_BOTH)
    (tmp_path / "empty").mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env.update(
        PYTHONPATH=str(REPO),
        RECPIPE_ML100K=str(tmp_path / "empty"),
        RECPIPE_AIRFLOW_VENV=str(tmp_path / "empty"),
        **({"CI": ci} if ci is not None else {}),
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            "--rootdir",
            str(tmp_path),
            "test_needs_both.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("ci", [None, "false"])
def test_missing_prerequisites_skip_with_the_reason_outside_ci(tmp_path, ci):
    result = _pytest(tmp_path, ci)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 skipped" in result.stdout
    assert f"MovieLens 100K not found at {tmp_path / 'empty'}" in result.stdout
    assert f"Airflow's virtualenv is missing at {tmp_path / 'empty'}" in result.stdout


def test_missing_prerequisites_fail_under_ci(tmp_path):
    result = _pytest(tmp_path, "true")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "2 errors" in result.stdout  # pytest.fail in a fixture: an error of the test, the run fails
    assert f"MovieLens 100K not found at {tmp_path / 'empty'}" in result.stdout
    assert f"Airflow's virtualenv is missing at {tmp_path / 'empty'}" in result.stdout
    assert "CI=true: missing prerequisites fail instead of skipping" in result.stdout
