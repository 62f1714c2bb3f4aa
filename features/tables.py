"""Delta table layer: date-partitioned tables under one warehouse root, two interchangeable backends.

- DeltaRsTables (default, no JVM jars needed): Spark writes Parquet files in parallel into a staging
  directory of the table, the files are moved into their partition directories, and one delta-rs
  transaction commits their add actions together with the remove actions of the partitions being
  replaced. Readers ask delta-rs for the file list of the wanted version and read it with Spark.
  No rows pass through the driver. Until the commit, the Delta log (and so every reader) is unchanged.
- DeltaSparkTables: the io.delta Spark extension (clusters, Databricks), used natively.

Both produce standard Delta tables readable by Spark+Delta, delta-rs, Polars and DuckDB.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import uuid
from typing import Any, Callable, Iterable, Protocol, Sequence

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from features.errors import ConcurrentWriteError, PipelineInputError
from features.storage import resolve as resolve_location

STAGING_DIR = "_staging"
MAX_RECORDS_PER_FILE = 2_000_000  # one file per date partition unless it is larger than this
COMMIT_ATTEMPTS = 3  # a replace that lost the commit race to another writer is committed again after it
WRITE_ID_KEY = "recpipeWriteId"  # in commitInfo: finds the version a write created among concurrent ones
FAULT_BEFORE_COMMIT = "RECPIPE_FAULT_BEFORE_COMMIT"  # test hook, see _fault_point
FAULT_TABLE = "RECPIPE_FAULT_TABLE"
FAULT_MAX_WAIT_SECONDS = 600

_log = logging.getLogger(__name__)


def _clustered(frame: DataFrame, partition_column: str) -> DataFrame:
    """Rows of one date partition go to one writer task, so a day becomes one file (or a few big ones)."""
    return frame.repartition(F.col(partition_column))


class TableNotFound(FileNotFoundError):
    """A table that has never been written (the message names its path)."""


class TableUnreadable(PipelineInputError):
    """A table whose Delta log cannot be read (a damaged or foreign _delta_log): the message names the table."""


def _fault_point(table: str) -> None:
    """Test hook for fault injection, off unless RECPIPE_FAULT_BEFORE_COMMIT names a file: with the data
    files in their partition directories and before the Delta commit, create that file and wait while it
    exists (at most 600 s), so a test can kill the writer here or release several writers at once.
    RECPIPE_FAULT_TABLE, if set, limits the hook to that table."""
    marker = os.environ.get(FAULT_BEFORE_COMMIT)
    if not marker or os.environ.get(FAULT_TABLE, table) != table:
        return
    hold_at_marker(marker, table)


def hold_at_marker(marker: str, what: str) -> None:
    """Fault-injection hooks' pause: create `marker` (this process's id and `what`) and wait while it
    exists, at most FAULT_MAX_WAIT_SECONDS, so a test can kill the process here or release it."""
    with open(marker, "w") as handle:
        handle.write(f"{os.getpid()} {what}\n")
    deadline = time.monotonic() + FAULT_MAX_WAIT_SECONDS
    while os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.05)


def _partition_claims(partition_column: str, partitions: Sequence[str]) -> list:
    """One Delta app transaction (txn action) per partition a write replaces or appends to.

    delta-rs's conflict checker fails a commit when a commit since its read version carries a txn of
    the same app id. Without these, two overwrites of a partition that had no files yet (a new day)
    both commit and the partition holds both writers' rows: the checker only sees conflicts on files
    that were read or removed, and an overwrite of an empty partition reads and removes none."""
    from deltalake import Transaction

    stamp = time.time_ns()
    return [Transaction(app_id=f"recpipe:{partition_column}={value}", version=stamp) for value in partitions]


def _commit_info(fs: pafs.FileSystem, commit_file: str) -> dict:
    with fs.open_input_stream(commit_file) as handle:
        for line in handle.read().decode().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "commitInfo" in action:
                return action["commitInfo"]
    return {}


def _reads_table(
    frame: DataFrame, table_path: str, partition_column: str | None = None, values: Sequence[str] | None = None
) -> bool:
    """True when the frame reads files of this table that the write replaces (a read-modify-write);
    unknown counts as True. With `values`, only files of those partitions count: a frame that reads
    other partitions of the table (e.g. to look up ids delivered earlier) is not modifying them."""
    try:
        files = frame.inputFiles()
    except Exception:
        return True
    prefix = table_path.removeprefix("file://").rstrip("/") + "/"
    inside = [
        f.removeprefix("file://").removeprefix("file:")[len(prefix) :]
        for f in files
        if f.removeprefix("file://").removeprefix("file:").startswith(prefix)
    ]
    if values is None or partition_column is None:
        return bool(inside)
    replaced = {f"{partition_column}={v}" for v in values}
    return any(relative.split("/", 1)[0] in replaced for relative in inside)


def _partition_strings(values: Iterable[Any]) -> list[str]:
    return sorted({v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else str(v) for v in values})


class Tables(Protocol):
    """One interface, two backends (see module docstring)."""

    root: str

    @property
    def spark(self) -> SparkSession: ...  # started on first use when open_tables was given a function
    def path(self, name: str) -> str: ...
    def names(self) -> list[str]: ...
    def exists(self, name: str) -> bool: ...
    def version(self, name: str) -> int: ...
    def replace_partitions(
        self,
        name: str,
        frame: DataFrame,
        partition_column: str,
        partitions: Iterable[Any],
        metadata: dict | None = None,
        precondition: Callable[[], None] | None = None,
    ) -> int: ...
    def replace_partitions_from_arrow(
        self,
        name: str,
        table: pa.Table,
        partition_column: str,
        partitions: Iterable[Any],
        metadata: dict | None = None,
        reads_table: bool = False,
    ) -> int: ...
    def read_arrow(self, name: str, *, partitions: Iterable[Any]) -> pa.Table: ...
    def append(self, name: str, frame: DataFrame, partition_column: str, metadata: dict | None = None) -> int: ...
    def read(
        self,
        name: str,
        *,
        version: int | None = None,
        timestamp: str | dt.datetime | None = None,
        partitions: Iterable[Any] | None = None,
    ) -> DataFrame: ...
    def history(self, name: str, limit: int | None = None) -> list[dict]: ...
    def partitions(self, name: str) -> tuple[str, list[str]]: ...
    def row_count(self, name: str, *, version: int | None = None, partitions: Iterable[Any] | None = None) -> int: ...
    def partition_files(
        self, name: str, partitions: Iterable[Any], version: int | None = None
    ) -> dict[str, frozenset]: ...


class _TablesBase:
    def __init__(self, spark: SparkSession | Callable[[], SparkSession], root: str, storage: Any = None):
        """spark: the session, or a function that starts it the first time a Spark read or write needs it
        (a job that only commits Arrow tables through delta-rs then never starts a JVM); root: a local path
        or an object-store URI in any spelling (features.storage); storage: the config's `storage` section
        (endpoint, region, delta-rs options) or None."""
        self._spark = spark
        self.location = resolve_location(root, storage)
        self.root = self.location.spark_uri

    @property
    def spark(self) -> SparkSession:
        if not isinstance(self._spark, SparkSession):
            self._spark = self._spark()
        return self._spark

    def path(self, name: str) -> str:
        """The table's URI as Spark reads and writes it (s3a://, abfss://, gs://, hdfs:// or a local path)."""
        return self.location.child(name).spark_uri

    def names(self) -> list[str]:
        """Tables present under the root (directories holding a Delta log)."""
        fs, base = self.location.filesystem()
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        return sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory
            and fs.get_file_info(f"{i.path}/_delta_log").type == pafs.FileType.Directory
        )


