"""Events delivered more than once across drops: an event id counts once, from the first drop that
delivered it.

Upstream systems resend events (a retried export, an overlapping backfill): the same `event_id` in
the drop of day D and again in the drop of D+1 or later. Within one drop, duplicates are handled by
features/ingest.validate. Across drops, this module keeps the copy of the earliest drop and sends
every later copy to the quarantine with the reason
`duplicate event_id (already ingested from drop YYYY-MM-DD)`.

Where the id is looked for (the horizon): the drops at most `horizon_days` before or after the drop
being ingested, both in the events table (partitions pruned by date, never the whole table) and among
the drops of the same run. A valid copy of an event can only be in drops up to the allowed lateness
after its event date (the drop's time window rejects older event times), so a horizon of the
lateness plus a week catches every exact redelivery with room to spare. Beyond the horizon an id is
not looked up: a copy whose event time was corrected by more than the horizon is taken as a new
event. Out-of-order ingestion: the copy already in the table wins ("already ingested"), so ingesting
D+1 before D keeps D+1's copy and quarantines D's.

Library code: DataFrames in, DataFrames out; the job passes the events rows of the horizon.
"""

from __future__ import annotations

import datetime as dt
import math

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

EXTRA_DAYS = 7  # the default horizon is the lateness window plus a week


def default_horizon_days(allowed_lateness_hours: float) -> int:
    return math.ceil(allowed_lateness_hours / 24) + EXTRA_DAYS


def horizon_partitions(days: list[dt.date], existing: set[dt.date], horizon_days: int) -> list[dt.date]:
    """The existing drop partitions, other than the ones being replaced, that can hold an id of `days`."""
    replaced = set(days)
    return sorted(d for d in existing if d not in replaced and any(abs((d - day).days) <= horizon_days for day in days))


def _day_number(column: str) -> Column:
    return F.datediff(F.col(column), F.lit(dt.date(1970, 1, 1)))


def split_redelivered(rows: DataFrame, ingested: DataFrame, key: str, horizon_days: int) -> tuple[DataFrame, DataFrame]:
    """rows: this run's valid rows (key, drop_date, ...), at most one per (drop_date, key).
    ingested: (key, drop_date) of the events already committed in the horizon's other partitions.
    Returns (kept rows, redelivered rows with a column `first_drop`: the drop it was ingested from).

    One shuffle by key: the committed ids are unioned with the run's rows and two window minimums
    over the drop day find, per row, the earliest earlier drop of the run and the earliest committed
    drop within the horizon (before or after: the committed copy wins)."""
    columns = rows.columns
    committed = ingested.select(key, "drop_date").where(F.col(key).isNotNull()).withColumn("_in_run", F.lit(False))
    both = rows.withColumn("_in_run", F.lit(True)).unionByName(committed, allowMissingColumns=True)
    by_day = Window.partitionBy(key).orderBy(_day_number("drop_date"))
    run_first = F.min(F.when(F.col("_in_run"), F.col("drop_date"))).over(by_day.rangeBetween(-horizon_days, -1))
    committed_first = F.min(F.when(~F.col("_in_run"), F.col("drop_date"))).over(
        by_day.rangeBetween(-horizon_days, horizon_days)
    )
    marked = both.withColumn("first_drop", F.least(run_first, committed_first)).where(F.col("_in_run")).drop("_in_run")
    kept = marked.where(F.col("first_drop").isNull()).select(*columns)
    redelivered = marked.where(F.col("first_drop").isNotNull())
    return kept, redelivered


def relabel_late_copies(late: DataFrame, known: DataFrame, key: str, horizon_days: int) -> DataFrame:
    """late: quarantine rows rejected only for their time (outside the drop's window) with the line's
    `key`; known: (key, drop_date) of the events kept, committed or in this run. A late line whose id
    is known from another drop within the horizon is a redelivery (an event resent days later is also
    too old for its new drop): its reason becomes the duplicate reason. Returns quarantine rows."""
    tagged = late.withColumn("_line", F.monotonically_increasing_id())
    other = known.select(F.col(key).alias("_key"), F.col("drop_date").alias("_known_drop"))
    matched = tagged.join(
        other,
        (F.col(key) == F.col("_key"))
        & (F.col("_known_drop") != F.col("drop_date"))
        & (F.abs(F.datediff("drop_date", "_known_drop")) <= horizon_days),
        "left",
    )
    first = matched.groupBy("_line", "drop_date", "source_file", "raw_record", "reason").agg(
        F.min("_known_drop").alias("first_drop")
    )
    reason = F.when(F.col("first_drop").isNotNull(), redelivery_reason(key)).otherwise(F.col("reason"))
    return first.select("drop_date", "source_file", "raw_record", reason.alias("reason"))


def redelivery_reason(key: str) -> Column:
    return F.concat(
        F.lit(f"duplicate {key} (already ingested from drop "), F.col("first_drop").cast("string"), F.lit(")")
    )
