"""Time splits: cut points at event-time quantiles (train/valid/test), and rolling replay splits."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

SPLITS = ("train", "valid", "test")


def quantile_cut_points(samples: DataFrame, quantiles: list[float], relative_error: float = 0.001) -> list[dt.datetime]:
    """Event times at the given quantiles (approxQuantile: rank error <= relative_error * rows; 0 = exact).
    The sketch is fed one sorted partition of event-time longs (8 bytes a row), so the cut points
    depend on the rows only, not on how the plan that made them happened to partition them: a rerun,
    or the same rows from another join order, gets the same cut points and the same split."""
    if sorted(quantiles) != list(quantiles) or not all(0 < q < 1 for q in quantiles):
        raise ValueError(f"split quantiles must be increasing and inside (0, 1): {quantiles}")
    micros = samples.select(F.unix_micros("event_time").alias("t")).repartition(1).sortWithinPartitions("t")
    cuts = micros.approxQuantile("t", list(quantiles), relative_error)
    if len(cuts) != len(quantiles):
        raise ValueError("cannot split an empty sample set")
    return [dt.datetime.fromtimestamp(c / 1e6, tz=dt.timezone.utc) for c in cuts]


def assign_split(samples: DataFrame, cut_points: list[dt.datetime]) -> DataFrame:
    """train: event_time < cut 1; valid: cut 1 <= t < cut 2; test: t >= cut 2."""
    train_cut, valid_cut = (F.lit(c).cast("timestamp") for c in cut_points)
    return samples.withColumn(
        "split",
        F.when(F.col("event_time") < train_cut, "train")
        .when(F.col("event_time") < valid_cut, "valid")
        .otherwise("test"),
    )


def rolling_splits(
    days: list[dt.date], train_days: int, test_days: int = 1, step: int = 1
) -> list[tuple[list[dt.date], list[dt.date]]]:
    """Replay evaluation: train on days a..b, test on the next `test_days`, then move on by `step`."""
    if train_days < 1 or test_days < 1 or step < 1:
        raise ValueError("train_days, test_days and step must be positive")
    ordered = sorted(days)
    return [
        (ordered[i : i + train_days], ordered[i + train_days : i + train_days + test_days])
        for i in range(0, len(ordered) - train_days - test_days + 1, step)
    ]