def _user_metadata(metadata: dict | None) -> str:
    return json.dumps(metadata or {}, sort_keys=True, default=str)


def _history_row(
    version: int, timestamp_ms: int | None, operation: str | None, user_metadata: str | None, parameters: Any = None
) -> dict:
    try:
        recpipe = json.loads(user_metadata) if user_metadata else {}
    except json.JSONDecodeError:
        recpipe = {"userMetadata": user_metadata}
    when = dt.datetime.fromtimestamp(timestamp_ms / 1000, tz=dt.timezone.utc) if timestamp_ms else None
    return {
        "version": int(version),
        "timestamp": when,
        "operation": operation,
        "parameters": parameters,
        "metadata": recpipe,
    }


class DeltaRsTables(_TablesBase):
    """Spark writes the files; delta-rs commits them (works with no Delta jars)."""

    backend = "delta-rs"

    def _fs(self, name: str) -> tuple[pafs.FileSystem, str]:
        """The pyarrow file system of a table and the table's directory in it."""
        return self.location.child(name).filesystem()

    def _uri(self, name: str) -> str:
        """The table's URI as delta-rs reads it (s3://, az://, gs://, hdfs:// or a local path)."""
        return self.location.child(name).arrow_uri

    @property
    def _options(self) -> dict[str, str] | None:
        return self.location.storage_options or None

    def _delta(self, name: str, version: int | None = None, timestamp: str | dt.datetime | None = None):
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        try:
            table = DeltaTable(self._uri(name), storage_options=self._options)
        except TableNotFoundError as error:
            raise TableNotFound(f"table {name} does not exist at {self.path(name)}") from error
        except DeltaError as error:
            raise _unreadable(name, self.path(name), error) from None
        if version is not None:
            if not 0 <= int(version) <= table.version():
                raise PipelineInputError(f"{name} has versions 0..{table.version()}, not {version}")
            try:
                table.load_as_version(int(version))
            except DeltaError as error:
                raise _unreadable(name, self.path(name), error) from None
        elif timestamp is not None:
            table.load_as_version(_as_datetime(timestamp))
        return table

    def exists(self, name: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self._uri(name), storage_options=self._options)

    def version(self, name: str) -> int:
        return self._delta(name).version()

    def replace_partitions(self, name, frame, partition_column, partitions, metadata=None, precondition=None) -> int:
        """`precondition`, if given, runs right before each commit attempt (after the files are written)
        and stops the write by raising: a job uses it to check it still owns what it is replacing."""
        values = _partition_strings(partitions)
        if not values:
            raise ValueError(f"replace_partitions({name}) needs at least one partition value")
        return self._write(name, frame, partition_column, "overwrite", values, metadata, precondition)

    def replace_partitions_from_arrow(
        self, name, table, partition_column, partitions, metadata=None, reads_table=False
    ) -> int:
        """replace_partitions for rows the driver holds as an Arrow table: pyarrow writes the files (one per
        partition, or more above MAX_RECORDS_PER_FILE rows) and delta-rs commits them; no Spark session.
        `reads_table`: the rows include rows read from this table (a read-modify-write), so a commit that
        loses a race fails with ConcurrentWriteError instead of being committed again."""
        values = _partition_strings(partitions)
        if not values:
            raise ValueError(f"replace_partitions_from_arrow({name}) needs at least one partition value")
        fs, table_dir = self._fs(name)
        run_dir = f"{STAGING_DIR}/{uuid.uuid4().hex}"
        write_id = uuid.uuid4().hex
        index = table.schema.get_field_index(partition_column)
        as_text = table.set_column(index, partition_column, pa.compute.cast(table.column(index), pa.string()))

        def write_files() -> None:
            import pyarrow.dataset as ds

            ds.write_dataset(
                as_text,
                f"{table_dir}/{run_dir}",
                filesystem=fs,
                format="parquet",
                partitioning=ds.partitioning(pa.schema([(partition_column, pa.string())]), flavor="hive"),
                basename_template=f"part-{{i}}-{write_id}.snappy.parquet",
                max_rows_per_file=MAX_RECORDS_PER_FILE,
                max_rows_per_group=min(MAX_RECORDS_PER_FILE, 1 << 20),
                max_partitions=max(1024, len(values) + 1),
                existing_data_behavior="error",
            )

        return self._commit_staged(
            name,
            run_dir,
            _nullable(table.schema),
            partition_column,
            "overwrite",
            values,
            metadata,
            None,
            self._snapshot(name),
            write_files=write_files,
            retry=lambda: not reads_table,
        )

    def read_arrow(self, name, *, partitions) -> pa.Table:
        """The newest version's rows of `partitions` as an Arrow table read by delta-rs (no Spark session),
        in the table's column order and types."""
        table = self._delta(name)
        partition_column = table.metadata().partition_columns[0]
        values = _partition_strings(partitions)
        schema = table.schema().to_arrow()
        if not values:
            return pa.Table.from_batches([], schema=pa.schema(schema))
        return table.to_pyarrow_table(partitions=[(partition_column, "in", values)])

    def append(self, name, frame, partition_column, metadata=None) -> int:
        return self._write(name, frame, partition_column, "append", None, metadata)

    def _write(self, name, frame, partition_column, mode, values, metadata, precondition=None) -> int:
        table_path = self.path(name)
        run_dir = f"{STAGING_DIR}/{uuid.uuid4().hex}"
        arrow_schema = _nullable(to_arrow_schema(frame.schema, timezone="UTC"))
        read = self._snapshot(name)  # the version this write starts from: the commit must follow it
        return self._commit_staged(
            name,
            run_dir,
            arrow_schema,
            partition_column,
            mode,
            values,
            metadata,
            precondition,
            read,
            write_files=lambda: (
                _clustered(frame, partition_column)
                .write.mode("error")
                .partitionBy(partition_column)
                .option("maxRecordsPerFile", MAX_RECORDS_PER_FILE)
                .parquet(f"{table_path}/{run_dir}")
            ),
            retry=lambda: not _reads_table(frame, table_path, partition_column, values),
        )

    def _commit_staged(
        self,
        name,
        run_dir,
        arrow_schema,
        partition_column,
        mode,
        values,
        metadata,
        precondition,
        read,
        write_files: Callable[[], None],
        retry: Callable[[], bool],
    ) -> int:
        """Everything of a write after the data: `write_files` puts the Parquet files under
        <table>/<run_dir>/<column>=<value>/ (Spark, in parallel), then they are moved into their partitions
        and committed in one delta-rs transaction; only this part touches the store through pyarrow and
        delta-rs (so it is what tests/test_object_store.py runs against an S3-compatible server)."""
        fs, table_dir = self._fs(name)
        moved: list[str] = []
        try:
            write_files()
            staged = self._staged_files(fs, f"{table_dir}/{run_dir}")
            unexpected = sorted({part for part, _ in staged if values is not None and part not in values})
            if unexpected:
                raise ValueError(
                    f"{name}: rows for partitions {unexpected[:5]} outside the ones being replaced {values[:5]}"
                )
            actions = self._move_into_partitions(fs, table_dir, staged, partition_column, moved)
            touched = values if values is not None else sorted({part for part, _ in staged})
            _fault_point(name)
            return self._commit(
                name,
                read,
                actions,
                arrow_schema,
                partition_column,
                mode,
                values,
                metadata,
                precondition,
                _partition_claims(partition_column, touched),
                retry=retry(),
            )
        except ConcurrentWriteError:
            for relative in moved:  # never committed: no version references them
                fs.delete_file(f"{table_dir}/{relative}")
            raise
        finally:
            fs.delete_dir_contents(f"{table_dir}/{run_dir}", missing_dir_ok=True)
            try:
                fs.delete_dir(f"{table_dir}/{run_dir}")
            except (FileNotFoundError, OSError):
                pass

    def _snapshot(self, name):
        """The table's newest version as a DeltaTable, or None when the table does not exist yet."""
        return self._delta(name) if self.exists(name) else None

    @staticmethod
    def _move_into_partitions(fs, table_dir, staged, partition_column, moved: list[str]) -> list:
        """Moves the staged files into their partition directories (recording each in `moved`) and
        returns their add actions."""
        from deltalake.transaction import AddAction

        actions = []
        for partition_value, source in staged:
            relative = f"{partition_column}={partition_value}/{os.path.basename(source)}"
            fs.create_dir(f"{table_dir}/{partition_column}={partition_value}", recursive=True)
            fs.move(source, f"{table_dir}/{relative}")
            moved.append(relative)
            info = fs.get_file_info(f"{table_dir}/{relative}")
            with fs.open_input_file(f"{table_dir}/{relative}") as handle:
                rows = pq.read_metadata(handle).num_rows
            actions.append(
                AddAction(
                    path=relative,
                    size=info.size,
                    partition_values={partition_column: partition_value},
                    modification_time=int(info.mtime.timestamp() * 1000),
                    data_change=True,
                    stats=json.dumps({"numRecords": rows}),
                )
            )
        return actions

    def _commit(
        self, name, read, actions, arrow_schema, partition_column, mode, values, metadata, precondition, claims, retry
    ) -> int:
        """One delta-rs transaction on top of the version `read`; returns the version it created.

        `claims` (one app transaction per partition written, see _partition_claims) make delta-rs refuse
        the commit when another writer committed to one of the same partitions since `read`. A write
        whose rows do not come from this table (retry=True) is then committed again on top of the newer
        version, as if it had run after the other writer; a read-modify-write fails instead with a
        one-line ConcurrentWriteError."""
        from deltalake import CommitProperties
        from deltalake.exceptions import DeltaError

        write_id = uuid.uuid4().hex
        properties = CommitProperties(
            custom_metadata={"userMetadata": _user_metadata(metadata), WRITE_ID_KEY: write_id}, app_transactions=claims
        )
        started = read.version() if read is not None else -1
        for attempt in range(1, (COMMIT_ATTEMPTS if retry else 1) + 1):
            try:
                if precondition is not None:
                    precondition()
                self._commit_once(name, read, actions, arrow_schema, partition_column, mode, values, properties)
                return self._committed_version(name, write_id, started)
            except DeltaError as error:
                if not self._lost_race(name, read, error):
                    raise
            read = self._snapshot(name)
            if retry and attempt < COMMIT_ATTEMPTS:
                _log.warning(
                    "table %s: another writer committed version %s first; committing again after it (attempt %d of %d)",
                    name,
                    read.version(),
                    attempt + 1,
                    COMMIT_ATTEMPTS,
                )
        newest = self.version(name)
        advice = (
            "its input was read from the table, so it was not committed over the newer version"
            if not retry
            else f"it was retried {COMMIT_ATTEMPTS} times"
        )
        raise ConcurrentWriteError(
            f"table {name}: another writer committed version {newest} while this write (started at version "
            f"{started}) was running; {advice}; nothing was committed, rerun the job"
        )

    def _commit_once(self, name, read, actions, arrow_schema, partition_column, mode, values, properties) -> None:
        from deltalake.transaction import create_table_with_add_actions

        if read is None:
            create_table_with_add_actions(
                self._uri(name),
                _delta_schema(arrow_schema),
                actions,
                mode="error",
                partition_by=[partition_column],
                name=name,
                commit_properties=properties,
                storage_options=self._options,
            )
            return
        filters = [(partition_column, "in", values)] if values is not None else None
        read.create_write_transaction(
            actions,
            mode=mode,
            schema=_delta_schema(arrow_schema),
            partition_by=[partition_column],
            partition_filters=filters,
            commit_properties=properties,
        )

    def _lost_race(self, name, read, error: Exception) -> bool:
        """The commit failed because another writer committed first (not for any other reason)."""
        from deltalake.exceptions import CommitFailedError

        return isinstance(error, CommitFailedError) or (read is None and self.exists(name))

    def _committed_version(self, name, write_id: str, started: int) -> int:
        """The version whose commitInfo carries write_id. Read from the log files: delta-rs's history()
        numbers its entries down from the loaded version, which is off when commits land meanwhile."""
        fs, table_dir = self._fs(name)
        latest = self.version(name)
        for version in range(latest, started, -1):
            if _commit_info(fs, f"{table_dir}/_delta_log/{version:020d}.json").get(WRITE_ID_KEY) == write_id:
                return version
        return latest

    @staticmethod
    def _staged_files(fs: pafs.FileSystem, staging_dir: str) -> list[tuple[str, str]]:
        infos = fs.get_file_info(pafs.FileSelector(staging_dir, recursive=True, allow_not_found=True))
        staged = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
                continue
            directory = os.path.basename(os.path.dirname(info.path))
            _, _, value = directory.partition("=")
            staged.append((value, info.path))
        return sorted(staged)

    def read(self, name, *, version=None, timestamp=None, partitions=None) -> DataFrame:
        table = self._delta(name, version, timestamp)
        schema = _spark_schema(table)
        partition_column = table.metadata().partition_columns[0]
        filters = [(partition_column, "in", _partition_strings(partitions))] if partitions is not None else None
        if filters and not filters[0][2]:
            return self.spark.createDataFrame([], schema)
        uris = table.file_uris(partition_filters=filters)
        if not uris:
            return self.spark.createDataFrame([], schema)
        frame = self.spark.read.schema(schema).option("basePath", self.path(name)).parquet(*self.spark_uris(uris))
        return frame.select(*schema.fieldNames())

    def spark_uris(self, uris: Sequence[str]) -> list[str]:
        """delta-rs's file URIs (s3://, az://, file://) as Spark reads them (s3a://, abfss://, a path)."""
        return [self.location.arrow_to_spark(u) for u in uris]

    def history(self, name, limit=None) -> list[dict]:
        rows = []
        for entry in self._delta(name).history(limit):
            rows.append(
                _history_row(
                    entry.get("version"),
                    entry.get("timestamp"),
                    entry.get("operation"),
                    entry.get("userMetadata"),
                    entry.get("operationParameters"),
                )
            )
        return sorted(rows, key=lambda r: r["version"], reverse=True)

    def row_count(self, name, *, version=None, partitions=None) -> int:
        """Rows of a version (or some of its partitions), from the numRecords statistics in the log."""
        table = self._delta(name, version)
        column = table.metadata().partition_columns[0]
        actions = pa.table(table.get_add_actions(flatten=True))
        if actions.num_rows == 0:
            return 0
        if partitions is not None:
            wanted = pa.array(_partition_strings(partitions), pa.string())
            values = actions.column(f"partition.{column}").cast(pa.string())
            actions = actions.filter(pa.compute.is_in(values, value_set=wanted))
        return int(pa.compute.sum(actions.column("num_records")).as_py() or 0)

    def partition_files(self, name, partitions, version=None) -> dict[str, frozenset]:
        """The data files (relative paths) of each given partition at a version (default: the newest),
        from the Delta log alone: two calls tell whether a partition changed between two versions."""
        table = self._delta(name, version)
        column = table.metadata().partition_columns[0]
        wanted = _partition_strings(partitions)
        found: dict[str, set] = {value: set() for value in wanted}
        actions = pa.table(table.get_add_actions(flatten=True))
        if actions.num_rows:
            values = actions.column(f"partition.{column}").cast(pa.string()).to_pylist()
            for path, value in zip(actions.column("path").to_pylist(), values):
                if value in found:
                    found[value].add(path)
        return {value: frozenset(paths) for value, paths in found.items()}

    def partitions(self, name) -> tuple[str, list[str]]:
        table = self._delta(name)
        column = table.metadata().partition_columns[0]
        actions = pa.table(table.get_add_actions(flatten=True))
        key = f"partition.{column}"
        values = actions.column(key).to_pylist() if key in actions.column_names else []
        return column, _partition_strings(v for v in values if v is not None)


