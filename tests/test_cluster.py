"""A real Spark standalone cluster (one master, one worker with 2 cores, started from the pyspark
installation on 127.0.0.1) whose executors' Python has the dependencies but not recpipe: the project must
ship itself (jobs/dist.py, build_session). The pipeline's Spark stages run there from a `recpipe` CLI
driver process and every table must equal a local[2] run of the same config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO_ROOT, skip_or_fail
from standalone_cluster import StandaloneCluster

# Columns that say when or by which run a row was written, not what it holds
RUN_COLUMNS = {"run_id", "recorded_at", "built_at"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if subprocess.run(["java", "-version"], capture_output=True).returncode != 0:
        skip_or_fail("Java is needed to start a Spark standalone master and worker")
    with StandaloneCluster(tmp_path_factory.mktemp("standalone")) as running:
        yield running


def _driver_env(cluster: StandaloneCluster) -> dict:
    """The driver has the project (PYTHONPATH: this checkout); its executors run cluster.executor_python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK_"))}
    env.update(
        {"PYTHONPATH": str(REPO_ROOT), "PYSPARK_PYTHON": str(cluster.executor_python), "SPARK_LOCAL_IP": "127.0.0.1"}
    )
    return env


CLUSTER_CONF = {
    "spark.executor.memory": "1g",
    "spark.driver.memory": "1g",
    "spark.cores.max": "2",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.ui.enabled": "false",
}

PROBE = textwrap.dedent("""
    import json, sys
    from jobs.spark_session import build_session, ship_code

    def probe(_):
        try:
            import jobs
            return "imported from " + jobs.__file__
        except ImportError as error:
            return "ImportError: " + str(error)

    spark = build_session({"master": sys.argv[1], "app_name": "ship-probe", "ship_code": "never",
                           "conf": json.loads(sys.argv[2])})
    rdd = spark.sparkContext.parallelize([0, 1], 2)
    before = rdd.map(probe).collect()
    shipped = ship_code(spark)
    after = rdd.map(probe).collect()
    print(json.dumps({"before": before, "shipped": shipped, "after": after, "again": ship_code(spark)}))
    spark.stop()
""")


def test_executors_import_the_project_only_when_it_is_shipped(cluster, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, cluster.url, json.dumps(CLUSTER_CONF)],
        cwd=tmp_path,
        env=_driver_env(cluster),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["before"] == ["ImportError: No module named 'jobs'"] * 2
    assert found["shipped"].startswith("recpipe-") and found["shipped"].endswith(".zip")
    assert all(
        line.startswith("imported from ") and f"{found['shipped']}/jobs/__init__.py" in line for line in found["after"]
    ), found["after"]
    assert found["again"] is None  # once per session


def _config(root: Path) -> dict:
    config = yaml.safe_load((REPO_ROOT / "conf" / "demo.yaml").read_text())
    config["source"]["synthetic"].update({"users": 80, "items": 40})
    config["paths"] = {"raw": str(root / "raw"), "warehouse": str(root / "warehouse")}
    config["dates"] = {"start": "2026-01-01", "end": "2026-01-04"}  # samples of days 2 and 3
    config["spark"]["conf"] = dict(CLUSTER_CONF)
    config["training"]["models"] = []  # the Spark stages: source, ingest, snapshot, samples, gbdt
    # local_max_rows 0: the Spark path, XGBoost's barrier task and the leaves' mapInPandas on the executors
    # (below the threshold the booster and leaves are computed on the driver, and the cluster sits idle)
    config["gbdt"].update({"n_estimators": 10, "max_depth": 3, "local_max_rows": 0})
    config["export"]["root"] = str(root / "export")
    return config


def _rows(tables, name: str) -> pd.DataFrame:
    frame = tables.read(name)
    frame = frame.select(*[c for c in frame.columns if c not in RUN_COLUMNS]).toPandas()
    frame = frame.map(
        lambda v: (
            json.dumps(v.tolist() if hasattr(v, "tolist") else v, default=str)
            if isinstance(v, (list, dict)) or hasattr(v, "tolist")
            else v
        )
    )
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_pipeline_on_the_standalone_cluster_equals_local(cluster, spark, tmp_path):
    from features.tables import open_tables
    from jobs.cli import main

    on_cluster, local = tmp_path / "cluster", tmp_path / "local"
    for root in (on_cluster, local):
        root.mkdir()
        (root / "config.yaml").write_text(yaml.safe_dump(_config(root)))
    apps_before = set((cluster.root / "work").glob("app-*"))
    driver = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", "--config", str(on_cluster / "config.yaml"), "--master", cluster.url],
        cwd=on_cluster,
        env=_driver_env(cluster),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert driver.returncode == 0, driver.stdout[-2000:] + driver.stderr[-3000:]
    assert main(["run", "--config", str(local / "config.yaml"), "--master", "local[2]"]) == 0

    # the cluster did the work: the run's application had executors, and they received the project's zip
    apps = set((cluster.root / "work").glob("app-*")) - apps_before
    assert len(apps) == 1 and list(next(iter(apps)).glob("*/recpipe-*.zip")), apps

    expected = open_tables(spark, str(local / "warehouse"), "delta-rs")
    found = open_tables(spark, str(on_cluster / "warehouse"), "delta-rs")
    names = expected.names()
    assert {"events", "user_snapshot", "item_snapshot", "samples"} <= set(names)
    assert found.names() == names
    for name in names:
        left, right = _rows(found, name), _rows(expected, name)
        assert len(left) == len(right), name
        pd.testing.assert_frame_equal(left, right, check_dtype=True, obj=name)


def test_dist_zip_holds_the_packages_and_is_named_by_its_contents(tmp_path):
    import zipfile

    from jobs.dist import build_zip, code_hash, main

    first, second = build_zip(tmp_path / "a.zip"), build_zip(tmp_path / "b.zip")
    assert first.read_bytes() == second.read_bytes()  # reproducible: same sources, same bytes
    assert oct(first.stat().st_mode & 0o777) == "0o644"
    names = zipfile.ZipFile(first).namelist()
    assert {
        "jobs/cli.py",
        "jobs/dist.py",
        "features/tables.py",
        "training/export.py",
        "schemas/features.yaml",
        "schemas/events.yaml",
    } <= set(names)
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n or n.endswith(".pyc")]
    # a changed source is a new name, so executors never import a stale copy
    for package in ("jobs", "features", "training", "schemas"):
        (tmp_path / "src" / package).mkdir(parents=True)
        (tmp_path / "src" / package / "__init__.py").write_text("")
    before = code_hash(tmp_path / "src")
    (tmp_path / "src" / "features" / "__init__.py").write_text("VALUE = 1\n")
    assert code_hash(tmp_path / "src") != before
    assert main(["--out", str(tmp_path / "dist")]) == 0
    assert (tmp_path / "dist" / "recpipe.zip").read_bytes() == first.read_bytes()
    assert (tmp_path / "dist" / f"recpipe-{code_hash()}.zip").exists()
