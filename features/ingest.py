"""Validation of raw JSON-lines drops against schemas/*.yaml: typed rows in, quarantine out.

Library code: DataFrames in, DataFrames out. jobs/ingest.py does the reading and writing.
Every non-blank input line ends up in exactly one of the two outputs; a quarantined line keeps its
raw text, its source file and a reason naming every check it failed.

Rules (a line is quarantined with the reason in quotes; <f> is the field, <t> its schema type):

- A blank line (JSON whitespace only) is no data and is dropped. Leading/trailing whitespace is fine.
- Bytes that are not UTF-8: "not UTF-8 text" (raw text kept with U+FFFD for the bad bytes).
- Each line must be exactly one JSON object, parsed strictly by Python's json module:
  not JSON, single-quoted pseudo-JSON, truncated: "malformed JSON line";
  a JSON value that is not an object: "malformed JSON line (not an object)";
  anything but whitespace after the object (a second object, junk, a NUL byte):
  "malformed JSON line (trailing text after the object)";
  a bare NaN/Infinity/-Infinity: "malformed JSON line (non-finite number NaN is not JSON)";
  nesting deeper than Python can parse: "malformed JSON line (nested too deeply)";
  a key given twice (at any depth): "duplicate key <key>".
  Such a line gets only this reason; the checks below need its fields.
- JSON null means absent; keys the schema does not list are ignored.
- JSON types: string columns take strings only; long/int/double take numbers (their exact source
  text goes to Spark's try_cast) or numeric strings such as "12"; boolean takes true/false or a
  string; timestamp and date take strings. Otherwise "bad <t> in <f>: JSON number|boolean|object|array".
- A string with a lone surrogate escape ("\\ud800"; json accepts it, UTF-8 cannot encode it):
  "invalid unicode (lone surrogate) in <f>". Such text never reaches Spark.
- Present but blank ("" or whitespace only): "missing <f>" for a required field, else "blank <f>".
- Required field absent or null: "missing <f>". Text that try_cast cannot read as <t>:
  "bad <t> in <f>: '<first 40 characters>'". Not an allowed value: "unknown <f> '<value>'".
- Numbers must be finite: NaN, Infinity (also as strings, or 1e400): "non-finite <f>".
- Ranges (inclusive) from the schema: "<f> below <min>", "<f> above <max>"; per-category ranges
  (ranges_by, e.g. events.value by event_type) replace them for the categories they list:
  "value below 1 for rating", "value above 5 for rating"; validate(value_ranges=...) overrides them.
- events: event_time outside [D - lateness, D + 1 day + clock skew): "event_time outside the drop's window".
- A row repeating the table key within a drop (first in source file, raw text order is kept):
  "duplicate <key>".
Reasons of several failed checks are joined with "; ".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import MapType, StringType, StructField, StructType

from features.schemas import SPARK_TYPE_NAMES, TableSchema, apply_range_overrides

CORRUPT_COLUMN = "_corrupt_record"  # the line is not one well-formed JSON object: the whole reason, else NULL
FIELD_PROBLEMS_COLUMN = "_field_problems"  # field -> reason for fields whose JSON value was rejected, else NULL
NOT_UTF8_COLUMN = "_not_utf8"  # the line's bytes are not UTF-8 (e.g. a compressed or binary file named .jsonl)
QUARANTINE_COLUMNS = ["drop_date", "source_file", "raw_record", "reason"]

MALFORMED = "malformed JSON line"
_JSON_WHITESPACE = " \t\n\r"
_BLANK = r"^(?U)\s*$"  # Java regex, Unicode whitespace
_SURROGATE = re.compile("[\ud800-\udfff]")
# JSON types each schema type accepts (the text of numbers and strings goes to Spark's try_cast)
_ACCEPTED_JSON_TYPES = {
    "string": ("string",),
    "long": ("number", "string"),
    "int": ("number", "string"),
    "double": ("number", "string"),
    "boolean": ("boolean", "string"),
    "timestamp": ("string",),
    "date": ("string",),
}


@dataclass(frozen=True)
class DropWindow:
    """Allowed event times for a drop of day D: [D - lateness, D + 1 day + clock skew)."""

    allowed_lateness_hours: float = 48.0
    allowed_clock_skew_minutes: float = 60.0


class _RawNumber(str):
    """A JSON number as its exact source text, so 0.1, 1e400 or 12345678901234567890 reach Spark unrounded."""

    __slots__ = ()


class _LineProblem(Exception):
    """The line is not one well-formed JSON object; the message is its quarantine reason."""


def _printable(text: str, limit: int = 40) -> str:
    """Text safe for a reason column: lone surrogates escaped (Arrow rejects them), at most `limit` characters."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _LineProblem(f"duplicate key {_printable(key)}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> None:
    raise _LineProblem(f"{MALFORMED} (non-finite number {name} is not JSON)")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys,
    parse_int=_RawNumber,
    parse_float=_RawNumber,
    parse_constant=_no_constant,
    strict=True,
)


