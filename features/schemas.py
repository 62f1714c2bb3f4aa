"""Table schemas declared in schemas/*.yaml: one file per table, used for validation and docs."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

SPARK_TYPE_NAMES = {
    "string": "string",
    "long": "bigint",
    "int": "int",
    "double": "double",
    "timestamp": "timestamp",
    "date": "date",
    "boolean": "boolean",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    description: str = ""
    allowed: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None


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
        """Schema used to parse raw JSON: every field as string, so bad types can be detected per row."""
        return ", ".join(f"{c.name} string" for c in self.columns)


def _parse(doc: dict[str, Any]) -> TableSchema:
    columns = []
    for c in doc["columns"]:
        if c["type"] not in SPARK_TYPE_NAMES:
            raise ValueError(f"schema {doc['name']}: column {c['name']} has unknown type {c['type']}")
        columns.append(
            Column(
                name=c["name"],
                type=c["type"],
                required=bool(c.get("required", False)),
                description=str(c.get("description", "")).strip(),
                allowed=tuple(str(v) for v in c["allowed"]) if c.get("allowed") else None,
                min=c.get("min"),
                max=c.get("max"),
            )
        )
    return TableSchema(
        name=doc["name"],
        description=" ".join(str(doc.get("description", "")).split()),
        key=tuple(doc.get("key", [])),
        partition_column=doc["partition_column"],
        columns=tuple(columns),
        time_column=doc.get("time_column"),
    )


@functools.cache
def load_schema(table: str) -> TableSchema:
    """Load schemas/<table>.yaml shipped with the package."""
    path = resources.files("schemas").joinpath(f"{table}.yaml")
    if not path.is_file():
        raise KeyError(f"no schema file schemas/{table}.yaml")
    return _parse(yaml.safe_load(path.read_text()))


RAW_TABLES = ("events", "users", "items")
