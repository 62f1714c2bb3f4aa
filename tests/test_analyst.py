"""Analysts: tables, history, SQL with time travel, register, the data dictionary, the SQL cookbook
(every command of docs/sql_cookbook.md is run), and reading the tables from pandas and Polars."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
import yaml
from chispa import assert_df_equality
from deltalake import DeltaTable

from features.data_dictionary import render
from features.feature_spec import load_spec
from features.sql_views import register_views
from features.tables import open_tables
from jobs.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def warehouse(spark, tmp_path_factory):
    """Four synthetic days from 2026-01-01 (as the demo), snapshots, samples; then the drop of 01-02 is
    redelivered with a third of its events missing and days 01-02..01-04 are rebuilt: user_snapshot
    has versions 0 (first build) and 1 (rebuild) that differ."""
    root = tmp_path_factory.mktemp("analyst")
    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    config["paths"] = {"raw": str(root / "raw"), "warehouse": str(root / "warehouse")}
    config["dates"] = {"start": "2026-01-01", "end": "2026-01-04"}
    path = root / "analyst.yaml"
    path.write_text(yaml.safe_dump(config))
    assert (
        main(
            [
                "generate-logs",
                "--out",
                str(root / "raw"),
                "--start-date",
                "2026-01-01",
                "--days",
                "4",
                "--users",
                "200",
                "--items",
                "40",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    assert main(["ingest", "--config", str(path)]) == 0
    assert main(["snapshot", "--config", str(path)]) == 0
    assert main(["samples", "--config", str(path), "--start", "2026-01-02", "--end", "2026-01-03"]) == 0
    drop = next((root / "raw" / "events" / "dt=2026-01-02").glob("*.jsonl"))
    lines = drop.read_text().splitlines()
    drop.write_text("\n".join(line for i, line in enumerate(lines) if i % 3) + "\n")
    assert main(["ingest", "--config", str(path), "--date", "2026-01-02"]) == 0
    assert main(["snapshot", "--config", str(path), "--start", "2026-01-02", "--end", "2026-01-04"]) == 0
    return path, open_tables(spark, str(root / "warehouse"), "delta-rs")


def _cookbook_commands() -> list[list[str]]:
    text = (REPO / "docs" / "sql_cookbook.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [shlex.split(block.replace("\\\n", " ")) for block in blocks]


def test_every_cookbook_command_runs(warehouse, tmp_path, capsys):
    path, _ = warehouse
    commands = _cookbook_commands()
    assert len(commands) >= 7
    for command in commands:
        assert command[:2] == ["recpipe", "sql"]
        arguments = [str(path) if a == "conf/demo.yaml" else a for a in command[2:]]
        if "--out" in arguments:
            arguments[arguments.index("--out") + 1] = str(tmp_path / "label_rate.csv")
        assert main(["sql", *arguments]) == 0, command
        out = capsys.readouterr().out
        assert "(no rows)" not in out, (command, out)
    assert len(pd.read_csv(tmp_path / "label_rate.csv")) == 2  # the --out example: two sample days


def test_sql_time_travel_by_version_and_timestamp(spark, warehouse):
    _, tables = warehouse
    assert tables.version("user_snapshot") == 1
    register_views(tables, {"user_snapshot": 0})
    assert_df_equality(
        spark.table("user_snapshot"),
        tables.read("user_snapshot", version=0),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    first, second = sorted(tables.history("user_snapshot"), key=lambda h: h["version"])
    between = first["timestamp"] + (second["timestamp"] - first["timestamp"]) / 2
    versions = register_views(tables, as_of_timestamp=between.isoformat())
    assert versions["user_snapshot"] == 0
    assert_df_equality(
        spark.table("user_snapshot"),
        tables.read("user_snapshot", version=0),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    register_views(tables, pinned={"before": ("user_snapshot", 0)})
    changed = spark.sql(
        "SELECT count(*) AS n FROM user_snapshot a JOIN before b USING (user_id, snapshot_date) "
        "WHERE NOT (a.user_impressions_7d <=> b.user_impressions_7d)"
    ).first()["n"]
    assert changed > 0  # the redelivered drop changed the rebuilt days


def test_sql_writes_parquet_and_refuses_bad_input(warehouse, tmp_path, capsys):
    path, tables = warehouse
    out = tmp_path / "samples.parquet"
    assert main(["sql", "--config", str(path), "--out", str(out), "SELECT * FROM samples"]) == 0
    assert len(pd.read_parquet(out)) == tables.read("samples").count()
    capsys.readouterr()
    for arguments, message in (
        (["SELECT * FROM no_such_table"], "query failed: "),
        (["--as-of-version", "x=y", "SELECT 1"], "--as-of-version expects N or TABLE=N"),
        (["--as-of-version", "user_snapshot=9", "SELECT 1"], "user_snapshot has versions 0..1, not 9"),
        (["--view", "before=user_snapshot", "SELECT 1"], "--view expects NAME=TABLE@VERSION"),
        (["--out", str(tmp_path / "x.json"), "SELECT 1"], "--out must end in .parquet or .csv"),
    ):
        assert main(["sql", "--config", str(path), *arguments]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_tables_and_history_show_versions_rows_and_runs(warehouse, capsys):
    path, tables = warehouse
    assert main(["tables", "--config", str(path)]) == 0
    listing = capsys.readouterr().out
    line = next(row for row in listing.splitlines() if row.startswith("user_snapshot "))
    assert f" {tables.read('user_snapshot').count()} " in line and "(snapshot)" in line
    assert main(["history", "--config", str(path), "user_snapshot"]) == 0
    history = capsys.readouterr().out.splitlines()
    rows = [row.split() for row in history[2:]]
    assert [r[0] for r in rows] == ["1", "0"] and all("snapshot" in r for r in rows)
    assert "2026-01-01..2026-01-04 (4)" in history[2] and "inputs {'events': 1" in history[2]  # rebuilt days + reads
    assert main(["history", "--config", str(path), "nope"]) == 2


def test_register_prints_the_ddl_and_needs_delta_spark(warehouse, capsys):
    path, tables = warehouse
    assert main(["register", "--config", str(path), "--dry-run", "--database", "analytics"]) == 0
    ddl = capsys.readouterr().out
    assert "CREATE DATABASE IF NOT EXISTS analytics;" in ddl
    for name in tables.names():
        assert f"CREATE TABLE IF NOT EXISTS analytics.{name} USING DELTA LOCATION '{tables.path(name)}'" in ddl
    assert main(["register", "--config", str(path)]) == 2
    assert "needs the delta-spark backend" in capsys.readouterr().err


def test_data_dictionary_is_generated_from_the_spec():
    spec = load_spec()
    text = (REPO / "docs" / "features.md").read_text()
    assert text == render(spec), "docs/features.md is out of date: run recpipe docs"
    for feature in spec.features:
        assert f"| `{feature.name}` | {feature.description} |" in text
    for cross in spec.crosses:
        assert f"`{cross.name}`" in text


def test_pandas_and_polars_read_the_tables_like_spark(warehouse):
    _, tables = warehouse
    path = tables.path("user_snapshot")
    day = DeltaTable(path).to_pandas(
        partitions=[("snapshot_date", "=", "2026-01-03")], columns=["user_id", "user_impressions_7d"]
    )
    spark_day = (
        tables.read("user_snapshot")
        .where("snapshot_date = date'2026-01-03'")
        .select("user_id", "user_impressions_7d")
        .toPandas()
    )
    pd.testing.assert_frame_equal(
        day.sort_values("user_id", ignore_index=True),
        spark_day.sort_values("user_id", ignore_index=True),
        check_dtype=False,
    )
    old = DeltaTable(path, version=0).to_pandas(columns=["user_id", "snapshot_date", "user_impressions_7d"])
    assert len(old) == tables.read("user_snapshot", version=0).count()
    rate = pl.read_delta(tables.path("samples")).group_by("event_date").agg(pl.col("label").mean()).sort("event_date")
    spark_rate = tables.read("samples").groupBy("event_date").avg("label").orderBy("event_date").toPandas()
    assert rate["label"].to_list() == pytest.approx(spark_rate["avg(label)"].to_list())
