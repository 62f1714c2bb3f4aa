"""Strict parsing of raw JSON lines and value checks (features/ingest.py): one case per rule, each with
its expected quarantine reason written by hand, and every non-blank line in exactly one output."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from features.errors import PipelineInputError
from features.ingest import DropWindow, parse_raw_lines, validate
from features.schemas import RangeOverrideError, apply_range_overrides, load_schema, parse_schema

DAY = dt.date(2026, 1, 5)
EVENTS = load_schema("events")
SOURCE = "raw/events/dt=2026-01-05/part-00000.jsonl"
HEAD = '"event_type": "impression", "user_id": 1, "item_id": 10, "event_time": "2026-01-05T08:00:00.000Z"'


def _event(event_id, event_type="impression", **extra) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": event_type,
            "user_id": 1,
            "item_id": 10,
            "event_time": "2026-01-05T08:00:00.000Z",
            **extra,
        }
    )


def _line(event_id: str, tail: str = "") -> str:
    """A line written by hand, for JSON that json.dumps will not produce."""
    return '{"event_id": "%s", %s%s}' % (event_id, HEAD, tail)


VALID = [  # (event_id, line)
    ("ok-whitespace", "  \t" + _event("ok-whitespace") + " \t "),
    ("ok-numeric-strings", _event("ok-numeric-strings", user_id="12", position="3", value="2.5")),
    ("ok-null-is-absent", _event("ok-null-is-absent", device=None, page=None, value=None)),
    ("ok-surrogate-pair-\U0001f600", _line("ok-surrogate-pair-\\ud83d\\ude00")),  # a valid pair: one character
    ("ok-unknown-key-ignored", _event("ok-unknown-key-ignored", campaign={"id": [1, 2]})),
    ("ok-rating-1", _event("ok-rating-1", "rating", value=1)),
    ("ok-rating-5", _event("ok-rating-5", "rating", value=5.0)),
    ("ok-click-one-day", _event("ok-click-one-day", "click", value=86400)),
    ("ok-purchase", _event("ok-purchase", "purchase", value=999.99)),
    ("ok-like-without-value", _event("ok-like-without-value", "like")),
    ("ok-impression-value", _event("ok-impression-value", value=3)),
    ("dup-1", _event("dup-1", device="mobile")),
    ("sur-1", _event("sur-1")),
]

QUARANTINED = [  # (line, reason)
    # more than one JSON value on the line, or trailing junk
    (_event("two-objects") + _event("two-objects-b"), "malformed JSON line (trailing text after the object)"),
    (_event("two-objects-space") + " " + _event("x"), "malformed JSON line (trailing text after the object)"),
    (_event("junk") + " xyz", "malformed JSON line (trailing text after the object)"),
    (_event("nul") + "\x00", "malformed JSON line (trailing text after the object)"),
    (_event("comma") + ",", "malformed JSON line (trailing text after the object)"),
    # not JSON at all
    ("this is not json", "malformed JSON line"),
    ("{'event_id': 'single-quoted', 'event_type': 'impression'}", "malformed JSON line"),
    ('{"event_id": "truncated", "event_type": ', "malformed JSON line"),
    ('{"event_id": "trailing-comma", %s,}' % HEAD, "malformed JSON line"),
    ("[" * 100_000 + "]" * 100_000, "malformed JSON line (nested too deeply)"),
    # a JSON value that is not an object
    ("[1,2]", "malformed JSON line (not an object)"),
    ('"x"', "malformed JSON line (not an object)"),
    ("42", "malformed JSON line (not an object)"),
    ("null", "malformed JSON line (not an object)"),
    # a key given twice
    ('{"event_id": "dk-a", "event_id": "dk-b", %s}' % HEAD, "duplicate key event_id"),
    ('{"event_id": "dk-c", %s, "user_id": 2}' % HEAD, "duplicate key user_id"),
    (_line("dk-nested", ', "meta": {"a": 1, "a": 2}'), "duplicate key a"),
    # bare NaN/Infinity literals are not JSON
    (_line("bare-nan", ', "value": NaN'), "malformed JSON line (non-finite number NaN is not JSON)"),
    (_line("bare-inf", ', "value": Infinity'), "malformed JSON line (non-finite number Infinity is not JSON)"),
    (_line("bare-minus-inf", ', "value": -Infinity'), "malformed JSON line (non-finite number -Infinity is not JSON)"),
    # the wrong JSON type for the column
    (_event(42), "bad string in event_id: JSON number"),
    (_event("type-bool", True), "bad string in event_type: JSON boolean"),
    (_event("type-object", device={"kind": "mobile"}), "bad string in device: JSON object"),
    (_event("type-array", page=["home"]), "bad string in page: JSON array"),
    (_event("type-long-bool", user_id=True), "bad long in user_id: JSON boolean"),
    (_event("type-long-array", item_id=[10]), "bad long in item_id: JSON array"),
    (_event("type-int-object", position={}), "bad int in position: JSON object"),
    (_event("type-double-bool", value=False), "bad double in value: JSON boolean"),
    (_event("type-timestamp-number", event_time=1767600000), "bad timestamp in event_time: JSON number"),
    (_event("type-long-text", user_id="abc"), "bad long in user_id: 'abc'"),
    (_event("type-long-too-big", user_id=12345678901234567890), "bad long in user_id: '12345678901234567890'"),
    # lone surrogates (json.loads accepts them, UTF-8 cannot encode them)
    (_line("sur-1\\udc80"), "invalid unicode (lone surrogate) in event_id"),
    (_line("sur-2", ', "device": "\\ud800"'), "invalid unicode (lone surrogate) in device"),
    (_line("sur-3", ', "value": "4\\udfff"'), "invalid unicode (lone surrogate) in value"),
    # blank strings
    (_event("blank-device", device=""), "blank device"),
    (_event("blank-page", page=" \t "), "blank page"),
    (_event("blank-position", position=""), "blank position"),
    (_event("  "), "missing event_id"),
    (_event("blank-required", " "), "missing event_type"),
    # numbers must be finite
    (_event("nan-string", value="NaN"), "non-finite value"),
    (_event("inf-string", value="Infinity"), "non-finite value"),
    (_event("minus-inf-string", "rating", value="-Infinity"), "non-finite value"),
    (_line("overflow", ', "value": 1e400'), "non-finite value"),
    # ranges: per event type, the column's own for the others
    (_event("rating-0", "rating", value=0), "value below 1 for rating"),
    (_event("rating-6", "rating", value=6), "value above 5 for rating"),
    (_event("rating-huge", "rating", value=1e300), "value above 5 for rating"),
    (_event("click-negative", "click", value=-1), "value below 0 for click"),
    (_event("click-too-long", "click", value=86401), "value above 86400 for click"),
    (_event("purchase-huge", "purchase", value=1e300), "value above 1000000 for purchase"),
    (_event("impression-huge", value=1e300), "value above 1000000"),
    (_event("like-negative", "like", value=-0.5), "value below 0"),
    (_event("position-range", position=1001), "position above 1000"),
    (_event("user-negative", user_id=-1), "user_id below 0"),
    # several failed checks: every one is named
    (
        _event(7, "view", device="fridge"),
        "bad string in event_id: JSON number; unknown event_type 'view'; unknown device 'fridge'",
    ),
    (_event("late", event_time="2025-12-30T10:00:00.000Z"), "event_time outside the drop's window"),
    # a repeated event id within the drop: the first in raw text order ("mobile" < "tv") is kept
    (_event("dup-1", device="tv"), "duplicate event_id"),
]

BLANK = ["", "   ", "\t", " \t "]  # no data: dropped


def _lines_frame(spark, lines):
    return spark.createDataFrame(
        [(line, SOURCE, DAY) for line in lines], "value string, source_file string, drop_date date"
    )


def _run(spark, lines, **kwargs):
    valid, quarantine = validate(parse_raw_lines(_lines_frame(spark, lines), EVENTS), EVENTS, DropWindow(), **kwargs)
    return valid.collect(), {r.raw_record: r.reason for r in quarantine.collect()}, quarantine.count()


@pytest.fixture(scope="module")
def outcome(spark):
    lines = [line for _, line in VALID] + [line for line, _ in QUARANTINED] + BLANK
    assert len(set(lines)) == len(lines)
    valid, reasons, quarantined = _run(spark, lines)
    return {"valid": valid, "reasons": reasons, "quarantined": quarantined}


@pytest.mark.parametrize("line, reason", QUARANTINED, ids=[r for _, r in QUARANTINED])
def test_bad_line_is_quarantined_with_its_reason(outcome, line, reason):
    assert outcome["reasons"].get(line) == reason


@pytest.mark.parametrize("event_id, line", VALID, ids=[e for e, _ in VALID])
def test_good_line_is_valid(outcome, event_id, line):
    assert [r.event_id for r in outcome["valid"]].count(event_id) == 1
    assert line not in outcome["reasons"]


def test_every_non_blank_line_ends_in_exactly_one_output(outcome):
    assert len(outcome["valid"]) == len(VALID)
    assert outcome["quarantined"] == len(outcome["reasons"]) == len(QUARANTINED)  # raw records are unique
    assert len(outcome["valid"]) + outcome["quarantined"] == len(VALID) + len(QUARANTINED)
    assert not set(BLANK) & set(outcome["reasons"])


def test_ids_differing_only_in_an_invalid_surrogate_are_not_two_ids(outcome):
    assert sorted(r.event_id for r in outcome["valid"] if r.event_id.startswith("sur-")) == ["sur-1"]


def test_valid_rows_keep_the_exact_number_text_and_are_typed(spark):
    lines = [
        '  {"event_id": "a", "event_type": "click", "user_id": 9007199254740993, "item_id": "12", '
        '"event_time": "2026-01-05T08:00:00Z", "position": 3, "value": 0.1}\t',
        '{"event_id": "b", "event_type": "rating", "user_id": 1, "item_id": 2, "event_time": "2026-01-05T09:00:00Z", '
        '"device": "tv", "page": null, "value": "4"}',
    ]
    valid, quarantine = validate(parse_raw_lines(_lines_frame(spark, lines), EVENTS), EVENTS, DropWindow())
    expected = spark.createDataFrame(
        [
            ("a", "click", 9007199254740993, 12, dt.datetime(2026, 1, 5, 8), None, None, 3, 0.1, DAY),
            ("b", "rating", 1, 2, dt.datetime(2026, 1, 5, 9), "tv", None, None, 4.0, DAY),
        ],
        f"{EVENTS.spark_ddl()}, drop_date date",
    )
    assert_df_equality(valid, expected, ignore_nullable=True, ignore_row_order=True)
    assert quarantine.count() == 0


def test_parse_keeps_the_raw_record_and_one_string_column_per_field(spark):
    line = _event("p1", value=2)
    parsed = parse_raw_lines(_lines_frame(spark, [line, "  "]), EVENTS)
    assert all(dict(parsed.dtypes)[c] == "string" for c in EVENTS.column_names)
    rows = parsed.collect()
    assert len(rows) == 1 and rows[0].raw_record == line and rows[0].value == "2" and rows[0].device is None


def test_lines_that_are_not_utf8_keep_their_reason(spark):
    raw = _event("bin").encode()[:-1] + b', "page": "\xff\xfe"}'
    lines = spark.createDataFrame(
        [(bytearray(raw), SOURCE, DAY)], "value binary, source_file string, drop_date date"
    ).withColumn("value", F.col("value").cast("string"))
    valid, quarantine = validate(parse_raw_lines(lines, EVENTS), EVENTS, DropWindow())
    rows = quarantine.collect()
    assert valid.count() == 0 and [r.reason for r in rows] == ["not UTF-8 text"]
    assert rows[0].raw_record == raw.decode("utf-8", "replace")


def test_lines_are_parsed_batch_by_batch(spark):
    """Small Arrow batches: each batch's rows keep their own fields (no misaligned index)."""
    lines = [_event(f"batch-{i}", "rating", value=(i % 7)) for i in range(60)]
    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
    try:
        valid, reasons, quarantined = _run(spark, lines)
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
    assert sorted(int(r.event_id.split("-")[1]) for r in valid) == [i for i in range(60) if 1 <= i % 7 <= 5]
    assert {reasons[lines[i]] for i in range(60) if i % 7 == 0} == {"value below 1 for rating"}
    assert {reasons[lines[i]] for i in range(60) if i % 7 == 6} == {"value above 5 for rating"}
    assert len(valid) + quarantined == 60


