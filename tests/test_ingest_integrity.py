"""Ingest under real upstream behaviour: missing drops never delete data, redelivered events count once,
every file of a drop is read once or listed as skipped, and a day's ingest has one commit point
(ingest_runs) that snapshot and samples honour, with a quality gate that needs passed results computed
on the data it reads."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil

import pytest

from features import ingest_runs, logs, raw_drops
from features.errors import PipelineInputError, QualityCheckFailed
from features.tables import open_tables
from jobs import quality_gate
from jobs.ingest import format_summary, ingest

D1, D2, D3, D4 = (dt.date(2026, 2, d) for d in (1, 2, 3, 4))


def _event(event_id, day, hour=8, event_type="impression", user_id=1, item_id=10, **extra):
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": event_type,
            "user_id": user_id,
            "item_id": item_id,
            "event_time": f"{day.isoformat()}T{hour:02d}:00:00.000Z",
            **extra,
        }
    )


def _drop(raw_root, table, day, lines, name="part-00000.jsonl"):
    directory = raw_drops.drop_dir(raw_root, table, day)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text("\n".join(lines) + "\n")
    (directory / raw_drops.SUCCESS_MARKER).touch()
    return directory


@pytest.fixture
def config(tmp_path):
    return {
        "paths": {"raw": str(tmp_path / "raw"), "warehouse": str(tmp_path / "warehouse")},
        "ingest": {"allowed_lateness_hours": 48, "allowed_clock_skew_minutes": 60},
        "quality": {"enabled": False},
    }


@pytest.fixture
def tables(spark, config):
    return open_tables(spark, config["paths"]["warehouse"], "delta-rs")


def _rows(tables, name, **kwargs):
    return sorted(map(tuple, tables.read(name, **kwargs).collect()), key=str)


# 1. A missing drop never deletes data -------------------------------------------------------------


def test_a_day_without_a_drop_keeps_its_partitions(spark, config, tables, capsys):
    raw = config["paths"]["raw"]
    _drop(raw, "events", D1, [_event("a1", D1)])
    _drop(raw, "users", D1, [json.dumps({"user_id": 1, "age": 30, "gender": "F"})])
    _drop(raw, "events", D2, [_event("b1", D2), _event("b2", D2)])
    ingest(spark, tables, config, [D1, D2])
    users, events = _rows(tables, "users"), _rows(tables, "events")
    assert len(users) == 1 and len(events) == 3

    shutil.rmtree(raw_drops.drop_dir(raw, "users", D1))  # the optional users drop of D1 is gone
    logs.configure()  # what the CLI does: the job's log lines on stderr, each with its run id
    capsys.readouterr()
    ingest(spark, tables, config, [D1])
    assert _rows(tables, "users") == users
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "users: no complete drop" in x]
    found = re.search(
        r" WARNING run=([0-9a-f]{12}) jobs\.ingest: users: no complete drop for 2026-02-01: partitions "
        r"left untouched$",
        line,
    )
    assert found, line  # the id of this run, as its ingest_runs rows record it
    assert found.group(1) in {r.run_id for r in tables.read("ingest_runs").select("run_id").collect()}

    shutil.rmtree(raw_drops.drop_dir(raw, "events", D2))  # with --allow-missing, a missing events drop too
    ingest(spark, tables, {**config, "ingest": {**config["ingest"], "allow_missing_drops": True}}, [D1, D2])
    assert _rows(tables, "events") == events
    assert ingest_runs.incomplete_days(tables, [D1, D2]) == []
    with pytest.raises(PipelineInputError, match=r"events drop for 2026-02-02 is missing"):
        ingest(spark, tables, config, [D2])  # required without it: an error, nothing written
    assert _rows(tables, "events") == events


def test_an_empty_complete_drop_replaces_the_day(spark, config, tables):
    raw = config["paths"]["raw"]
    _drop(raw, "items", D1, [json.dumps({"item_id": 10, "title": "A", "category": "Drama"})])
    _drop(raw, "events", D1, [_event("a1", D1)])
    ingest(spark, tables, config, [D1])
    directory = raw_drops.drop_dir(raw, "items", D1)
    (directory / "part-00000.jsonl").unlink()  # upstream says: no item changed that day
    ingest(spark, tables, config, [D1])
    assert tables.read("items").count() == 0


# 2. Redelivered events count once -----------------------------------------------------------------


def test_an_event_redelivered_in_later_drops_is_quarantined_once_ingested(spark, config, tables):
    raw = config["paths"]["raw"]
    late = _event("x", D2, hour=23)  # valid in the drops of D2, D3 and D4 (48 h lateness)
    _drop(raw, "events", D2, [late, _event("b", D2)])
    _drop(raw, "events", D3, [late, _event("c", D3)])  # resent a day later
    _drop(raw, "events", D4, [late, _event("d", D4)])  # and two days later

    ingest(spark, tables, config, [D2])
    ingest(spark, tables, config, [D3, D4])  # one run over two later drops
    events = tables.read("events")
    assert sorted((r.event_id, r.drop_date) for r in events.collect()) == [("b", D2), ("c", D3), ("d", D4), ("x", D2)]
    reasons = sorted((r.drop_date, r.reason) for r in tables.read("events_quarantine").collect())
    assert reasons == [
        (D3, "duplicate event_id (already ingested from drop 2026-02-02)"),
        (D4, "duplicate event_id (already ingested from drop 2026-02-02)"),
    ]

    before = {name: _rows(tables, name) for name in ("events", "events_quarantine")}
    ingest(spark, tables, config, [D3])  # rerun of a later drop: idempotent
    ingest(spark, tables, config, [D2])  # rerun of the first drop: keeps its copy
    ingest(spark, tables, config, [D2, D3, D4])  # the whole range in one run: the same
    assert {name: _rows(tables, name) for name in before} == before


def test_redeliveries_within_one_run_keep_the_earliest_drop_and_the_horizon_is_configurable(spark, config, tables):
    raw = config["paths"]["raw"]
    late = _event("x", D2, hour=23)
    _drop(raw, "events", D2, [late])
    _drop(raw, "events", D4, [late])
    ingest(spark, tables, config, [D2, D4])
    assert [r.drop_date for r in tables.read("events").collect()] == [D2]
    assert [r.reason for r in tables.read("events_quarantine").collect()] == [
        "duplicate event_id (already ingested from drop 2026-02-02)"
    ]

    narrow = {**config, "ingest": {**config["ingest"], "redelivery_horizon_days": 1}}
    ingest(spark, tables, narrow, [D4])  # D2 is 2 days away: beyond a 1-day horizon
    assert sorted(r.drop_date for r in tables.read("events").collect()) == [D2, D4]


def test_redelivered_clicks_do_not_double_the_daily_counts(spark, config, tables):
    from features.daily_aggregates import with_event_date

    raw = config["paths"]["raw"]
    click = _event("k", D2, hour=22, event_type="click", value=10.0, device="mobile", page="home", position=1)
    _drop(raw, "events", D2, [click])
    _drop(raw, "events", D3, [click])
    ingest(spark, tables, config, [D2])
    ingest(spark, tables, config, [D3])
    clicks = with_event_date(tables.read("events")).where("event_type = 'click'").groupBy("event_date").count()
    assert [(r.event_date, r["count"]) for r in clicks.collect()] == [(D2, 1)]


# 3. Every file of a drop is read once or listed as skipped -------------------------------------------


def test_file_names_are_literal_and_other_entries_are_listed_as_skipped(spark, config, tables, tmp_path):
    raw = config["paths"]["raw"]
    names = ["p[1].jsonl", "a:b.jsonl", "x{y}*?.jsonl", "plus+space %20.jsonl", "p1.jsonl"]
    for i, name in enumerate(names):
        directory = _drop(raw, "events", D1, [_event(f"e{i}", D1), f"junk {i}"], name=name)
    (directory / "nested").mkdir()
    (directory / "nested" / "part.jsonl").write_text(_event("nested", D1) + "\n")
    (directory / "_partial.jsonl").write_text(_event("underscore", D1) + "\n")
    (directory / ".hidden.jsonl").write_text(_event("hidden", D1) + "\n")
    outside = tmp_path / "outside.jsonl"
    outside.write_text(_event("linked", D1) + "\n")
    os.symlink(outside, directory / "link.jsonl")

    summary = ingest(spark, tables, config, [D1])
    assert sorted(r.event_id for r in tables.read("events").collect()) == [f"e{i}" for i in range(len(names))]
    quarantined = {(r.source_file.rsplit("/", 1)[1], r.raw_record) for r in tables.read("events_quarantine").collect()}
    assert quarantined == {(name, f"junk {i}") for i, name in enumerate(names)}  # each file once, by its own name
    printed = format_summary(summary)
    for entry, why in [
        ("nested", "subdirectory (not read)"),
        ("_partial.jsonl", "name starts with '_' or '.'"),
        (".hidden.jsonl", "name starts with '_' or '.'"),
        ("link.jsonl", "symlink (not followed)"),
    ]:
        assert f"{entry} ({why})" in printed, printed
    skipped = tables.history("events", 1)[0]["metadata"]["skipped"][D1.isoformat()]
    assert len(skipped) == 4


def test_quarantined_lines_keep_their_literal_file_name(spark, config, tables):
    _drop(config["paths"]["raw"], "events", D1, ["not json", _event("ok", D1)], name="p[1] +x.jsonl")
    ingest(spark, tables, config, [D1])
    (row,) = tables.read("events_quarantine").collect()
    assert row.source_file.endswith("dt=2026-02-01/p[1] +x.jsonl") and row.raw_record == "not json"


# 5. One commit point per day's ingest ----------------------------------------------------------------


def test_a_day_whose_ingest_did_not_finish_is_refused_until_it_is_rerun(spark, config, tables):
    raw = config["paths"]["raw"]
    _drop(raw, "events", D1, [_event("a", D1), "junk"])
    ingest(spark, tables, config, [D1])
    assert ingest_runs.incomplete_days(tables, [D1]) == []
    committed = {r.table_name: r.table_version for r in tables.read("ingest_runs").collect()}
    assert committed == {"events": tables.version("events"), "events_quarantine": tables.version("events_quarantine")}

    # a run that died after its events commit (before quarantine and manifest): simulated by a bare replace
    _drop(raw, "events", D1, [_event("a", D1), _event("b", D1)])
    tables.replace_partitions("events", tables.read("events").limit(0), "drop_date", [D1], {"job": "crashed"})
    assert [d for d, _ in ingest_runs.incomplete_days(tables, [D1])] == [D1]
    with pytest.raises(PipelineInputError, match=r"snapshot refused: the ingest of 2026-02-01 is incomplete"):
        ingest_runs.require_complete(tables, [D1], "snapshot")
    from jobs.build_snapshot import build_snapshots

    tables.replace_partitions(
        "events", tables.read("events", version=tables.version("events") - 1), "drop_date", [D1], {"job": "crashed"}
    )  # the same rows, another run's files
    with pytest.raises(
        PipelineInputError, match=r"ingest of 2026-02-01 is incomplete.*rerun recpipe ingest --date 2026-02-01"
    ):
        build_snapshots(spark, tables, config, [D1])

    ingest(spark, tables, config, [D1])  # the next run restores the day
    assert ingest_runs.incomplete_days(tables, [D1]) == []
    assert sorted(r.event_id for r in tables.read("events").collect()) == ["a", "b"]
    assert [r.raw_record for r in tables.read("events_quarantine").collect()] == []


def test_a_run_that_lost_the_day_to_a_newer_run_stops_and_says_what_it_committed(spark, config, tables):
    raw = config["paths"]["raw"]
    _drop(raw, "events", D1, [_event("a", D1)])
    run = {"run_id": "older", "job": "ingest"}
    started = ingest_runs.start(tables, run, [D1])
    ingest(spark, tables, config, [D1])  # a newer run starts and completes meanwhile
    with pytest.raises(
        ingest_runs.IngestRaceLost,
        match=r"ingest run older stopped before committing events: another ingest run .* "
        r"started on 2026-02-01 after it .* this run had committed nothing",
    ):
        ingest_runs.check_still_owner(tables, run, [D1], started, [], "committing events")
    assert ingest_runs.incomplete_days(tables, [D1]) == []


# 6. The quality gate needs a pass on the data it reads ------------------------------------------------


def test_samples_quality_gate_needs_results_on_the_versions_it_reads(spark, config, tables):
    checked = {**config, "quality": {"enabled": True, "tables": {"events": {"row_count_change": None}}}}
    _drop(config["paths"]["raw"], "events", D1, [_event(f"a{i}", D1, device="tv", page="home") for i in range(5)])
    ingest(spark, tables, checked, [D1])
    version = tables.version("events")
    assert quality_gate.unpassed(tables, checked, "events", [D1], version) == []
    assert quality_gate.unpassed(tables, config, "events", [D1], version) == []  # checks off: nothing required

    # the events of D1 changed after the checks ran (e.g. a run killed before its quality commit)
    tables.replace_partitions("events", tables.read("events").limit(3), "drop_date", [D1], {"job": "other"})
    (problem,) = quality_gate.unpassed(tables, checked, "events", [D1], tables.version("events"))
    assert problem == (
        f"events 2026-02-01: quality results were computed on version {version}, and the partition "
        f"changed since (read at version {tables.version('events')})"
    )
    # no results at all
    assert quality_gate.unpassed(tables, checked, "events", [D2], version) == [
        "events 2026-02-02: no quality results recorded (the checks did not run or were lost)"
    ]


def test_samples_refuse_a_day_whose_quality_results_are_lost(spark, config, tables):
    from jobs.build_samples import _check_quality
    from jobs.build_snapshot import build_snapshots

    checked = {**config, "quality": {"enabled": True, "tables": {"events": {"row_count_change": None}}}}
    _drop(config["paths"]["raw"], "events", D1, [_event(f"a{i}", D1, device="tv", page="home") for i in range(5)])
    ingest(spark, tables, checked, [D1])
    build_snapshots(spark, tables, checked, [D1])
    versions = {name: tables.version(name) for name in ("events", "user_snapshot", "item_snapshot")}
    _check_quality(tables, checked, [D2], versions)  # D1's events and snapshots passed on these versions
    kept = tables.read("quality").where("table_name != 'events'")  # e.g. a run killed before its quality commit
    tables.replace_partitions("quality", kept, "check_date", [D1], {"job": "lost"})
    with pytest.raises(QualityCheckFailed, match=r"samples refused: events 2026-02-01: no quality results recorded"):
        _check_quality(tables, checked, [D2], versions)


def test_redelivered_events_do_not_count_as_invalid_lines_in_the_quarantine_rate(spark, config, tables):
    checked = {**config, "quality": {"enabled": True, "tables": {"events": {"row_count_change": None}}}}
    first = [_event(f"a{i}", D1, hour=20, device="tv", page="home") for i in range(10)]
    _drop(config["paths"]["raw"], "events", D1, first)
    _drop(
        config["paths"]["raw"],
        "events",
        D2,
        first[:5] + [_event(f"b{i}", D2, device="tv", page="home") for i in range(10)] + ["junk"],
    )
    ingest(spark, tables, checked, [D1])
    with pytest.raises(QualityCheckFailed, match=r"events 2026-02-02 quarantine_rate = 0.0909"):
        ingest(spark, tables, checked, [D2])  # 1 invalid line of 11; the 5 resent ones are not invalid
    rate = tables.read("quality").where("check = 'quarantine_rate' AND check_date = date'2026-02-02'").first()
    assert rate.detail == "1 of 11 lines invalid (duplicates not counted)"
    assert tables.read("events_quarantine").where("drop_date = date'2026-02-02'").count() == 6


def test_an_event_resent_beyond_its_window_is_labelled_a_redelivery(spark, config, tables):
    raw = config["paths"]["raw"]
    D5 = D1 + dt.timedelta(days=4)
    old = _event("x", D2, hour=8)  # in D5's drop it is older than the 48 h window
    _drop(raw, "events", D2, [old])
    _drop(raw, "events", D5, [old, _event("too-old", D2, hour=9), _event("e", D5)])
    ingest(spark, tables, config, [D2])
    ingest(spark, tables, config, [D5])
    reasons = sorted(
        (json.loads(r.raw_record)["event_id"], r.reason)
        for r in tables.read("events_quarantine").where(f"drop_date = date'{D5}'").collect()
    )
    assert reasons == [
        ("too-old", "event_time outside the drop's window"),
        ("x", "duplicate event_id (already ingested from drop 2026-02-02)"),
    ]
    ingest(spark, tables, config, [D2, D5])  # the same in one run
    assert (
        sorted(
            (json.loads(r.raw_record)["event_id"], r.reason)
            for r in tables.read("events_quarantine").where(f"drop_date = date'{D5}'").collect()
        )
        == reasons
    )
