"""What `recpipe history` and `recpipe sql` print or write (the SQL views live in features.sql_views)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from features.errors import PipelineInputError
from features.sql_views import register_views
from features.tables import Tables
from jobs.sql_guard import check_read_only

# SQLSTATE classes of errors that are not the query's: XX internal error (Spark's bug), 58 system error
INTERNAL_SQLSTATES = ("XX", "58")


def format_history(table: str, commits: list[dict]) -> str:
    lines = [
        f"history of {table} (newest first)",
        f"{'version':>7}  {'committed (UTC)':<19}  {'operation':<10}  {'job':<9}  {'run':<12}  partitions / inputs",
    ]
    for c in commits:
        meta = c["metadata"]
        when = c["timestamp"].strftime("%Y-%m-%d %H:%M:%S") if c["timestamp"] else "-"
        scope = meta.get("partitions") or meta.get("range") or ""
        if isinstance(scope, list) and len(scope) > 3:
            scope = f"{scope[0]}..{scope[-1]} ({len(scope)})"
        inputs = meta.get("input_versions")
        detail = f"{scope}" + (f"  inputs {inputs}" if inputs else "")
        lines.append(
            f"{c['version']:>7}  {when:<19}  {str(c['operation'] or '-'):<10}  {str(meta.get('job', '-')):<9}  "
            f"{str(meta.get('run_id', '-')):<12}  {detail}"
        )
    return "\n".join(lines)


def parse_versions(values: list[str]) -> dict[str, int] | int | None:
    """['3'] → 3 (every table); ['user_snapshot=3', 'samples=1'] → per table."""
    if not values:
        return None
    per_table, everywhere = {}, None
    for value in values:
        table, sep, number = value.rpartition("=")
        if not number.strip().isdigit():
            raise PipelineInputError(f"--as-of-version expects N or TABLE=N, got '{value}'")
        if sep:
            per_table[table.strip()] = int(number)
        else:
            everywhere = int(number)
    if everywhere is not None and per_table:
        raise PipelineInputError("give --as-of-version either as N (every table) or as TABLE=N, not both")
    return everywhere if everywhere is not None else per_table


def parse_views(values: list[str]) -> dict[str, tuple[str, int]]:
    """['before=user_snapshot@3'] → {'before': ('user_snapshot', 3)}."""
    views = {}
    for value in values:
        view, sep, target = value.partition("=")
        table, at, number = target.rpartition("@")
        if not (sep and at and view.isidentifier() and number.isdigit()):
            raise PipelineInputError(f"--view expects NAME=TABLE@VERSION, got '{value}'")
        views[view] = (table, int(number))
    return views


def run_sql(
    spark: SparkSession,
    tables: Tables,
    query: str,
    versions: dict[str, int] | int | None = None,
    timestamp: str | None = None,
    out: str | None = None,
    limit: int = 50,
    pinned: dict[str, tuple[str, int]] | None = None,
    read_only: bool = True,
) -> str:
    """Runs one analyst statement over the pipeline tables (read_only: see jobs.sql_guard; the CLI has no
    way to lift it). Mistakes in the query, found by Spark when it parses, analyses or runs it (an unknown
    column, a division by zero under ANSI mode, a bad CAST), raise PipelineInputError on one line."""
    if out:
        check_out(Path(out))
    if read_only:
        check_read_only(spark, query, tables.root)
    if isinstance(versions, int):  # every table that has this version
        wanted, versions = versions, {name: versions for name in tables.names() if tables.version(name) >= versions}
        if not versions:
            ranges = ", ".join(f"{name} 0..{tables.version(name)}" for name in tables.names()) or "no tables"
            raise PipelineInputError(f"no table has version {wanted} (versions: {ranges})")
    registered = register_views(tables, versions or {}, timestamp, pinned)
    read = ", ".join(f"{name} v{version}" for name, version in sorted(registered.items()))
    with _quiet_query(spark):
        try:
            result = spark.sql(query)
            if out:
                rows = write_result(result, Path(out))
                return f"wrote {rows} rows to {out} (read {read})"
            shown = _to_pandas(result.limit(limit + 1))  # never more than `limit` rows travel to the driver
        except PySparkException as error:
            state = error.getSqlState() or ""
            if state.startswith(INTERNAL_SQLSTATES):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PipelineInputError(f"query failed: {first}") from None
    more = f"\n... more than {limit} rows (use --limit or --out)" if len(shown) > limit else ""
    text = shown.head(limit).to_string(index=False) if len(shown) else "(no rows)"
    return f"{text}{more}\n(read {read})"


def _to_pandas(result: DataFrame):
    try:
        return result.toPandas()
    except PySparkException:
        raise
    except (ValueError, OverflowError) as error:  # e.g. ArrowInvalid: a timestamp after 2262 does not fit pandas
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PipelineInputError(f"cannot print the result ({first}): write it with --out FILE.parquet") from None


@contextlib.contextmanager
def _quiet_query(spark: SparkSession):
    """While the analyst's statement runs, Spark's own logging is off: a failing task would log its Java
    stack trace (local mode prints executor logs on the driver's stderr), and pyspark warns on several
    lines when toPandas fails; the error itself is raised and printed on one line."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a classic session: its JVM gateway is up
    level = str(jvm.org.apache.logging.log4j.LogManager.getRootLogger().getLevel())
    spark.sparkContext.setLogLevel("OFF")
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)  # pyspark's, also several lines
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="toPandas attempted Arrow optimization")
            yield
    finally:
        _wait_for_running_tasks(spark)  # tasks of a failed job still stopping would log after the restore
        spark.sparkContext.setLogLevel(level)