class DeltaSparkTables(_TablesBase):
    """The io.delta Spark extension, for sessions that have its jars (clusters, Databricks)."""

    backend = "delta-spark"

    def _delta(self, name):
        from delta.tables import DeltaTable

        if not self.exists(name):
            raise TableNotFound(f"table {name} does not exist at {self.path(name)}")
        return DeltaTable.forPath(self.spark, self.path(name))

    def exists(self, name) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.path(name))

    def version(self, name) -> int:
        return int(self._delta(name).history(1).select("version").first()[0])

    def replace_partitions(self, name, frame, partition_column, partitions, metadata=None, precondition=None) -> int:
        values = _partition_strings(partitions)
        if precondition is not None:
            precondition()
        quoted = ", ".join(f"'{v}'" for v in values)
        (
            _clustered(frame, partition_column)
            .write.format("delta")
            .mode("overwrite")
            .partitionBy(partition_column)
            .option("replaceWhere", f"{partition_column} IN ({quoted})")
            .option("userMetadata", _user_metadata(metadata))
            .save(self.path(name))
        )
        return self.version(name)

    def replace_partitions_from_arrow(
        self, name, table, partition_column, partitions, metadata=None, reads_table=False
    ) -> int:
        # Delta's own optimistic concurrency checks the commit (it sees the rows as new ones either way)
        return self.replace_partitions(name, self.spark.createDataFrame(table), partition_column, partitions, metadata)

    def read_arrow(self, name, *, partitions) -> pa.Table:
        return self.read(name, partitions=partitions).toArrow()

    def append(self, name, frame, partition_column, metadata=None) -> int:
        (
            _clustered(frame, partition_column)
            .write.format("delta")
            .mode("append")
            .partitionBy(partition_column)
            .option("userMetadata", _user_metadata(metadata))
            .save(self.path(name))
        )
        return self.version(name)

    def read(self, name, *, version=None, timestamp=None, partitions=None) -> DataFrame:
        if not self.exists(name):
            raise TableNotFound(f"table {name} does not exist at {self.path(name)}")
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", int(version))
        elif timestamp is not None:
            reader = reader.option("timestampAsOf", _as_datetime(timestamp).isoformat())
        frame = reader.load(self.path(name))
        if partitions is not None:
            column, _ = self.partitions(name)
            frame = frame.where(F.col(column).cast("string").isin(_partition_strings(partitions)))
        return frame

    def history(self, name, limit=None) -> list[dict]:
        rows = (
            self._delta(name)
            .history(limit)
            .select("version", "timestamp", "operation", "userMetadata", "operationParameters")
            .collect()
        )
        return [
            _history_row(
                r.version,
                int(r.timestamp.replace(tzinfo=dt.timezone.utc).timestamp() * 1000),
                r.operation,
                r.userMetadata,
                r.operationParameters,
            )
            for r in rows
        ]

    def row_count(self, name, *, version=None, partitions=None) -> int:
        return self.read(name, version=version, partitions=partitions).count()

    def partition_files(self, name, partitions, version=None) -> dict[str, frozenset]:
        column, _ = self.partitions(name)
        wanted = _partition_strings(partitions)
        rows = (
            self.read(name, version=version, partitions=wanted)
            .select(F.col(column).cast("string").alias("value"), F.input_file_name().alias("path"))
            .distinct()
            .collect()
        )  # one row per file
        found: dict[str, set] = {value: set() for value in wanted}
        for row in rows:
            found[row["value"]].add(row["path"].rsplit("/", 2)[-2] + "/" + row["path"].rsplit("/", 1)[-1])
        return {value: frozenset(paths) for value, paths in found.items()}

    def partitions(self, name) -> tuple[str, list[str]]:
        detail = self._delta(name).detail().select("partitionColumns").first()
        column = detail[0][0]
        values = self.read(name).select(F.col(column).cast("string")).distinct().collect()
        return column, _partition_strings(v[0] for v in values)


