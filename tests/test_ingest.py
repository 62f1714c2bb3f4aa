"""Ingestion of raw drops: validation, quarantine reasons, dedup, idempotent reruns, missing drops."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from chispa import assert_df_equality

from features import raw_drops
from features.errors import PipelineInputError
from features.tables import open_tables
from jobs.ingest import ingest

DAY = dt.date(2026, 1, 5)


def _event(event_id, event_type="impression", user_id=1, item_id=10, event_time="2026-01-05T08:00:00.000Z", **extra):
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": event_type,
            "user_id": user_id,
            "item_id": item_id,
            "event_time": event_time,
            **extra,
        }
    )


def _write_lines(raw_root, table, day, lines):
    directory = raw_drops.drop_dir(raw_root, table, day)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "part-00000.jsonl").write_text("\n".join(lines) + "\n")
    (directory / raw_drops.SUCCESS_MARKER).touch()


EVENT_LINES = [
    _event("e1", device="mobile", page="home", position=0),
    _event("e2", "click", event_time="2026-01-05T08:01:30.000Z", device="mobile", page="home", position=0, value=12.5),
    _event("e3", "rating", item_id=11, value=4),
    _event("e4", event_time="2026-01-03T23:00:00.000Z"),  # late, within 48 h: valid
    _event("e1", device="mobile", page="home", position=0),  # duplicate event id
    _event("e5", user_id=None),  # missing key
    _event("e6", user_id="abc"),  # bad type
    _event("e7", "view"),  # unknown event type
    _event("e8", event_time="2025-12-30T10:00:00.000Z"),  # too late for this drop
    _event("e9", position=5000),  # out of range
    '{"event_id": "e10", "event_type": ',  # truncated line
    "",  # blank line: no data
]


@pytest.fixture
def config(tmp_path):
    return {
        "paths": {"raw": str(tmp_path / "raw"), "warehouse": str(tmp_path / "warehouse")},
        "ingest": {"allowed_lateness_hours": 48, "allowed_clock_skew_minutes": 60},
        "quality": {"enabled": False},
    }  # row-level validation here; the day-level gate: tests/test_quality.py


@pytest.fixture
def tables(spark, config):
    return open_tables(spark, config["paths"]["warehouse"], "delta-rs")


def test_valid_rows_are_typed_and_every_bad_line_is_quarantined_with_a_reason(spark, config, tables):
    _write_lines(config["paths"]["raw"], "events", DAY, EVENT_LINES)
    summary = {s["table"]: s for s in ingest(spark, tables, config, [DAY])}

    utc = dt.timezone.utc
    expected = spark.createDataFrame(
        [
            ("e1", "impression", 1, 10, dt.datetime(2026, 1, 5, 8, tzinfo=utc), "mobile", "home", 0, None, DAY),
            ("e2", "click", 1, 10, dt.datetime(2026, 1, 5, 8, 1, 30, tzinfo=utc), "mobile", "home", 0, 12.5, DAY),
            ("e3", "rating", 1, 11, dt.datetime(2026, 1, 5, 8, tzinfo=utc), None, None, None, 4.0, DAY),
            ("e4", "impression", 1, 10, dt.datetime(2026, 1, 3, 23, tzinfo=utc), None, None, None, None, DAY),
        ],
        "event_id string, event_type string, user_id long, item_id long, event_time timestamp, device string, "
        "page string, position int, value double, drop_date date",
    )
    assert_df_equality(tables.read("events").orderBy("event_id"), expected, ignore_nullable=True)

    reasons = {r.raw_record: r.reason for r in tables.read("events_quarantine").collect()}
    assert len(reasons) == 7  # every bad line, nothing lost: 4 valid + 7 quarantined = 11 non-blank lines
    assert reasons[EVENT_LINES[5]] == "missing user_id"
    assert reasons[EVENT_LINES[6]] == "bad long in user_id: 'abc'"
    assert reasons[EVENT_LINES[7]] == "unknown event_type 'view'"
    assert reasons[EVENT_LINES[8]] == "event_time outside the drop's window"
    assert reasons[EVENT_LINES[9]] == "position above 1000"
    assert reasons[EVENT_LINES[10]] == "malformed JSON line"
    assert reasons[EVENT_LINES[4]] == "duplicate event_id"
    assert summary["events"]["rows"] == 4 and summary["events"]["quarantined"] == 7
    assert all(
        r.source_file.endswith("dt=2026-01-05/part-00000.jsonl") for r in tables.read("events_quarantine").collect()
    )


def test_rerunning_a_date_leaves_identical_content(spark, config, tables):
    raw = config["paths"]["raw"]
    _write_lines(raw, "events", DAY, EVENT_LINES)
    _write_lines(raw, "users", DAY, [json.dumps({"user_id": 1, "age": 30, "gender": "F"})])
    ingest(spark, tables, config, [DAY])
    first = {name: tables.read(name) for name in ("events", "events_quarantine", "users")}
    first_rows = {name: sorted(map(tuple, frame.collect()), key=str) for name, frame in first.items()}
    version = tables.version("events")

    ingest(spark, tables, config, [DAY])
    assert tables.version("events") == version + 1
    for name, rows in first_rows.items():
        assert sorted(map(tuple, tables.read(name).collect()), key=str) == rows, name
    # the run recorded what it read
    metadata = tables.history("events", 1)[0]["metadata"]
    assert metadata["job"] == "ingest" and metadata["partitions"] == [DAY.isoformat()]
    assert metadata["inputs"][DAY.isoformat()][0].endswith("part-00000.jsonl")


def test_a_corrected_drop_replaces_the_partition(spark, config, tables):
    raw = config["paths"]["raw"]
    _write_lines(raw, "events", DAY, EVENT_LINES[:3])
    ingest(spark, tables, config, [DAY])
    _write_lines(raw, "events", DAY, EVENT_LINES[:1])
    ingest(spark, tables, config, [DAY])
    assert [r.event_id for r in tables.read("events").collect()] == ["e1"]
    assert tables.read("events", version=tables.version("events") - 1).count() == 3


def test_missing_drop_is_an_error_naming_the_path(spark, config, tables):
    _write_lines(config["paths"]["raw"], "events", DAY, EVENT_LINES[:1])
    next_day = DAY + dt.timedelta(days=1)
    with pytest.raises(PipelineInputError, match=r"events drop for 2026-01-06 is missing: .*events/dt=2026-01-06"):
        ingest(spark, tables, config, [DAY, next_day])
    assert not tables.exists("events")  # nothing written when the range is incomplete


def test_incomplete_drop_without_success_marker_is_not_ingested(spark, config, tables):
    _write_lines(config["paths"]["raw"], "events", DAY, EVENT_LINES[:1])
    (raw_drops.drop_dir(config["paths"]["raw"], "events", DAY) / raw_drops.SUCCESS_MARKER).unlink()
    with pytest.raises(PipelineInputError, match="incomplete"):
        ingest(spark, tables, config, [DAY])


def test_allow_missing_skips_days_without_a_drop(spark, config, tables):
    _write_lines(config["paths"]["raw"], "events", DAY, EVENT_LINES[:2])
    config["ingest"]["allow_missing_drops"] = True
    ingest(spark, tables, config, [DAY, DAY + dt.timedelta(days=1)])
    assert tables.read("events").count() == 2


def test_dimension_rows_are_validated_too(spark, config, tables):
    raw = config["paths"]["raw"]
    _write_lines(raw, "events", DAY, EVENT_LINES[:1])
    _write_lines(
        raw,
        "items",
        DAY,
        [
            json.dumps(
                {"item_id": 10, "title": "A", "category": "Drama", "genres": "Drama|War", "release_date": "1995-01-01"}
            ),
            json.dumps({"item_id": 11, "title": "B"}),  # category is required
            json.dumps({"item_id": 12, "category": "Drama", "release_date": "01-Jan-1995"}),
        ],
    )
    ingest(spark, tables, config, [DAY])
    items = tables.read("items").collect()
    assert [(r.item_id, r.release_date) for r in items] == [(10, dt.date(1995, 1, 1))]
    assert sorted(r.reason for r in tables.read("items_quarantine").collect()) == [
        "bad date in release_date: '01-Jan-1995'",
        "missing category",
    ]
