"""The whole pipeline as users start it: `recpipe run` in-process and `spark-submit jobs/ingest.py`."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import yaml

from features.tables import open_tables
from jobs.cli import main

REPO = Path(__file__).resolve().parents[1]


def _tiny_config(tmp_path) -> Path:
    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    config["paths"] = {"raw": str(tmp_path / "raw"), "warehouse": str(tmp_path / "warehouse")}
    config["dates"] = {"start": "2026-03-01", "end": "2026-03-03"}
    config["source"]["synthetic"] = {"users": 150, "items": 40, "seed": 3, "impressions_per_user_day": 3.0}
    config["training"] = {"max_epochs": 1, "verbose": 0}
    config["export"] = {**config["export"], "root": str(tmp_path / "serving"), "auc_floor": 0.0, "max_auc_drop": 1.0}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_generates_ingests_and_prints_the_tables(spark, tmp_path, capsys):
    assert main(["run", "--config", str(_tiny_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    for name in ("events", "events_quarantine", "users", "items"):
        assert f"\n{name} " in out
    # train and evaluate: every model and baseline in the printed comparison table
    assert "[train] lr, gbdt_lr, wide_deep, deepfm" in out and "[evaluate]" in out
    table = out.split("[evaluate]")[1]
    for name in ("lr", "gbdt_lr", "wide_deep", "deepfm", "baseline: item popularity", "baseline: xgboost"):
        assert f"\n{name} " in table
    for name in ("lr", "gbdt_lr", "wide_deep", "deepfm"):  # and every model published for TF Serving
        assert (tmp_path / "serving" / name / "1" / "saved_model.pb").exists()
    tables = open_tables(spark, str(tmp_path / "warehouse"), "delta-rs")
    _, partitions = tables.partitions("events")
    assert partitions == ["2026-03-01", "2026-03-02", "2026-03-03"]
    events = tables.read("events")
    assert events.where("event_type = 'click'").count() > 0
    # the generator's clean output passes validation: nothing is quarantined
    assert tables.read("events_quarantine").count() == 0
    assert tables.read("users", partitions=[dt.date(2026, 3, 1)]).count() == 150


def test_spark_submit_entry_point(spark, tmp_path):
    config = _tiny_config(tmp_path)
    assert main(["run", "--config", str(config)]) == 0
    tables = open_tables(spark, str(tmp_path / "warehouse"), "delta-rs")
    version, rows = tables.version("events"), tables.read("events").count()

    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    result = subprocess.run(
        [
            str(spark_submit),
            "--master",
            "local[1]",
            "--conf",
            "spark.ui.enabled=false",
            str(REPO / "jobs" / "ingest.py"),
            "--config",
            str(config),
            "--date",
            "2026-03-02",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ingested 2026-03-02..2026-03-02" in result.stdout
    assert tables.version("events") == version + 1
    assert tables.read("events").count() == rows  # rerun of one date: same content

    snapshot_rows = tables.read("user_snapshot").orderBy("snapshot_date", "user_id").collect()
    result = subprocess.run(
        [
            str(spark_submit),
            "--master",
            "local[1]",
            "--conf",
            "spark.ui.enabled=false",
            str(REPO / "jobs" / "build_snapshot.py"),
            "--config",
            str(config),
            "--date",
            "2026-03-03",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "built snapshots 2026-03-03..2026-03-03" in result.stdout
    assert tables.read("user_snapshot").orderBy("snapshot_date", "user_id").collect() == snapshot_rows

    for script, arguments, expected in (
        ("build_samples.py", ["--start", "2026-03-02", "--end", "2026-03-02"], "built samples 2026-03-02..2026-03-02"),
        ("train_gbdt.py", [], "trained gbdt in"),
    ):
        result = subprocess.run(
            [
                str(spark_submit),
                "--master",
                "local[1]",
                "--conf",
                "spark.ui.enabled=false",
                str(REPO / "jobs" / script),
                "--config",
                str(config),
                *arguments,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert expected in result.stdout
    assert tables.version("gbdt_leaves") == 1  # once by `recpipe run`, once by spark-submit


def test_movielens_100k_runs_through_ingest(ml100k_warehouse):
    tables = ml100k_warehouse
    events = tables.read("events")
    assert events.count() == 100_000
    assert events.select("user_id").distinct().count() == 943
    assert events.select("item_id").distinct().count() == 1682
    assert tables.read("users").count() == 943
    assert tables.read("items").count() == 1682
    assert tables.read("events_quarantine").count() == 0
    column, days = tables.partitions("events")
    assert (column, days[0], days[-1]) == ("drop_date", "1997-09-20", "1998-04-22")
    # one file per day partition, not one per task and day
    from deltalake import DeltaTable

    assert len(DeltaTable(tables.path("events")).file_uris()) == len(days)
