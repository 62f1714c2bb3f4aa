"""The pipeline's Delta tables as Spark SQL views under stable names, optionally as of the past.

    views = register_views(tables)                                   # latest versions
    views = register_views(tables, as_of_timestamp="2026-01-05T00:00:00Z")   # each table as it was then
    views = register_views(tables, as_of_versions={"user_snapshot": 3})      # one table at version 3
    views = register_views(tables, pinned={"before": ("user_snapshot", 3)})   # plus a view of version 3
    spark.sql("SELECT snapshot_date, count(*) FROM user_snapshot GROUP BY 1")

A view is a lazy read of the file list of that version (features.tables), so registering every table
costs one log read each and no data. On clusters with delta-spark, `register_statements` gives the
CREATE TABLE ... USING DELTA LOCATION statements that make the same names permanent in a metastore.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

from features.errors import PipelineInputError
from features.tables import Tables

_log = logging.getLogger(__name__)


def register_views(
    tables: Tables,
    as_of_versions: dict[str, int] | None = None,
    as_of_timestamp: str | dt.datetime | None = None,
    pinned: dict[str, tuple[str, int]] | None = None,
) -> dict[str, int]:
    """Create or replace a temporary view per table (and per `pinned` view name: a table at a version,
    to compare two versions in one query); returns {view name: Delta version read}."""
    as_of_versions = dict(as_of_versions or {})
    names = tables.names()
    unknown = sorted((set(as_of_versions) | {t for t, _ in (pinned or {}).values()}) - set(names))
    if unknown:
        raise PipelineInputError(f"no table {unknown[0]} under {tables.root}; tables: {', '.join(names)}")
    registered, missing = {}, []
    for name in names:
        version = as_of_versions.get(name)
        if version is not None and not 0 <= version <= tables.version(name):
            raise PipelineInputError(f"{name} has versions 0..{tables.version(name)}, not {version}")
        if version is None and as_of_timestamp is not None:
            version = _version_at(tables, name, as_of_timestamp)
            if version is None:  # the table's first commit is after the timestamp
                missing.append(name)
                continue
        tables.read(name, version=version).createOrReplaceTempView(name)
        registered[name] = version if version is not None else tables.version(name)
    if missing and not registered:
        oldest = min((tables.history(name)[-1] | {"table": name} for name in missing), key=lambda c: c["timestamp"])
        raise PipelineInputError(
            f"no table existed at {_format_moment(as_of_timestamp)}: the first commit is "
            f"{oldest['table']} v{oldest['version']} at {_format_moment(oldest['timestamp'])}"
        )
    for name in missing:  # not even a view left from an earlier call of this session
        tables.spark.catalog.dropTempView(name)
        _log.warning("%s skipped, it did not exist at %s", name, _format_moment(as_of_timestamp))
    for view, (name, version) in (pinned or {}).items():
        if not 0 <= version <= tables.version(name):
            raise PipelineInputError(f"{name} has versions 0..{tables.version(name)}, not {version}")
        tables.read(name, version=version).createOrReplaceTempView(view)
        registered[view] = version
    return registered


def _as_moment(timestamp) -> dt.datetime:
    moment = (
        timestamp
        if isinstance(timestamp, dt.datetime)
        else dt.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    )
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _format_moment(timestamp) -> str:
    return _as_moment(timestamp).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version_at(tables: Tables, name: str, timestamp) -> int | None:
    """The newest version committed at or before `timestamp`; None when the table did not exist yet."""
    moment = _as_moment(timestamp)
    committed = [h["version"] for h in tables.history(name) if h["timestamp"] is not None and h["timestamp"] <= moment]
    return max(committed) if committed else None


def register_statements(tables: Tables, database: str) -> list[str]:
    """Metastore DDL for every pipeline table (delta-spark: the tables then answer `VERSION AS OF`).
    `database` must be a plain SQL identifier (letters, digits, underscores; not starting with a digit)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database or ""):
        raise PipelineInputError(
            f"--database must be a SQL identifier (letters, digits and underscores, not "
            f"starting with a digit), not {database!r}"
        )
    statements = [f"CREATE DATABASE IF NOT EXISTS {database}"]
    statements += [
        f"CREATE TABLE IF NOT EXISTS {database}.{name} USING DELTA LOCATION '{tables.path(name)}'"
        for name in tables.names()
    ]
    return statements