def _wait_for_running_tasks(spark: SparkSession, seconds: float = 5.0) -> None:
    tracker = spark.sparkContext._jsc.sc().statusTracker()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executors = tracker.getExecutorInfos()
        if sum(executor.numRunningTasks() for executor in executors) == 0:
            return
        time.sleep(0.05)


def check_out(out: Path) -> None:
    """--out: FILE.parquet or FILE.csv whose directory is, or can be created as, a directory."""
    kind = out.suffix.lower().lstrip(".")
    if kind not in ("parquet", "csv"):
        raise PipelineInputError(f"--out must end in .parquet or .csv, got {out.name}")
    if out.is_dir():
        raise PipelineInputError(f"--out {out} is a directory; give a file name ending in .{kind}")
    for parent in [out.parent, *out.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise PipelineInputError(f"--out {out}: {parent} is a file, not a directory")
            break


def write_result(result: DataFrame, out: Path) -> int:
    """One Parquet or CSV file, written by Spark (one task), then moved into place."""
    check_out(out)
    kind = out.suffix.lower().lstrip(".")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        frame = result.coalesce(1).cache()
        rows = frame.count()
        writer = frame.write.mode("overwrite")
        (writer.option("header", True).csv if kind == "csv" else writer.parquet)(str(staging / "result"))
        part = next((staging / "result").glob(f"part-*.{kind}" if kind == "csv" else "part-*.parquet"))
        part.replace(out)
        frame.unpersist()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows


def features_as_of(tables: Tables, entity: str, ids: list[str], day) -> list[dict]:
    """The full snapshot row of each entity as of `day`, inactive ones included (resolved from the sparse
    table: features.snapshot_as_of); entities not known by then are absent. What `recpipe features` prints."""
    from features import snapshot_as_of as as_of
    from features.feature_spec import load_spec

    spec = load_spec()
    if entity not in ("user", "item"):
        raise PipelineInputError(f"--entity must be user or item, not {entity!r}")
    if not as_of.built_days(tables, entity):
        raise PipelineInputError(f"no {entity} snapshot built yet under {tables.root}: run recpipe snapshot first")
    if day not in as_of.built_days(tables, entity):
        built = sorted(as_of.built_days(tables, entity))
        raise PipelineInputError(f"no {entity} snapshot of {day}: snapshots exist for {built[0]}..{built[-1]}")
    try:
        keys = [int(i) for i in ids]
    except ValueError:
        raise PipelineInputError(f"{entity} ids are integers, not {', '.join(ids)}") from None
    key = spec.entities[entity]["key"][0]
    requests = tables.spark.createDataFrame([(k, day) for k in keys], f"{key} bigint, snapshot_date date")
    rows = as_of.read_as_of(tables, spec, entity, requests, [day]).orderBy(key).collect()
    return [row.asDict() for row in rows] + [
        {key: k, "snapshot_date": day, "_unknown": True} for k in sorted(set(keys) - {r[key] for r in rows})
    ]


def format_features(entity: str, rows: list[dict]) -> str:
    blocks = []
    for row in rows:
        head = f"{entity} {row[f'{entity}_id']} as of {row['snapshot_date']}"
        if row.get("_unknown"):
            blocks.append(f"{head}: not known by then (no event or dimension row on or before that day)")
            continue
        width = max(len(k) for k in row)
        blocks.append(
            "\n".join(
                [head, *(f"  {k:<{width}}  {v}" for k, v in row.items() if k not in (f"{entity}_id", "snapshot_date"))]
            )
        )
    return "\n\n".join(blocks)