def _json_type(value: Any) -> str:
    if isinstance(value, _RawNumber):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "object" if isinstance(value, dict) else "array"


def _parse_line(
    text: str | None, fields: tuple[tuple[str, str], ...]
) -> tuple[str | None, dict[str, str | None] | None, dict[str, str] | None]:
    """One line -> (line problem, {field: raw text}, {field: problem}); the dicts are None for a bad line."""
    if text is None:
        return MALFORMED, None, None
    start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
    try:
        obj, end = _DECODER.raw_decode(text, start)
    except _LineProblem as problem:
        return str(problem), None, None
    except json.JSONDecodeError:
        return MALFORMED, None, None
    except RecursionError:
        return f"{MALFORMED} (nested too deeply)", None, None
    if not isinstance(obj, dict):
        return f"{MALFORMED} (not an object)", None, None
    if text[end:].strip(_JSON_WHITESPACE):
        return f"{MALFORMED} (trailing text after the object)", None, None
    values: dict[str, str | None] = {}
    problems: dict[str, str] = {}
    for name, kind in fields:
        value = obj.get(name)
        if value is None:  # absent or JSON null
            values[name] = None
            continue
        json_type = _json_type(value)
        if json_type not in _ACCEPTED_JSON_TYPES[kind]:
            problems[name], values[name] = f"bad {kind} in {name}: JSON {json_type}", None
        elif json_type == "string" and _SURROGATE.search(value):
            problems[name], values[name] = f"invalid unicode (lone surrogate) in {name}", None
        elif json_type == "boolean":
            values[name] = "true" if value else "false"
        else:
            values[name] = str(value)  # a plain str (also for _RawNumber) for Arrow
    return None, values, problems


def _parse_batch(lines: pd.Series, fields: tuple[tuple[str, str], ...]) -> pd.DataFrame:
    """One Arrow batch of lines -> the parse_raw_lines struct columns (a Python loop over the batch)."""
    names = [name for name, _ in fields]
    columns: dict[str, list] = {name: [] for name in names}
    corrupt, field_problems = [], []
    for text in lines:
        line_problem, values, problems = _parse_line(text, fields)
        corrupt.append(line_problem)
        field_problems.append(problems or None)
        for name in names:
            columns[name].append(values[name] if values is not None else None)
    return pd.DataFrame({**columns, CORRUPT_COLUMN: corrupt, FIELD_PROBLEMS_COLUMN: field_problems}, index=lines.index)


def _parse_udf(schema: TableSchema):
    fields = tuple((c.name, c.type) for c in schema.columns)
    return_type = StructType(
        [StructField(name, StringType()) for name, _ in fields]
        + [
            StructField(CORRUPT_COLUMN, StringType()),
            StructField(FIELD_PROBLEMS_COLUMN, MapType(StringType(), StringType())),
        ]
    )

    @F.pandas_udf(return_type)  # type: ignore[call-overload]  # pyspark stubs lack the type-hinted form
    def parse(lines: pd.Series) -> pd.DataFrame:
        return _parse_batch(lines, fields)

    return parse


