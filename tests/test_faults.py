"""Fault injection: a writer killed before its commit, two runs racing on one partition, corrupted
raw drops, and a killed export. Real child processes where the fault is a process dying or racing.

The child processes stop at the test hook of features/tables.py: RECPIPE_FAULT_BEFORE_COMMIT names a
marker file the writer creates once its Parquet files are in the partition directories, right before
the Delta commit; it then waits while the marker exists (RECPIPE_FAULT_TABLE limits it to one table).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow.fs as pafs
import pytest
import yaml
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import functions as F

import features.tables as tables_module
from features import ingest_runs, raw_drops
from features.tables import ConcurrentWriteError, DeltaRsTables, open_tables
from jobs.cli import main
from training.publish_gate import next_version, published_versions
from jobs.ingest import ingest
from jobs.maintenance import unreferenced_files

REPO = Path(__file__).resolve().parents[1]
D1, D2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
SCHEMA = "id long, name string, day date"
CHILD_TIMEOUT = 240  # seconds a child Spark process may take to reach the hook or to finish

# A writer in its own process: a local Spark session replacing partition D2 of table t.
KILLED_WRITER = """
import datetime as dt, sys
from features.tables import DeltaRsTables
from jobs.spark_session import build_session
spark = build_session({"master": "local[1]", "app_name": "killed-writer",
                       "conf": {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "1"}})
frame = spark.createDataFrame([(20, "new", dt.date(2026, 1, 2)), (21, "new", dt.date(2026, 1, 2))],
                              "id long, name string, day date")
