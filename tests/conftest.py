"""Shared fixtures: one session-scoped local SparkSession, paths to the real data in ../shared and to
Airflow's virtualenv. Where they are missing, the tests that need them skip with the reason, except
under CI=true, where a missing prerequisite fails them: CI must run everything."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

os.environ["TZ"] = "UTC"  # Python-side datetimes from Spark are naive local times: make local = UTC
time.tzset()

REPO_ROOT = Path(__file__).resolve().parents[1]
ML100K_DIR = Path(os.environ.get("RECPIPE_ML100K", REPO_ROOT.parent / "shared" / "data" / "ml-100k"))
DELTA_JARS_ENV = "RECPIPE_DELTA_JARS"  # comma-separated jar files: delta-spark_2.13-4.4.1.jar,delta-storage-4.4.1.jar
DELTA_PACKAGES_ENV = "RECPIPE_DELTA_PACKAGES"  # e.g. io.delta:delta-spark_2.13:4.4.1 (needs Maven Central)
AIRFLOW_VENV = Path(os.environ.get("RECPIPE_AIRFLOW_VENV", REPO_ROOT / ".venv-airflow"))


def skip_or_fail(reason: str) -> None:
    """Skips the test, or fails it when CI=true (a prerequisite missing in CI is a broken CI, not a skip)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} [CI=true: missing prerequisites fail instead of skipping]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    if not (ML100K_DIR / "u.data").exists():
        skip_or_fail(f"MovieLens 100K not found at {ML100K_DIR} (set RECPIPE_ML100K or place ../shared/data/ml-100k)")
    return ML100K_DIR


@pytest.fixture(scope="session")
def airflow_bin() -> Path:
    """bin/ of Airflow's own virtualenv (make airflow; RECPIPE_AIRFLOW_VENV overrides its place)."""
    if not (AIRFLOW_VENV / "bin" / "airflow").exists():
        skip_or_fail(f"Airflow's virtualenv is missing at {AIRFLOW_VENV}: run make airflow (make test does)")
    return AIRFLOW_VENV / "bin"


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from jobs.spark_session import build_session

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    conf = {
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
        "spark.ui.enabled": "false",
        "spark.sql.warehouse.dir": str(warehouse),
    }
    # The delta-spark contract (tests/test_tables.py) runs where its jars exist: local jar files, or Maven
    # coordinates on a machine that reaches Maven Central (README "delta-spark").
    jars, packages = os.environ.get(DELTA_JARS_ENV), os.environ.get(DELTA_PACKAGES_ENV)
    if jars:
        conf["spark.jars"] = jars
    if packages:
        conf["spark.jars.packages"] = packages
    session = build_session(
        {"master": "local[2]", "app_name": "recpipe-tests", "conf": conf}, "delta-spark" if jars or packages else "auto"
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ml100k_warehouse(spark, ml100k_dir, tmp_path_factory):
    """MovieLens 100K through `recpipe run` once per session: import, ingest, snapshots of every day."""
    import yaml

    from features.tables import open_tables
    from jobs.cli import main

    root = tmp_path_factory.mktemp("ml100k")
    config = yaml.safe_load((REPO_ROOT / "conf" / "movielens.yaml").read_text())
    config["source"]["movielens_path"] = str(ml100k_dir)
    config["paths"] = {"raw": str(root / "raw"), "warehouse": str(root / "warehouse")}
    config["export"]["root"] = str(root / "serving")
    path = root / "movielens.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(path)]) == 0
    return open_tables(spark, str(root / "warehouse"), "delta-rs")


@pytest.fixture
def ml100k_warehouse_copy(spark, ml100k_warehouse, tmp_path):
    """A private copy of the MovieLens warehouse's Delta tables (not its trained artefacts), for tests
    that write (new samples versions, say): the shared session warehouse stays as `recpipe run` left it,
    so the tests that read its latest samples and models pass in any order."""
    import shutil

    from features.tables import open_tables

    copy = tmp_path / "ml100k-warehouse"
    shutil.copytree(ml100k_warehouse.root, copy, ignore=shutil.ignore_patterns("_artifacts", "samples", "gbdt_leaves"))
    return open_tables(spark, str(copy), "delta-rs")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free 127.0.0.1 port for the session (no persistence), stopped at the end:
    {"host", "port"}. Tests isolate themselves with their own key namespace."""
    import shutil
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not on PATH: apt-get install -y redis-server (make test does)")
    import redis

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.time() + 20
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"redis-server did not start on 127.0.0.1:{port}")
            time.sleep(0.05)
    yield {"host": "127.0.0.1", "port": port}
    process.terminate()
    process.wait(timeout=10)