def parse_raw_lines(lines: DataFrame, schema: TableSchema) -> DataFrame:
    """lines: value (one JSON text line), source_file, drop_date. Drops blank lines; adds one string
    column per schema column (raw text of the field: a JSON string's content or a number's exact text),
    CORRUPT_COLUMN (the reason when the line is not one well-formed JSON object), FIELD_PROBLEMS_COLUMN
    (field -> reason for a field whose JSON value was rejected; that field's column is NULL) and a flag
    for lines that are not UTF-8, whose raw text is kept with U+FFFD for the invalid bytes (so the
    quarantine stays readable by Arrow-based engines, which reject invalid UTF-8 strings).
    Parsing is strict (see the module docstring) and runs in a pandas UDF, one Arrow batch at a time."""
    text = F.make_valid_utf8("value")
    return (
        lines.where(~F.col("value").rlike(f"^[{_JSON_WHITESPACE}]*$"))
        .select(
            "drop_date",
            "source_file",
            text.alias("raw_record"),
            (~F.is_valid_utf8("value")).alias(NOT_UTF8_COLUMN),
            _parse_udf(schema)(text).alias("_parsed"),
        )
        .select("drop_date", "source_file", "raw_record", NOT_UTF8_COLUMN, "_parsed.*")
    )


def _typed(schema: TableSchema, name: str) -> Column:
    column = schema.column(name)
    return F.col(name).try_cast(SPARK_TYPE_NAMES[column.type])