DeltaRsTables(spark, sys.argv[1]).replace_partitions("t", frame, "day", [dt.date(2026, 1, 2)], {"job": "killed"})
print("committed")  # never reached: the test kills the process at the hook
"""


def _child_env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TZ": "UTC", **extra}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    return env


def _start(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A child in its own process group (so its Spark JVM can be stopped with it), output to `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, *argv], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group this test started: the child and its JVM
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def _wait_for(markers: list[Path], processes: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not all(m.exists() for m in markers):
        for process, log in zip(processes, logs):
            assert process.poll() is None, f"child exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "children did not reach the commit hook in time"
        time.sleep(0.1)


def _config_file(tmp_path: Path, raw: Path, warehouse: Path, export_root: Path | None = None) -> Path:
    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    config["paths"] = {"raw": str(raw), "warehouse": str(warehouse)}
    config["export"]["root"] = str(export_root or tmp_path / "export")
    config["spark"]["master"] = "local[1]"
    config["spark"]["conf"] = {
        "spark.sql.shuffle.partitions": "2",
        "spark.driver.memory": "1g",
        "spark.ui.enabled": "false",
    }
    config["delta"] = {"backend": "delta-rs"}
    config["quality"] = {"enabled": False}
    path = tmp_path / f"config-{warehouse.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _log_actions(table_dir: Path, version: int) -> list[dict]:
    return [json.loads(line) for line in (table_dir / "_delta_log" / f"{version:020d}.json").read_text().splitlines()]


def _files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and "_delta_log" not in p.parts}


# 1. Killed writer ----------------------------------------------------------------------------------


@pytest.fixture
def small_table(spark, tmp_path):
    """Table t with two versions: v0 = D1 and D2 rows, v1 = D2 replaced."""
    tables = DeltaRsTables(spark, str(tmp_path / "warehouse"))
    tables.replace_partitions("t", spark.createDataFrame([(1, "a", D1), (2, "b", D2)], SCHEMA), "day", [D1, D2])
    tables.replace_partitions("t", spark.createDataFrame([(3, "c", D2), (4, "d", D2)], SCHEMA), "day", [D2])
    return tables


def test_writer_killed_before_commit_leaves_table_intact_and_clean_orphans_removes_its_files(
    spark, small_table, tmp_path, capsys
):
    tables, path = small_table, Path(small_table.path("t"))
    before = tables.read("t").orderBy("id")
    before_rows, version = before.collect(), tables.version("t")
    counts = {v: tables.row_count("t", version=v) for v in range(version + 1)}
    referenced_before = _files_under(path)

    marker, log = tmp_path / "before-commit", tmp_path / "writer.log"
    writer = _start(
        ["-c", KILLED_WRITER, str(tables.root)],
        _child_env(RECPIPE_FAULT_BEFORE_COMMIT=str(marker), RECPIPE_FAULT_TABLE="t"),
        log,
    )
    try:
        _wait_for([marker], [writer], [log])
        assert marker.read_text().split() == [str(writer.pid), "t"]
        os.kill(writer.pid, signal.SIGKILL)  # between the Spark write and the Delta commit
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop_group(writer)
    assert "committed" not in log.read_text()

    # nothing changed for readers: same version, same rows, through Spark and through delta-rs
    assert tables.version("t") == version and DeltaTable(str(path)).version() == version
    assert_df_equality(tables.read("t").orderBy("id"), spark.createDataFrame(before_rows, before.schema))
    assert sorted(DeltaTable(str(path)).to_pyarrow_table().column("id").to_pylist()) == [1, 3, 4]
    # ... but the killed writer's files are on disk: a Parquet file in day=2026-01-02 and its staging dir
    leftovers = _files_under(path) - referenced_before
    orphan_parquet = [f for f in leftovers if f.startswith("day=2026-01-02/") and f.endswith(".parquet")]
    assert len(orphan_parquet) == 1, leftovers
    assert any(f.startswith("_staging/") for f in leftovers), leftovers
    assert unreferenced_files(pafs.LocalFileSystem(), str(path)) == orphan_parquet

    config = _config_file(tmp_path, tmp_path / "raw", Path(tables.root))
    clean = ["clean-orphans", "--config", str(config)]
    # the default age cutoff (60 minutes) protects writes in flight: fresh orphans are only reported
    assert main(clean) == 0
    assert "removed 0 orphans" in capsys.readouterr().out and _files_under(path) - referenced_before == leftovers
    # --dry-run lists them and deletes nothing
    assert main([*clean, "--older-than-minutes", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove data file {path / orphan_parquet[0]}" in out and "would remove staging dir" in out
    assert _files_under(path) - referenced_before == leftovers

    assert main([*clean, "--older-than-minutes", "0", "--table", "t"]) == 0
    assert "removed 2 orphans" in capsys.readouterr().out
    assert _files_under(path) == referenced_before  # orphans gone, every referenced file still there
    assert not any((path / "_staging").iterdir())
    for v, rows in counts.items():  # time travel to every version still works
        assert tables.read("t", version=v).count() == rows
        assert DeltaTable(str(path), version=v).to_pyarrow_table().num_rows == rows
    assert main(clean) == 0 and main([*clean, "--older-than-minutes", "0"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["nothing to clean", "nothing to clean"]


def test_clean_orphans_of_an_unknown_table_exits_2(small_table, tmp_path, capsys):
    config = _config_file(tmp_path, tmp_path / "raw", Path(small_table.root))
    assert main(["clean-orphans", "--config", str(config), "--table", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recpipe clean-orphans: error: no table nope under") and len(err.splitlines()) == 1


# 2. Concurrent writers --------------------------------------------------------------------------------


def _competing_commit(monkeypatch, tables, frame, partitions):
    """Stands in for the test hook: another writer commits to the same partitions right before this commit."""

    def commit_first(name):
        monkeypatch.setattr(tables_module, "_fault_point", lambda _: None)
        tables.replace_partitions(name, frame, "day", partitions, {"job": "competitor"})

    monkeypatch.setattr(tables_module, "_fault_point", commit_first)


def test_a_replace_that_lost_the_race_is_committed_after_the_winner(spark, small_table, monkeypatch):
    tables = small_table
    winner = spark.createDataFrame([(30, "winner", D2)], SCHEMA)
    _competing_commit(monkeypatch, tables, winner, [D2])
    version = tables.version("t")
    mine = spark.createDataFrame([(40, "mine", D2), (41, "mine", D2)], SCHEMA)
    assert tables.replace_partitions("t", mine, "day", [D2]) == version + 2  # after the winner's version + 1
    assert [(r.id, r.name) for r in tables.read("t").orderBy("id").collect()] == [(1, "a"), (40, "mine"), (41, "mine")]
    assert [r.id for r in tables.read("t", version=version + 1).orderBy("id").collect()] == [1, 30]
    assert unreferenced_files(pafs.LocalFileSystem(), tables.path("t")) == []


def test_a_read_modify_write_that_lost_the_race_fails_with_one_line_and_leaves_no_files(
    spark, small_table, monkeypatch
):
    tables = small_table
    winner = spark.createDataFrame([(30, "winner", D2)], SCHEMA)
    _competing_commit(monkeypatch, tables, winner, [D2])
    version = tables.version("t")
    incremented = tables.read("t", partitions=[D2]).withColumn("id", F.col("id") + 100)  # reads the table itself
    with pytest.raises(
        ConcurrentWriteError,
        match=r"^table t: another writer committed version \d+ while this "
        r"write \(started at version \d+\) was running; .* rerun the job$",
    ):
        tables.replace_partitions("t", incremented, "day", [D2])
    assert tables.version("t") == version + 1  # the winner's commit only: no lost update
    assert [r.id for r in tables.read("t").orderBy("id").collect()] == [1, 30]
    assert unreferenced_files(pafs.LocalFileSystem(), tables.path("t")) == []


@pytest.fixture(scope="module")
def synthetic_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw") / "raw"
    assert (
        main(
            [
                "generate-logs",
                "--out",
                str(raw),
                "--start-date",
                "2026-03-01",
                "--days",
                "2",
                "--users",
                "100",
                "--items",
                "30",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    return raw


def test_two_ingests_of_the_same_day_racing_to_commit_give_one_consistent_result(spark, synthetic_raw, tmp_path):
    day = dt.date(2026, 3, 2)
    warehouse, reference = tmp_path / "warehouse", tmp_path / "reference"
    config_path = _config_file(tmp_path, synthetic_raw, warehouse)
    config = yaml.safe_load(config_path.read_text())
    tables = open_tables(spark, str(warehouse), "delta-rs")
    ingest(spark, tables, config, [day - dt.timedelta(days=1)])  # the tables exist: the race is on overwrites
    clean = open_tables(spark, str(reference), "delta-rs")
    ingest(spark, clean, {**config, "paths": {**config["paths"], "warehouse": str(reference)}}, [day])
    version = tables.version("events")

    markers = [tmp_path / "writer-a", tmp_path / "writer-b"]
    logs = [tmp_path / "writer-a.log", tmp_path / "writer-b.log"]
    argv = ["-m", "jobs.cli", "ingest", "--config", str(config_path), "--date", day.isoformat()]
    writers = [
        _start(argv, _child_env(RECPIPE_FAULT_BEFORE_COMMIT=str(m), RECPIPE_FAULT_TABLE="events"), log)
        for m, log in zip(markers, logs)
    ]
    try:
        _wait_for(markers, writers, logs)  # both have written their files, neither has committed
        for marker in markers:
            marker.unlink()  # release both at once
        codes = [w.wait(timeout=CHILD_TIMEOUT) for w in writers]
    finally:
        for writer in writers:
            _stop_group(writer)
    outputs = [log.read_text() for log in logs]

    # both held their events files at the commit hook; the run that started first finds that the other
    # started after it and owns the day, so it stops before committing anything and says so; the newer
    # run commits every table and the day's ingest_runs rows; the loser exits 5 (a concurrent writer won:
    # Airflow retries it, and the retry is a rerun of the day)
    assert sorted(codes) == [0, 5], outputs
    loser = outputs[codes.index(5)]
    assert "stopped before committing events: another ingest run" in loser, loser
    assert "this run had committed nothing" in loser, loser
    assert tables.version("events") == version + 1
    assert ingest_runs.incomplete_days(tables, [day]) == []
    events = tables.read("events", partitions=[day])
    assert events.groupBy("event_id").count().where("count > 1").count() == 0
    assert_df_equality(events.orderBy("event_id"), clean.read("events").orderBy("event_id"), ignore_nullable=True)
    for name in ("events_quarantine", "users", "items"):
        ours, theirs = tables.read(name, partitions=[day]).collect(), clean.read(name, partitions=[day]).collect()
        assert sorted(map(tuple, ours), key=str) == sorted(map(tuple, theirs), key=str), name
    # the loser removed the files it never committed (no orphans), day 1 is untouched
    assert unreferenced_files(pafs.LocalFileSystem(), str(warehouse / "events")) == []
    assert tables.row_count("events", partitions=[day - dt.timedelta(days=1)]) == tables.row_count(
        "events", version=version, partitions=[day - dt.timedelta(days=1)]
    )


def test_an_ingest_killed_between_its_commits_leaves_the_day_refused_until_it_is_rerun(spark, synthetic_raw, tmp_path):
    day = dt.date(2026, 3, 2)
    warehouse = tmp_path / "warehouse"
    config_path = _config_file(tmp_path, synthetic_raw, warehouse)
    config = yaml.safe_load(config_path.read_text())
    tables = open_tables(spark, str(warehouse), "delta-rs")
    ingest(spark, tables, config, [day - dt.timedelta(days=1), day])
    complete = {
        name: sorted(map(tuple, tables.read(name, partitions=[day]).collect()), key=str)
        for name in ("events", "events_quarantine")
    }

    marker, log = tmp_path / "before-quarantine", tmp_path / "killed.log"
    argv = ["-m", "jobs.cli", "ingest", "--config", str(config_path), "--date", day.isoformat()]
    child = _start(
        argv, _child_env(RECPIPE_FAULT_BEFORE_COMMIT=str(marker), RECPIPE_FAULT_TABLE="events_quarantine"), log
    )
    try:
        _wait_for([marker], [child], [log])  # events committed, quarantine not yet
    finally:
        _stop_group(child)
    assert [d for d, _ in ingest_runs.incomplete_days(tables, [day])] == [day]
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        code = main(["snapshot", "--config", str(config_path), "--date", day.isoformat()])
    assert code == 2 and "the ingest of 2026-03-02 is incomplete" in printed.getvalue(), printed.getvalue()

    ingest(spark, tables, config, [day])  # the next run restores the invariant
    assert ingest_runs.incomplete_days(tables, [day]) == []
    for name, rows in complete.items():
        assert sorted(map(tuple, tables.read(name, partitions=[day]).collect()), key=str) == rows, name


# 3. Corrupted and truncated raw drops -----------------------------------------------------------------


def _event(event_id: str, day: dt.date) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": "impression",
            "user_id": 1,
            "item_id": 10,
            "event_time": f"{day.isoformat()}T08:00:00.000Z",
            "device": "mobile",
            "page": "home",
            "position": 0,
        }
    )


def _drop(raw: Path, day: dt.date, files: dict[str, bytes]) -> Path:
    directory = raw_drops.drop_dir(raw, "events", day)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)
    (directory / raw_drops.SUCCESS_MARKER).touch()
    return directory


def test_truncated_and_binary_drops_are_quarantined_and_nothing_else_is_lost(spark, tmp_path):
    day1, day2, day3 = dt.date(2026, 1, 5), dt.date(2026, 1, 6), dt.date(2026, 1, 7)
    raw = tmp_path / "raw"
    good = {day: [_event(f"{day.day}-{i}", day) for i in range(3)] for day in (day1, day2, day3)}
    cut = _event("5-cut", day1)
    _drop(raw, day1, {"part-00000.jsonl": "\n".join(good[day1][:2]).encode() + b"\n" + cut[: len(cut) // 2].encode()})
    garbage = gzip.compress(("\n".join(_event(f"6-gz{i}", day2) for i in range(50)) + "\n").encode(), mtime=0)
    _drop(raw, day2, {"part-00000.jsonl": ("\n".join(good[day2]) + "\n").encode(), "part-00001.jsonl": garbage})
    _drop(raw, day3, {"part-00000.jsonl": ("\n".join(good[day3]) + "\n").encode()})
    config = {"paths": {"raw": str(raw), "warehouse": str(tmp_path / "warehouse")}, "quality": {"enabled": False}}
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")

    ingest(spark, tables, config, [day1, day2, day3])

    kept_lines = good[day1][:2] + good[day2] + good[day3]
    assert sorted(r.event_id for r in tables.read("events").collect()) == sorted(
        json.loads(line)["event_id"] for line in kept_lines
    )
    quarantine = tables.read("events_quarantine")
    truncated = quarantine.where(F.col("drop_date") == day1).collect()
    assert [(r.raw_record, r.reason) for r in truncated] == [(cut[: len(cut) // 2], "malformed JSON line")]
    assert truncated[0].source_file.endswith("events/dt=2026-01-05/part-00000.jsonl")
    binary = quarantine.where(F.col("drop_date") == day2)
    garbage_lines = (
        spark.read.text(str(raw_drops.drop_dir(raw, "events", day2) / "part-00001.jsonl"))
        .where(F.trim("value") != "")
        .count()
    )
    assert binary.count() == garbage_lines > 0  # every garbage line quarantined, none in events
    reasons = {r.reason for r in binary.collect()}  # a few garbage lines may happen to be valid UTF-8
    assert "not UTF-8 text" in reasons and reasons <= {"not UTF-8 text", "malformed JSON line"}
    assert {r.source_file.rsplit("/", 1)[-1] for r in binary.collect()} == {"part-00001.jsonl"}
    # the quarantine stays readable by Arrow-based engines: no invalid UTF-8 stored in a string column
    records = DeltaTable(tables.path("events_quarantine")).to_pyarrow_table().column("raw_record")
    records.validate(full=True)
    assert len(records.to_pylist()) == 1 + garbage_lines
    assert pl.read_delta(tables.path("events_quarantine")).height == 1 + garbage_lines


# 4. Killed export ------------------------------------------------------------------------------------


def test_export_staging_left_by_a_killed_export_is_invisible_and_cleaned_when_stale(spark, tmp_path, capsys):
    export_root = tmp_path / "export"
    model_root = export_root / "deepfm"
    (model_root / "1" / "variables").mkdir(parents=True)
    (model_root / "1" / "saved_model.pb").write_bytes(b"published")
    stale = model_root / ".staging-killed"
    (stale / "model" / "variables").mkdir(parents=True)
    (stale / "model" / "saved_model.pb").write_bytes(b"half written")
    in_flight = model_root / ".staging-running"
    (in_flight / "model").mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    for path in [stale, *stale.rglob("*")]:
        os.utime(path, (two_hours_ago, two_hours_ago))

    assert published_versions(model_root) == [1]  # what TF Serving would load
    assert next_version(model_root) == 2

    warehouse = tmp_path / "warehouse"
    DeltaRsTables(spark, str(warehouse)).replace_partitions(
        "t", spark.createDataFrame([(1, "a", D1)], SCHEMA), "day", [D1]
    )
    config = _config_file(tmp_path, tmp_path / "raw", warehouse, export_root)
    assert main(["clean-orphans", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"removed export staging dir {stale}" in out and "kept (newer than the cutoff" in out
    assert not stale.exists() and in_flight.exists()  # the export still running is not touched
    assert (model_root / "1" / "saved_model.pb").read_bytes() == b"published"
    assert published_versions(model_root) == [1] and next_version(model_root) == 2


def test_an_export_killed_while_writing_leaves_the_published_version_served(ml100k_warehouse, tmp_path, capsys):
    """A real `recpipe export` process SIGKILLed while it writes its SavedModel: the version TF Serving
    serves is untouched, the half-written staging dir is not a version, and clean-orphans removes it."""
    from jobs import export_model as exporting

    config = yaml.safe_load((REPO / "conf" / "movielens.yaml").read_text())
    config["paths"]["warehouse"] = ml100k_warehouse.root
    config["export"] = {**config.get("export", {}), "root": str(tmp_path / "serving")}
    path = tmp_path / "movielens.yaml"
    path.write_text(yaml.safe_dump(config))
    model_root = tmp_path / "serving" / "lr"
    assert exporting.export_model(config, "lr")["version"] == 1
    published = {p.relative_to(model_root): p.read_bytes() for p in (model_root / "1").rglob("*") if p.is_file()}

    log = tmp_path / "export.log"
    export = _start(["-m", "jobs.cli", "export", "--config", str(path), "--model", "lr", "--force"], _child_env(), log)
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not any(model_root.glob(".staging-*/model/*")):  # the SavedModel is being written
            assert export.poll() is None, f"export exited with {export.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the export did not start writing in time"
            time.sleep(0.05)
    finally:
        _stop_group(export)
    assert export.returncode == -signal.SIGKILL
    (staging,) = model_root.glob(".staging-*")
    assert published_versions(model_root) == [1] and next_version(model_root) == 2
    assert {
        p.relative_to(model_root): p.read_bytes() for p in (model_root / "1").rglob("*") if p.is_file()
    } == published

    empty = tmp_path / "empty-warehouse"  # only the export root is cleaned, not the session's shared warehouse
    empty.mkdir()
    assert main(["clean-orphans", "--config", str(path), "--warehouse", str(empty), "--older-than-minutes", "0"]) == 0
    assert f"removed export staging dir {staging}" in capsys.readouterr().out
    assert not staging.exists() and published_versions(model_root) == [1]
