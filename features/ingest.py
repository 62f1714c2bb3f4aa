"""Validation of raw JSON-lines drops against schemas/*.yaml: typed rows in, quarantine out.

Library code: DataFrames in, DataFrames out. jobs/ingest.py does the reading and writing.
Every input line ends up in exactly one of the two outputs; a quarantined line keeps its raw text,
its source file and a reason naming every check it failed.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features.schemas import SPARK_TYPE_NAMES, TableSchema

CORRUPT_COLUMN = "_corrupt_record"
NOT_UTF8_COLUMN = "_not_utf8"  # the line's bytes are not UTF-8 (e.g. a compressed or binary file named .jsonl)
QUARANTINE_COLUMNS = ["drop_date", "source_file", "raw_record", "reason"]


@dataclass(frozen=True)
class DropWindow:
    """Allowed event times for a drop of day D: [D - lateness, D + 1 day + clock skew)."""

    allowed_lateness_hours: float = 48.0
    allowed_clock_skew_minutes: float = 60.0


def parse_raw_lines(lines: DataFrame, schema: TableSchema) -> DataFrame:
    """lines: value (one JSON text line), source_file, drop_date. Adds one string column per schema
    column (raw text of the field), the corrupt-record column for lines that are not JSON objects and
    a flag for lines that are not UTF-8, whose raw text is kept with U+FFFD for the invalid bytes (so
    the quarantine stays readable by Arrow-based engines, which reject invalid UTF-8 strings)."""
    raw_schema = f"{schema.raw_ddl()}, {CORRUPT_COLUMN} string"
    parsed = F.from_json("value", raw_schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN})
    return (lines.where(F.trim("value") != "")
            .withColumn("_parsed", parsed)
            .select("drop_date", "source_file", F.make_valid_utf8("value").alias("raw_record"),
                    (~F.is_valid_utf8("value")).alias(NOT_UTF8_COLUMN), "_parsed.*"))


def _typed(schema: TableSchema, name: str) -> Column:
    column = schema.column(name)
    return F.col(name).try_cast(SPARK_TYPE_NAMES[column.type])


def _failed_checks(schema: TableSchema, window: DropWindow | None) -> list[Column]:
    """One Column per check: the reason text when the row fails it, else NULL."""
    checks = []
    for c in schema.columns:
        raw, typed = F.col(c.name), _typed(schema, c.name)
        present = raw.isNotNull() & (F.trim(raw) != "")
        if c.required:
            checks.append(F.when(~present, F.lit(f"missing {c.name}")))
        checks.append(F.when(present & typed.isNull(),
                             F.concat(F.lit(f"bad {c.type} in {c.name}: '"), F.substring(raw, 1, 40), F.lit("'"))))
        if c.allowed:
            checks.append(F.when(present & ~raw.isin(list(c.allowed)),
                                 F.concat(F.lit(f"unknown {c.name} '"), F.substring(raw, 1, 40), F.lit("'"))))
        if c.min is not None:
            checks.append(F.when(typed < F.lit(c.min), F.lit(f"{c.name} below {c.min}")))
        if c.max is not None:
            checks.append(F.when(typed > F.lit(c.max), F.lit(f"{c.name} above {c.max}")))
    if window is not None and schema.time_column:
        start = F.col("drop_date").cast("timestamp") - F.expr(
            f"make_dt_interval(0, 0, {int(window.allowed_lateness_hours * 60)})")
        end = F.date_add("drop_date", 1).cast("timestamp") + F.expr(
            f"make_dt_interval(0, 0, {int(window.allowed_clock_skew_minutes)})")
        event_time = _typed(schema, schema.time_column)
        checks.append(F.when((event_time < start) | (event_time >= end),
                             F.lit(f"{schema.time_column} outside the drop's window")))
    return checks


def validate(parsed: DataFrame, schema: TableSchema, window: DropWindow | None = None) -> tuple[DataFrame, DataFrame]:
    """Split parsed rows into (valid typed rows + drop_date, quarantine rows).

    Rows repeating the table key within a drop are duplicates: the first in (source_file, raw text)
    order is kept and the others are quarantined with reason 'duplicate <key>'.
    """
    field_reasons = F.concat_ws("; ", F.filter(F.array(*_failed_checks(schema, window)), lambda r: r.isNotNull()))
    reasons = (F.when(F.col(NOT_UTF8_COLUMN), F.lit("not UTF-8 text"))
               .when(F.col(CORRUPT_COLUMN).isNotNull(), F.lit("malformed JSON line")).otherwise(field_reasons))
    checked = parsed.withColumn("reason", reasons)
    key_order = Window.partitionBy("drop_date", *schema.key).orderBy("source_file", "raw_record")
    first = F.row_number().over(key_order) == 1
    passed = checked.where(F.col("reason") == "")
    ranked = passed.withColumn("_first", first)
    valid = ranked.where("_first").select(
        *[_typed(schema, c.name).alias(c.name) for c in schema.columns], "drop_date")
    duplicates = ranked.where(~F.col("_first")).withColumn(
        "reason", F.lit(f"duplicate {', '.join(schema.key)}"))
    rejected = checked.where(F.col("reason") != "")
    quarantine = rejected.select(*QUARANTINE_COLUMNS).unionByName(duplicates.select(*QUARANTINE_COLUMNS))
    return valid, quarantine