def test_config_overrides_the_rating_scale(spark):
    lines = [
        _event("r8", "rating", value=8),
        _event("r11", "rating", value=11),
        _event("r0", "rating", value=0.5),
        _event("c1", "click", value=90000),
    ]
    valid, reasons, _ = _run(spark, lines, value_ranges={"rating": [1, 10]})
    assert [r.event_id for r in valid] == ["r8"]
    assert reasons == {
        lines[1]: "value above 10 for rating",
        lines[2]: "value below 1 for rating",
        lines[3]: "value above 86400 for click",
    }  # types not overridden keep the schema's range

    valid, reasons, _ = _run(spark, lines, value_ranges={"rating": {"min": 0.5, "max": None}, "click": [0, None]})
    assert sorted(r.event_id for r in valid) == ["c1", "r0", "r11", "r8"] and reasons == {}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ratings": [1, 10]}, r"ingest\.value_ranges\.ratings: unknown event_type 'ratings'"),
        ({"rating": [10, 1]}, r"ingest\.value_ranges\.rating: min 10 is above max 1"),
        ({"rating": [1]}, r"ingest\.value_ranges\.rating must be \[min, max\]"),
        ({"rating": ["1", 10]}, r"ingest\.value_ranges\.rating\.min must be a finite number"),
        ({"rating": [1, float("inf")]}, r"ingest\.value_ranges\.rating\.max must be a finite number"),
        ({"rating": {"low": 1}}, r"ingest\.value_ranges\.rating: unknown key low"),
        ([1, 10], r"ingest\.value_ranges must be a mapping"),
    ],
)
def test_bad_range_overrides_are_errors_a_user_can_act_on(spark, overrides, message):
    parsed = parse_raw_lines(_lines_frame(spark, [_event("e1")]), EVENTS)
    with pytest.raises(RangeOverrideError, match=message) as error:
        validate(parsed, EVENTS, DropWindow(), value_ranges=overrides)
    assert isinstance(error.value, ValueError) and isinstance(error.value, PipelineInputError)


