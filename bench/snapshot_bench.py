"""Benchmark: is the daily snapshot cost flat in history length, and does a backfill share work?

    .venv/bin/python bench/snapshot_bench.py --source movielens            # ml-100k from ../shared/data
    .venv/bin/python bench/snapshot_bench.py --source synthetic --days 200 --users 6500 --items 3000

Steps, all on one local Spark session (numbers are wall times of one run on this machine; compare the
printed ratios, not the seconds):
  1. raw drops (MovieLens import or synthetic logs) → ingest every day;
  2. backfill: `build_snapshots` over the whole range in one pass;
  3. incremental day: rebuild day 10 and day 200 alone (state carried from the day before);
  4. baseline "full recompute": snapshot of day D computed from scratch from every event <= D (no
     daily aggregates, no carried state), timed at a few days and integrated over all days to estimate
     the cost of 200 full recomputes.
Targets (issue 3): day 200 within 1.3x of day 10; the backfill at least 5x faster than full recomputes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from features.daily_aggregates import with_event_date  # noqa: E402
from features.feature_spec import load_spec  # noqa: E402
from features.tables import open_tables  # noqa: E402
from jobs.build_snapshot import build_snapshots  # noqa: E402
from jobs.ingest import ingest  # noqa: E402
from jobs.spark_session import build_session  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def full_recompute(tables, day: dt.date) -> int:
    """Snapshot of `day` from scratch: every event <= day scanned, windows and state recomputed."""
    spec = load_spec()
    events = with_event_date(tables.read("events")).where(F.col("event_date") <= F.lit(day))
    age = F.datediff(F.lit(day), "event_date")
    engaged = F.col("event_type").isin(list(spec.interaction_events))
    counts = [
        F.count(F.when((F.col("event_type") == event_type) & (age < w), 1)).alias(f"{name}_{w}d")
        for w in spec.windows_days
        for name, event_type in spec.counters.items()
    ]
    items = tables.read("items").where(F.col("drop_date") <= F.lit(day))
    latest = Window.partitionBy("item_id").orderBy(F.desc("drop_date"))
    category = items.withColumn("_n", F.row_number().over(latest)).where("_n = 1").select("item_id", "category")
    users = events.groupBy("user_id").agg(
        *counts,
        F.min("event_date").alias("first_active"),
        F.max("event_date").alias("last_active"),
        F.slice(
            F.transform(
                F.sort_array(F.collect_list(F.when(engaged, F.struct("event_time", "event_id", "item_id"))), asc=False),
                lambda e: e["item_id"],
            ),
            1,
            spec.last_n_items,
        ).alias("last_items"),
    )
    item_rows = events.groupBy("item_id").agg(*counts)
    user_category = events.where(age < 30).join(category, "item_id", "left").groupBy("user_id", "category").agg(*counts)
    rows = 0
    for name, frame in (("full_user", users), ("full_item", item_rows), ("full_user_category", user_category)):
        frame = frame.withColumn("snapshot_date", F.lit(day))
        tables.replace_partitions(name, frame, "snapshot_date", [day])
        rows += tables.read(name, partitions=[day]).count()
    return rows


def timed(action):
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["movielens", "synthetic"], default="movielens")
    parser.add_argument("--movielens", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--days", type=int, default=200)
    parser.add_argument("--users", type=int, default=6500)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument(
        "--samples",
        type=int,
        nargs="+",
        default=[10, 50, 100, 150, 200],
        help="days (1-based) at which the full recompute is timed",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = parser.parse_args()

    out = Path(args.out) / f"snapshot-{args.source}"
    shutil.rmtree(out, ignore_errors=True)
    raw, warehouse = out / "raw", out / "warehouse"
    if args.source == "movielens":
        from features.movielens import import_movielens

        summary = import_movielens(args.movielens, raw)
        first = dt.date.fromisoformat(summary["first_date"])
        last = dt.date.fromisoformat(summary["last_date"])
    else:
        from features.synthetic_logs import generate_logs

        first = dt.date(2026, 1, 1)
        summary = generate_logs(raw, start_date=first, days=args.days, users=args.users, items=args.items, seed=7)
        last = first + dt.timedelta(days=args.days - 1)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    print(
        f"source: {args.source}, {len(days)} days, {summary['events'] if args.source == 'movielens' else summary['events_total']} events"
    )

    spark = build_session(
        {
            "master": "local[2]",
            "app_name": "snapshot-bench",
            "conf": {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false", "spark.driver.memory": "6g"},
        }
    )
    tables = open_tables(spark, str(warehouse), "delta-rs")
    config = {
        "paths": {"raw": str(raw), "warehouse": str(warehouse)},
        "ingest": {"allowed_lateness_hours": 48, "allow_missing_drops": True},
        "snapshot": {"rebuild_days": 0},
        "quality": {"enabled": False},
    }  # the checks are timed by the tests, not here (MovieLens days swing)
    ingest_seconds, _ = timed(lambda: ingest(spark, tables, config, days))
    print(f"ingest of all days: {ingest_seconds:.1f}s")

    backfill_seconds, _ = timed(lambda: build_snapshots(spark, tables, config, days, allow_missing=True))
    print(f"backfill of {len(days)} days in one pass: {backfill_seconds:.1f}s")

    day_10, day_200 = days[9], days[min(199, len(days) - 1)]
    incremental = {}
    for label, day in (("day 10", day_10), ("day 200", day_200)):
        # cascade=False: the day alone, state carried from the day before (the later days exist already
        # and a rebuild would otherwise cascade to them: that is a backfill, timed above)
        build_snapshots(spark, tables, config, [day], allow_missing=True, cascade=False)  # warm-up (JIT, caches)
        incremental[label], _ = timed(
            lambda: build_snapshots(spark, tables, config, [day], allow_missing=True, cascade=False)
        )
        print(f"incremental build of {label} ({day}): {incremental[label]:.1f}s")

    samples = sorted({min(s, len(days)) for s in args.samples})
    full = {}
    full_recompute(tables, days[samples[0] - 1])  # warm-up
    for s in samples:
        full[s], _ = timed(lambda: full_recompute(tables, days[s - 1]))
        print(f"full recompute of day {s}: {full[s]:.1f}s")
    # estimate of the sum over d = 1..N of the full-recompute time of day d: linear interpolation
    # between the timed days (flat before the first and after the last)
    import numpy as np

    estimate = float(np.interp(np.arange(1, len(days) + 1), samples, [full[s] for s in samples]).sum())

    ratios = {
        "incremental_day200_over_day10": incremental["day 200"] / incremental["day 10"],
        "full_recompute_day200_over_day10": full[samples[-1]] / full[samples[0]],
        "full_recomputes_over_backfill": estimate / backfill_seconds,
        "incremental_day200_vs_full_recompute_day200": full[samples[-1]] / incremental["day 200"],
    }
    print(
        json.dumps(
            {
                "seconds": {
                    "ingest": ingest_seconds,
                    "backfill": backfill_seconds,
                    **incremental,
                    "full_recompute": full,
                    "estimated_full_recomputes_total": estimate,
                },
                "ratios": ratios,
            },
            indent=2,
            default=str,
        )
    )
    print(f"day 200 / day 10 (incremental): {ratios['incremental_day200_over_day10']:.2f}x (target <= 1.3x)")
    print(f"{len(days)} full recomputes / one backfill: {ratios['full_recomputes_over_backfill']:.1f}x (target >= 5x)")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