def _number(value: float) -> str:
    """A bound as reasons show it: 5, 0.5, 1000000."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def _range_checks(
    name: str, typed: Column, low: float | None, high: float | None, scope: Column, suffix: str = ""
) -> list[Column]:
    """scope: the rows the bounds apply to (finite values, maybe of one category)."""
    checks = []
    if low is not None:
        checks.append(F.when(scope & (typed < F.lit(low)), F.lit(f"{name} below {_number(low)}{suffix}")))
    if high is not None:
        checks.append(F.when(scope & (typed > F.lit(high)), F.lit(f"{name} above {_number(high)}{suffix}")))
    return checks


def _failed_checks(
    schema: TableSchema, window: DropWindow | None, value_ranges: Mapping[str, Any] | None = None
) -> list[Column]:
    """One Column per check: the reason text when the row fails it, else NULL. value_ranges replaces
    per-category ranges (schemas.apply_range_overrides), e.g. {"rating": [1, 10]}."""
    schema = apply_range_overrides(schema, value_ranges)
    checks = []
    for c in schema.columns:
        raw, typed = F.col(c.name), _typed(schema, c.name)
        problem = F.col(FIELD_PROBLEMS_COLUMN)[c.name]
        checks.append(problem)
        blank = raw.isNotNull() & raw.rlike(_BLANK)
        present = problem.isNull() & raw.isNotNull() & ~raw.rlike(_BLANK)
        if c.required:
            checks.append(F.when(problem.isNull() & ~present, F.lit(f"missing {c.name}")))
        else:
            checks.append(F.when(blank, F.lit(f"blank {c.name}")))
        checks.append(
            F.when(
                present & typed.isNull(),
                F.concat(F.lit(f"bad {c.type} in {c.name}: '"), F.substring(raw, 1, 40), F.lit("'")),
            )
        )
        if c.allowed:
            checks.append(
                F.when(
                    present & ~raw.isin(list(c.allowed)),
                    F.concat(F.lit(f"unknown {c.name} '"), F.substring(raw, 1, 40), F.lit("'")),
                )
            )
        finite = typed.isNotNull()
        if c.type == "double":  # try_cast reads NaN/Infinity (and 1e400 as Infinity); Spark orders NaN above all
            finite = finite & ~F.isnan(typed) & (F.abs(typed) != F.lit(float("inf")))
            checks.append(F.when(present & typed.isNotNull() & ~finite, F.lit(f"non-finite {c.name}")))
        column_scope = finite
        if c.ranges_by is not None:
            category = F.col(c.ranges_by.column)
            ranges = c.ranges_by.as_dict()
            for value, bounds in ranges.items():
                checks += _range_checks(
                    c.name, typed, bounds.min, bounds.max, finite & (category == value), f" for {value}"
                )
            column_scope = finite & F.coalesce(~category.isin(list(ranges)), F.lit(True))
        checks += _range_checks(c.name, typed, c.min, c.max, column_scope)
    if window is not None and schema.time_column:
        start = F.col("drop_date").cast("timestamp") - F.expr(
            f"make_dt_interval(0, 0, {int(window.allowed_lateness_hours * 60)})"
        )
        end = F.date_add("drop_date", 1).cast("timestamp") + F.expr(
            f"make_dt_interval(0, 0, {int(window.allowed_clock_skew_minutes)})"
        )
        event_time = _typed(schema, schema.time_column)
        checks.append(
            F.when((event_time < start) | (event_time >= end), F.lit(f"{schema.time_column} outside the drop's window"))
        )
    return checks


def validate(
    parsed: DataFrame,
    schema: TableSchema,
    window: DropWindow | None = None,
    value_ranges: Mapping[str, Any] | None = None,
    keep_source: bool = False,
) -> tuple[DataFrame, DataFrame]:
    """Split parsed rows (parse_raw_lines) into (valid typed rows + drop_date, quarantine rows).
    keep_source: the valid rows also keep source_file and raw_record (for a later step that may
    still quarantine them, e.g. features/redelivery.py).

    value_ranges: per-category range overrides for the column that declares ranges_by (events:
    value by event_type), e.g. config ingest.value_ranges = {"rating": [1, 10]}; [min, max] or
    {min, max}, null for an open side. A bad entry, or any entry for a table without ranges_by,
    raises schemas.RangeOverrideError (a ValueError and a PipelineInputError).

    Rows repeating the table key within a drop are duplicates: the first in (source_file, raw text)
    order is kept and the others are quarantined with reason 'duplicate <key>'.
    """
    if FIELD_PROBLEMS_COLUMN not in parsed.columns:  # rows parsed by other means: no field problems
        parsed = parsed.withColumn(FIELD_PROBLEMS_COLUMN, F.lit(None).cast("map<string,string>"))
    checks = _failed_checks(schema, window, value_ranges)
    field_reasons = F.concat_ws("; ", F.filter(F.array(*checks), lambda r: r.isNotNull()))
    reasons = (
        F.when(F.col(NOT_UTF8_COLUMN), F.lit("not UTF-8 text"))
        .when(F.col(CORRUPT_COLUMN).isNotNull(), F.col(CORRUPT_COLUMN))
        .otherwise(field_reasons)
    )
    checked = parsed.withColumn("reason", reasons)
    key_order = Window.partitionBy("drop_date", *schema.key).orderBy("source_file", "raw_record")
    first = F.row_number().over(key_order) == 1
    passed = checked.where(F.col("reason") == "")
    ranked = passed.withColumn("_first", first)
    valid = ranked.where("_first").select(
        *[_typed(schema, c.name).alias(c.name) for c in schema.columns],
        "drop_date",
        *(["source_file", "raw_record"] if keep_source else []),
    )
    duplicates = ranked.where(~F.col("_first")).withColumn("reason", F.lit(f"duplicate {', '.join(schema.key)}"))
    rejected = checked.where(F.col("reason") != "")
    quarantine = rejected.select(*QUARANTINE_COLUMNS).unionByName(duplicates.select(*QUARANTINE_COLUMNS))
    return valid, quarantine