def test_range_overrides_apply_only_to_a_table_with_per_category_ranges():
    with pytest.raises(RangeOverrideError, match="table users has no column with per-category ranges"):
        apply_range_overrides(load_schema("users"), {"rating": [1, 10]})
    assert apply_range_overrides(load_schema("users"), None) == load_schema("users")
    ranges = apply_range_overrides(EVENTS, {"impression": [0, 0]}).column("value").ranges_by.as_dict()
    assert (ranges["impression"].min, ranges["impression"].max, ranges["rating"].max) == (0, 0, 5)


def test_events_schema_declares_the_value_ranges_by_event_type():
    value = EVENTS.column("value")
    assert value.ranges_by.column == "event_type"
    assert {k: (r.min, r.max) for k, r in value.ranges_by.as_dict().items()} == {
        "rating": (1, 5),
        "click": (0, 86400),
        "purchase": (0, 1000000),
    }
    assert (value.min, value.max) == (0, 1000000)


def _table(*columns, **top):
    return {"name": "t", "partition_column": "drop_date", "columns": list(columns), **top}


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            _table({"name": "a", "type": "double", "mni": 0}),
            r"^schemas/t\.yaml: columns\.a\.mni: unknown key \(did you mean min\?\)$",
        ),
        (
            _table({"name": "a", "type": "float"}),
            r"schemas/t\.yaml: columns\.a\.type: unknown value 'float' \(allowed: string, long, int, double",
        ),
        (
            _table({"name": "a", "type": "double", "max": "1e6"}),
            r"schemas/t\.yaml: columns\.a\.max must be a finite number or null, got '1e6' \(YAML reads 1e6 as text",
        ),
        (_table({"name": "a", "type": "string", "min": 0}), r"schemas/t\.yaml: columns\.a\.min: only numeric columns"),
        (
            _table({"name": "a", "type": "double", "min": 5, "max": 1}),
            r"schemas/t\.yaml: columns\.a: min 5 is above max 1",
        ),
        (
            _table({"name": "a", "type": "double", "ranges_by": {"column": "b", "ranges": {"x": {"max": 1}}}}),
            r"schemas/t\.yaml: columns\.a\.ranges_by\.column: 'b' is not a column",
        ),
        (
            _table(
                {"name": "b", "type": "string", "allowed": ["x"]},
                {"name": "a", "type": "double", "ranges_by": {"column": "b", "ranges": {"y": {"max": 1}}}},
            ),
            r"schemas/t\.yaml: columns\.a\.ranges_by\.ranges\.y: 'y' is not an allowed b",
        ),
        (
            _table(
                {"name": "b", "type": "string"},
                {"name": "a", "type": "double", "ranges_by": {"column": "b", "ranges": {"y": {"max": 1, "maxx": 2}}}},
            ),
            r"schemas/t\.yaml: columns\.a\.ranges_by\.ranges\.y\.maxx: unknown key \(did you mean max\?\)",
        ),
        (
            _table(
                {"name": "b", "type": "string"},
                {"name": "a", "type": "double", "ranges_by": {"column": "b", "range": {}}},
            ),
            r"schemas/t\.yaml: columns\.a\.ranges_by\.range: unknown key \(did you mean ranges\?\)",
        ),
        (
            _table({"name": "a", "type": "long"}, primary_key=["a"]),
            r"schemas/t\.yaml: primary_key: unknown key \(allowed: name, description, key, time_column, partition_column, columns\)",
        ),
    ],
)
def test_schema_errors_name_the_file_and_the_key(doc, message):
    with pytest.raises(ValueError, match=message):
        parse_schema(doc, "schemas/t.yaml")
