"""Table schemas declared in schemas/*.yaml: one file per table, used for validation and docs.

A numeric column may declare per-category ranges, e.g. the events `value` by `event_type`:

    ranges_by:
      column: event_type
      ranges:
        rating: {min: 1, max: 5}

The range of the row's category replaces the column's own min/max; categories without an entry keep
the column's min/max. The pipeline config can replace category ranges (`ingest.value_ranges`, see
apply_range_overrides). Unknown keys and wrongly typed values are a SpecError (a ValueError) naming
file and key path, on one line.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictBool

from features.errors import PipelineInputError, SpecError
from features.validation import Section, read_schema_file, validate

SPARK_TYPE_NAMES = {
    "string": "string",
    "long": "bigint",
    "int": "int",
    "double": "double",
    "timestamp": "timestamp",
    "date": "date",
    "boolean": "boolean",
}
NUMERIC_TYPES = ("long", "int", "double")
_RANGE_KEYS = ("min", "max")


class _RangeDoc(Section):
    min: Any = None  # numbers: checked by _bound (its message explains YAML's 1e6)
    max: Any = None


class _RangesByDoc(Section):
    column: str
    ranges: dict[str, _RangeDoc] = Field(min_length=1)


class _ColumnDoc(Section):
    name: str = Field(min_length=1)
    type: Literal["string", "long", "int", "double", "timestamp", "date", "boolean"]  # SPARK_TYPE_NAMES
    required: StrictBool = False
    description: str = ""
    allowed: list[str] | None = None
    min: Any = None
    max: Any = None
    ranges_by: _RangesByDoc | None = None


class _TableDoc(Section):
    """The structure of schemas/<table>.yaml (parse_schema checks what refers to what)."""

    name: str
    description: str = ""
    key: list[str] = []
    time_column: str | None = None
    partition_column: str
    columns: list[_ColumnDoc] = Field(min_length=1)


class RangeOverrideError(PipelineInputError, ValueError):
    """A bad per-category range override in the pipeline config (the CLI prints it, exit code 2)."""


@dataclass(frozen=True)
class ValueRange:
    """Inclusive bounds; None leaves that side open."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class RangesBy:
    """Per-category ranges of a numeric column, keyed by the value of another (string) column."""

    column: str
    ranges: tuple[tuple[str, ValueRange], ...]

    def as_dict(self) -> dict[str, ValueRange]:
        return dict(self.ranges)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    description: str = ""
    allowed: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    ranges_by: RangesBy | None = None


@dataclass(frozen=True)
class TableSchema:
    name: str
    description: str
    key: tuple[str, ...]
    partition_column: str
    columns: tuple[Column, ...]
    time_column: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name}")

    def spark_ddl(self) -> str:
        """Typed schema of the validated rows, as a Spark DDL string."""
        return ", ".join(f"{c.name} {SPARK_TYPE_NAMES[c.type]}" for c in self.columns)

    def raw_ddl(self) -> str:
        """Schema of the parsed raw JSON: every field as string, so bad types can be detected per row."""
        return ", ".join(f"{c.name} string" for c in self.columns)


