"""Contract of the Delta table layer, run against every backend available in this session."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from features.tables import DeltaRsTables, TableNotFound, delta_spark_available, open_tables

D1, D2, D3 = dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)
SCHEMA = "id long, name string, value double, event_time timestamp, day date"


def _utc(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.timezone.utc)


def _rows(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


@pytest.fixture(params=["delta-rs", "delta-spark"])
def tables(request, spark, tmp_path):
    if request.param == "delta-spark" and not delta_spark_available(spark):
        pytest.skip(
            "delta-spark backend: io.delta classes are not on this session's classpath (Maven is "
            "unreachable here; set RECPIPE_DELTA_JARS or RECPIPE_DELTA_PACKAGES, see README)"
        )
    return open_tables(spark, str(tmp_path / "warehouse"), request.param)


def _sorted(frame):
    return frame.orderBy("id")


def test_replace_partition_is_atomic_and_old_version_stays_readable(spark, tables):
    first = _rows(spark, [(1, "a", 1.0, _utc(D1, 1), D1), (2, "b", 2.0, _utc(D2, 1), D2)])
    v0 = tables.replace_partitions("t", first, "day", [D1, D2], {"job": "test", "step": 1})
    second = _rows(spark, [(3, "c", 3.0, None, D2)])
    v1 = tables.replace_partitions("t", second, "day", [D2], {"job": "test", "step": 2})
    assert v1 == v0 + 1

    expected_now = _rows(spark, [(1, "a", 1.0, _utc(D1, 1), D1), (3, "c", 3.0, None, D2)])
    assert_df_equality(_sorted(tables.read("t")), _sorted(expected_now), ignore_nullable=True)
    # time travel: the replaced rows are still there at the previous version
    assert_df_equality(_sorted(tables.read("t", version=v0)), _sorted(first), ignore_nullable=True)
    history = tables.history("t")
    assert [h["version"] for h in history] == [v1, v0]
    assert history[0]["metadata"] == {"job": "test", "step": 2}


def test_rerun_with_same_rows_gives_identical_content(spark, tables):
    frame = _rows(spark, [(1, "a", 1.0, _utc(D1, 1), D1), (2, "b", None, _utc(D1, 2), D1)])
    tables.replace_partitions("t", frame, "day", [D1])
    tables.replace_partitions("t", frame, "day", [D1])
    assert_df_equality(_sorted(tables.read("t")), _sorted(frame), ignore_nullable=True)
    assert tables.read("t").count() == 2


def test_replacing_with_no_rows_empties_the_partition(spark, tables):
    tables.replace_partitions("t", _rows(spark, [(1, "a", 1.0, None, D1), (2, "b", 1.0, None, D2)]), "day", [D1, D2])
    tables.replace_partitions("t", _rows(spark, []), "day", [D1])
    assert [r.id for r in tables.read("t").collect()] == [2]
    assert tables.partitions("t") == ("day", [D2.isoformat()])


def test_rows_outside_the_replaced_partitions_are_refused(spark, tables):
    tables.replace_partitions("t", _rows(spark, [(1, "a", 1.0, None, D1)]), "day", [D1])
    with pytest.raises(Exception, match="outside|replaceWhere|match"):
        tables.replace_partitions("t", _rows(spark, [(2, "b", 1.0, None, D3)]), "day", [D1])
    assert [r.id for r in tables.read("t").collect()] == [1]


def test_append_read_by_partition_and_timestamp(spark, tables):
    tables.append("t", _rows(spark, [(1, "a", 1.0, None, D1)]), "day")
    after_first = tables.history("t", 1)[0]["timestamp"]
    tables.append("t", _rows(spark, [(2, "b", 1.0, None, D2), (3, "c", 1.0, None, D3)]), "day")
    assert tables.read("t").count() == 3
    assert sorted(r.id for r in tables.read("t", partitions=[D2, D3]).collect()) == [2, 3]
    assert [r.id for r in tables.read("t", timestamp=after_first).collect()] == [1]


def test_missing_table_names_its_path(tables):
    with pytest.raises(TableNotFound, match="nope"):
        tables.read("nope")


def test_delta_rs_table_is_standard_delta(spark, tmp_path):
    """Written by Spark + delta-rs, read by delta-rs (pandas) and Polars without Spark."""
    import polars as pl
    from deltalake import DeltaTable

    tables = DeltaRsTables(spark, str(tmp_path / "wh"))
    frame = _rows(spark, [(1, "a", 1.5, _utc(D1, 3), D1), (2, "b", None, None, D2)])
    tables.replace_partitions("t", frame, "day", [D1, D2])
    path = tables.path("t")
    pandas_rows = DeltaTable(path).to_pandas().sort_values("id")
    assert pandas_rows["name"].tolist() == ["a", "b"]
    assert str(pandas_rows["day"].iloc[0]) == "2026-01-01"
    polars_rows = pl.read_delta(path).sort("id")
    assert polars_rows["value"].to_list() == [1.5, None]
    assert polars_rows["event_time"][0].isoformat().startswith("2026-01-01T03:00")
    # partition directories as any Delta writer would make them; no staging leftovers in the log
    log = [
        json.loads(line)
        for f in sorted(os.listdir(f"{path}/_delta_log"))
        if f.endswith(".json")
        for line in open(f"{path}/_delta_log/{f}")
    ]
    added = [a["add"]["path"] for a in log if "add" in a]
    assert all(p.startswith("day=") for p in added)
    assert all(os.path.exists(f"{path}/{p}") for p in added)


def test_failed_write_leaves_the_table_unchanged(spark, tmp_path):
    tables = DeltaRsTables(spark, str(tmp_path / "wh"))
    tables.replace_partitions("t", _rows(spark, [(1, "a", 1.0, None, D1)]), "day", [D1])
    version = tables.version("t")
    failing = _rows(spark, [(2, "b", 1.0, None, D1)]).withColumn(
        "name", F.when(F.col("id") == 2, F.raise_error("boom")).otherwise(F.col("name"))
    )
    with pytest.raises(Exception, match="boom"):
        tables.replace_partitions("t", failing, "day", [D1])
    assert tables.version("t") == version
    assert [r.id for r in tables.read("t").collect()] == [1]


def test_row_count_by_version_and_partition(spark, tables):
    tables.replace_partitions(
        "t", _rows(spark, [(1, "a", 1.0, None, D1), (2, "b", 1.0, None, D2), (3, "c", 1.0, None, D2)]), "day", [D1, D2]
    )
    tables.replace_partitions("t", _rows(spark, []), "day", [D2])
    assert tables.row_count("t") == 1
    assert tables.row_count("t", version=tables.version("t") - 1) == 3
    assert tables.row_count("t", version=tables.version("t") - 1, partitions=[D2, D3]) == 2


def test_arrow_rows_replace_partitions_like_a_spark_frame(spark, tables):
    """replace_partitions_from_arrow (the gbdt driver path) gives the table a Spark frame of the same rows
    gives: same schema, rows and versions; the other partitions and the old version stay."""
    import pyarrow as pa

    rows = [(1, "a", 1.0, _utc(D1, 1), D1), (2, "b", None, None, D2), (3, "c", 3.0, _utc(D2, 5), D2)]
    tables.replace_partitions("spark_side", _rows(spark, rows), "day", [D1, D2])
    tables.replace_partitions("arrow_side", _rows(spark, rows[:1]), "day", [D1])
    arrow = pa.table(
        {
            "id": pa.array([2, 3], pa.int64()),
            "name": ["b", "c"],
            "value": pa.array([None, 3.0], pa.float64()),
            "event_time": pa.array([None, _utc(D2, 5)], pa.timestamp("us", tz="UTC")),
            "day": pa.array([D2, D2], pa.date32()),
        }
    )
    version = tables.replace_partitions_from_arrow("arrow_side", arrow, "day", [D2], {"job": "arrow"})
    assert version == 1 and tables.history("arrow_side", 1)[0]["metadata"] == {"job": "arrow"}
    assert_df_equality(_sorted(tables.read("arrow_side")), _sorted(tables.read("spark_side")), ignore_nullable=True)
    assert [r.id for r in tables.read("arrow_side", version=0).collect()] == [1]
    # a rerun replaces, never duplicates
    tables.replace_partitions_from_arrow("arrow_side", arrow, "day", [D2])
    assert sorted(r.id for r in tables.read("arrow_side").collect()) == [1, 2, 3]
    with pytest.raises(Exception, match="outside|replaceWhere|match"):
        tables.replace_partitions_from_arrow("arrow_side", arrow, "day", [D1])
    assert sorted(r.id for r in tables.read("arrow_side").collect()) == [1, 2, 3]


def test_arrow_rows_of_a_long_history_are_one_commit(spark, tmp_path):
    """Years of daily partitions (more than pyarrow's default 1,024 per write) in one delta-rs commit."""
    import pyarrow as pa

    days = [D1 + dt.timedelta(days=i) for i in range(1_100)]
    tables = DeltaRsTables(spark, str(tmp_path / "wh"))
    arrow = pa.table({"id": pa.array(range(len(days)), pa.int64()), "day": pa.array(days, pa.date32())})
    assert tables.replace_partitions_from_arrow("t", arrow, "day", days) == 0
    assert tables.row_count("t") == 1_100 and len(tables.partitions("t")[1]) == 1_100
    last = tables.read("t", partitions=[days[-1]]).collect()
    assert [(r.id, r.day) for r in last] == [(1_099, days[-1])]