def delta_spark_available(spark: SparkSession) -> bool:
    """True when the io.delta extension is configured and its classes are on the session classpath."""
    if "io.delta" not in (spark.conf.get("spark.sql.extensions", "") or ""):
        return False
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None  # a classic session: its JVM gateway is up
        jvm.java.lang.Class.forName("io.delta.sql.DeltaSparkSessionExtension")
        return True
    except Exception:
        return False


def open_tables(
    spark: SparkSession | Callable[[], SparkSession], root: str, backend: str = "auto", storage: Any = None
) -> Tables:
    """backend: auto (delta-spark when available, else delta-rs) | delta-rs | delta-spark; storage: the
    config's `storage` section for object-store roots (features.storage). `spark` may be a function that
    starts the session: delta-rs tables call it on their first Spark read or write, the others at once."""
    if backend not in ("auto", "delta-rs", "delta-spark"):
        raise ValueError(f"unknown delta backend {backend!r}: use auto, delta-rs or delta-spark")
    if backend == "delta-rs":
        return DeltaRsTables(spark, root, storage)
    if not isinstance(spark, SparkSession):
        spark = spark()
    if backend == "delta-spark" or (backend == "auto" and delta_spark_available(spark)):
        if not delta_spark_available(spark):
            raise RuntimeError(
                "delta backend 'delta-spark' needs the io.delta jars on the Spark classpath "
                "(e.g. spark-submit --packages io.delta:delta-spark_2.13:4.4.1); use 'delta-rs'"
            )
        return DeltaSparkTables(spark, root, storage)
    return DeltaRsTables(spark, root, storage)