def _bound(value: Any, where: str, error: type[ValueError] = ValueError) -> float | None:
    """A finite number or None (open). YAML reads 1e6 as a string: write 1000000 or 1.0e+6."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        hint = " (YAML reads 1e6 as text: write 1000000 or 1.0e+6)" if isinstance(value, str) else ""
        raise error(f"{where} must be a finite number or null, got {value!r}{hint}")
    return value


def _range(low: Any, high: Any, where: str, error: type[ValueError] = ValueError) -> ValueRange:
    result = ValueRange(_bound(low, f"{where}.min", error), _bound(high, f"{where}.max", error))
    if result.min is not None and result.max is not None and result.min > result.max:
        raise error(f"{where}: min {result.min} is above max {result.max}")
    return result


def _parse_ranges_by(doc: Any, column: str, columns: dict[str, Any], where: str) -> RangesBy:
    by = doc.get("column")
    if by not in columns:
        raise ValueError(f"{where}.column: {by!r} is not a column of this table")
    if columns[by]["type"] != "string" or by == column:
        raise ValueError(f"{where}.column: {by} must be another column of type string")
    ranges = doc["ranges"]
    allowed = columns[by].get("allowed")
    parsed = []
    for category, bounds in ranges.items():
        key = f"{where}.ranges.{category}"
        if allowed and category not in [str(a) for a in allowed]:
            raise ValueError(f"{key}: {category!r} is not an allowed {by} ({', '.join(map(str, allowed))})")
        parsed.append((str(category), _range(bounds.get("min"), bounds.get("max"), key)))
    return RangesBy(column=str(by), ranges=tuple(parsed))


def parse_schema(doc: dict[str, Any], source: str = "schema") -> TableSchema:
    """A table schema from its YAML document; source names the file in error messages
    (e.g. schemas/events.yaml). Errors are SpecError (a ValueError), one line naming file and key."""
    validate(_TableDoc, doc, source)
    try:
        return _parse_checked(doc, source)
    except SpecError:
        raise
    except ValueError as error:
        raise SpecError(str(error)) from None


def _parse_checked(doc: dict[str, Any], source: str) -> TableSchema:
    by_name = {c.get("name"): c for c in doc["columns"]}
    columns = []
    for c in doc["columns"]:
        where = f"{source}: columns.{c.get('name')}"
        if c.get("type") not in NUMERIC_TYPES:
            for key in ("min", "max", "ranges_by"):
                if c.get(key) is not None:
                    raise ValueError(f"{where}.{key}: only numeric columns ({', '.join(NUMERIC_TYPES)}) have ranges")
        bounds = _range(c.get("min"), c.get("max"), where)
        columns.append(
            Column(
                name=c["name"],
                type=c["type"],
                required=bool(c.get("required", False)),
                description=str(c.get("description", "")).strip(),
                allowed=tuple(str(v) for v in c["allowed"]) if c.get("allowed") else None,
                min=bounds.min,
                max=bounds.max,
                ranges_by=(
                    _parse_ranges_by(c["ranges_by"], c["name"], by_name, f"{where}.ranges_by")
                    if c.get("ranges_by") is not None
                    else None
                ),
            )
        )
    names = [c.name for c in columns]
    for k in doc.get("key", []):
        if k not in names:
            raise ValueError(f"{source}: key: {k!r} is not a column")
    if doc.get("time_column") is not None and doc["time_column"] not in names:
        raise ValueError(f"{source}: time_column: {doc['time_column']!r} is not a column")
    return TableSchema(
        name=doc["name"],
        description=" ".join(str(doc.get("description", "")).split()),
        key=tuple(doc.get("key", [])),
        partition_column=doc["partition_column"],
        columns=tuple(columns),
        time_column=doc.get("time_column"),
    )


def apply_range_overrides(
    schema: TableSchema, overrides: Mapping[str, Any] | None, source: str = "ingest.value_ranges"
) -> TableSchema:
    """The schema with per-category ranges replaced, e.g. {"rating": [1, 10]} for a 1-10 rating scale.

    overrides: category -> [min, max] or {min: .., max: ..}; null leaves a side open. An entry
    replaces the category's whole range (or adds one for a category without an entry). It applies
    to the table's column that declares ranges_by (events: value). Bad entries, unknown categories
    and overrides for a table without ranges_by raise RangeOverrideError (a ValueError).
    """
    if not overrides:
        return schema
    if not isinstance(overrides, Mapping):
        raise RangeOverrideError(f"{source} must be a mapping of category to [min, max], got {overrides!r}")
    targets = [(c, c.ranges_by) for c in schema.columns if c.ranges_by is not None]
    if len(targets) != 1:
        raise RangeOverrideError(f"{source}: table {schema.name} has no column with per-category ranges (ranges_by)")
    target, ranges_by = targets[0]
    by = schema.column(ranges_by.column)
    ranges = ranges_by.as_dict()
    for category, bounds in overrides.items():
        where = f"{source}.{category}"
        if by.allowed and str(category) not in by.allowed:
            raise RangeOverrideError(f"{where}: unknown {by.name} {category!r} (allowed: {', '.join(by.allowed)})")
        if isinstance(bounds, Mapping):
            unknown = [str(k) for k in bounds if k not in _RANGE_KEYS]
            if unknown:
                raise RangeOverrideError(f"{where}: unknown key {', '.join(unknown)} (allowed: min, max)")
            low, high = bounds.get("min"), bounds.get("max")
        elif isinstance(bounds, (list, tuple)) and len(bounds) == 2:
            low, high = bounds
        else:
            raise RangeOverrideError(f"{where} must be [min, max] or {{min: .., max: ..}}, got {bounds!r}")
        ranges[str(category)] = _range(low, high, where, RangeOverrideError)
    new_target = replace(target, ranges_by=replace(ranges_by, ranges=tuple(ranges.items())))
    return replace(schema, columns=tuple(new_target if c.name == target.name else c for c in schema.columns))


_parse = parse_schema  # the former private name


def load_schema(table: str, path: str | Path | None = None) -> TableSchema:
    """Load schemas/<table>.yaml shipped with the package (or the schema file at `path`), validated."""
    return _load(table, str(path) if path is not None else None)


@functools.cache
def _load(table: str, path: str | None) -> TableSchema:
    file = Path(path) if path else resources.files("schemas").joinpath(f"{table}.yaml")
    if not file.is_file():
        raise KeyError(f"no schema file {path or f'schemas/{table}.yaml'}")
    return parse_schema(*read_schema_file(f"{table}.yaml", path))


RAW_TABLES = ("events", "users", "items")