def _unreadable(name: str, path: str, error: Exception) -> TableUnreadable:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return TableUnreadable(
        f"table {name} at {path}: its Delta log cannot be read ({first}); restore "
        f"{path}/_delta_log from a backup or rebuild the table"
    )


def _nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([field.with_nullable(True) for field in schema])


def _delta_schema(arrow_schema: pa.Schema):
    from deltalake import Schema

    return Schema.from_arrow(arrow_schema)


def _spark_schema(table) -> StructType:
    return from_arrow_schema(pa.schema(table.schema().to_arrow()), prefer_timestamp_ntz=False)


def _as_datetime(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    else:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


class PartitionVersions:
    """The data files of some partitions of one table at any version, each version listed once from the
    Delta log (no data read): whether a partition differs between two versions, e.g. the version a
    check, a snapshot or an ingest run recorded and the version a job reads now."""

    def __init__(self, tables: Tables, name: str, partitions: Iterable[Any]):
        self.tables, self.name, self.partitions = tables, name, list(partitions)
        self._files: dict[int | None, dict[str, frozenset]] = {}

    def files(self, version: int | None = None) -> dict[str, frozenset]:
        if version not in self._files:
            self._files[version] = self.tables.partition_files(self.name, self.partitions, version=version)
        return self._files[version]

    def changed(self, partition: Any, since: int, now: int | None = None) -> bool:
        """Whether `partition` holds other files at `now` (default: the newest version) than at `since`."""
        key = _partition_strings([partition])[0]
        return self.files(since).get(key, frozenset()) != self.files(now).get(key, frozenset())


def partition_dates(tables: Tables, name: str) -> set[dt.date]:
    """The date partitions a table holds now (empty when the table does not exist yet)."""
    if not tables.exists(name):
        return set()
    return {dt.date.fromisoformat(v) for v in tables.partitions(name)[1]}


def describe(tables: Tables, names: Sequence[str]) -> list[dict]:
    """Version, partition count and last commit of each existing table (for printing)."""
    out = []
    for name in names:
        if not tables.exists(name):
            continue
        column, values = tables.partitions(name)
        last = tables.history(name, 1)[0]
        out.append(
            {
                "table": name,
                "version": tables.version(name),
                "partition_column": column,
                "partitions": len(values),
                "first": values[0] if values else None,
                "last": values[-1] if values else None,
                "rows": tables.row_count(name),
                "last_commit": last["timestamp"],
                "last_job": last["metadata"].get("job"),
            }
        )
    return out
