"""Benchmark: snapshot cost and size follow activity, not catalogue x calendar (issue 15, part 4).

    .venv/bin/python bench/sparse_snapshot_bench.py            # 2000 days, 300 users, 10,000 items
    .venv/bin/python bench/sparse_snapshot_bench.py --days 200 --items 2000   # a quick look

A sparse synthetic log like a long public ratings log (a few hundred users, a large catalogue in the
first day's drop, a user active about one day a month), on one local[2] Spark session:
  1. ingest: every drop in one run (the per-drop share of it), then `--single-runs` single-drop runs
     of the last days again (the fixed cost of a run);
  2. backfill: the snapshots of every day in one run (target: <= 10 minutes);
  3. size: stored user/item rows vs the entity-days with activity inside the longest window (computed
     here from the raw drops with pandas, not from the pipeline's tables) (target: <= 2x), and vs the
     dense layout (every known entity on every day);
  4. catalogue: the same log over `--catalogue-days` days with 9x `--items` more items that are never
     shown (10x the catalogue) in a second warehouse; the last day rebuilt alone in both, interleaved,
     `--repeats` times after a warm-up each, medians (target: ratio <= 1.3).
Prints ratios and a JSON summary; seconds depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from features import raw_drops  # noqa: E402
from features.feature_spec import load_spec  # noqa: E402
from features.synthetic_logs import generate_logs  # noqa: E402
from features.tables import open_tables  # noqa: E402
from jobs.build_snapshot import build_snapshots  # noqa: E402
from jobs.ingest import ingest  # noqa: E402
from jobs.spark_session import build_session  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START = dt.date(2020, 1, 1)


def timed(action):
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def _config(raw: Path, warehouse: Path) -> dict:
    return {
        "paths": {"raw": str(raw), "warehouse": str(warehouse)},
        "ingest": {"allowed_lateness_hours": 48, "allowed_clock_skew_minutes": 60},
        "quality": {"enabled": False},
    }


def active_entity_days(raw: Path, days: list[dt.date], window: int) -> dict[str, int]:
    """Per entity type: the (entity, day) pairs with an event inside the `window` days ending that day,
    from the raw drops (pandas, independent of the pipeline's code)."""
    frames = []
    for day in days:
        for path in raw_drops.drop_files(raw, "events", day):
            if path.stat().st_size:
                frames.append(
                    pd.read_json(path, lines=True, dtype={"event_time": str, "event_id": str})[
                        ["event_id", "user_id", "item_id", "event_time"]
                    ]
                )
    events = pd.concat(frames).drop_duplicates("event_id")
    events["day"] = pd.to_datetime(events["event_time"], utc=True, format="ISO8601").dt.date
    counts = {}
    for key in ("user_id", "item_id"):
        active = events[[key, "day"]].drop_duplicates()
        covered = set()
        for entity, day in active.itertuples(index=False):
            covered.update(
                (entity, day + dt.timedelta(days=k)) for k in range(window) if day + dt.timedelta(days=k) <= days[-1]
            )
        counts[key.removesuffix("_id")] = len(covered)
    counts["event_entity_days"] = int(
        events[["user_id", "day"]].drop_duplicates().shape[0] + events[["item_id", "day"]].drop_duplicates().shape[0]
    )
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2000)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--impressions-per-user-day", type=float, default=0.2)
    parser.add_argument("--single-runs", type=int, default=5)
    parser.add_argument("--catalogue-days", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "sparse-snapshot"))
    args = parser.parse_args()

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    days = [START + dt.timedelta(days=i) for i in range(args.days)]
    raw, warehouse = out / "raw", out / "warehouse"
    generated = generate_logs(
        raw,
        start_date=START,
        days=args.days,
        users=args.users,
        items=args.items,
        seed=7,
        impressions_per_user_day=args.impressions_per_user_day,
    )
    print(f"{args.days} days, {args.users} users, {args.items} items, {generated['events_total']} events")

    spark = build_session(
        {
            "master": "local[2]",
            "app_name": "sparse-snapshot-bench",
            "conf": {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false", "spark.driver.memory": "6g"},
        }
    )
    tables = open_tables(spark, str(warehouse), "delta-rs")
    config = _config(raw, warehouse)
    results: dict = {"days": args.days, "users": args.users, "items": args.items, "events": generated["events_total"]}

    seconds, _ = timed(lambda: ingest(spark, tables, config, days))
    results["ingest_all_drops_s"] = seconds
    results["ingest_per_drop_in_one_run_s"] = seconds / len(days)
    single = [timed(lambda d=d: ingest(spark, tables, config, [d]))[0] for d in days[-args.single_runs :]]
    results["ingest_single_drop_run_median_s"] = statistics.median(single)
    print(
        f"ingest: {seconds:.0f}s for {len(days)} drops in one run ({seconds / len(days):.2f}s a drop); "
        f"a run of one drop: {statistics.median(single):.1f}s (median of {len(single)})"
    )

    seconds, _ = timed(lambda: build_snapshots(spark, tables, config, days))
    results["backfill_s"] = seconds
    print(f"snapshot backfill of {len(days)} days in one run: {seconds:.0f}s (target <= 600s)")

    spec = load_spec()
    window = max(spec.windows_days)
    active = active_entity_days(raw, days, window)
    stored = {entity: tables.read(f"{entity}_snapshot").count() for entity in ("user", "item")}
    known = {"user": args.users, "item": args.items}
    dense = {e: known[e] * len(days) for e in known}  # everyone is in the first day's drops
    results["rows"] = {
        e: {
            "stored": stored[e],
            "active_window_entity_days": active[e],
            "dense": dense[e],
            "stored_over_active": stored[e] / active[e],
            "dense_over_stored": dense[e] / stored[e],
        }
        for e in known
    }
    results["rows"]["inactive_tables"] = sum(tables.read(f"{e}_snapshot_inactive").count() for e in known)
    for e in known:
        r = results["rows"][e]
        print(
            f"{e}_snapshot: {r['stored']} rows, {r['stored_over_active']:.2f}x the {r['active_window_entity_days']} "
            f"entity-days with activity in the {window}-day window (target <= 2x); dense layout: "
            f"{r['dense']} rows ({r['dense_over_stored']:.0f}x)"
        )

    # one day's build with 10x the catalogue (never shown items) vs the catalogue alone
    short = days[: args.catalogue_days]
    built = {}
    for label, unseen in (("catalogue", 0), ("catalogue_x10", 9 * args.items)):
        root = out / label
        generate_logs(
            root / "raw",
            start_date=START,
            days=len(short),
            users=args.users,
            items=args.items,
            seed=7,
            impressions_per_user_day=args.impressions_per_user_day,
            unseen_items=unseen,
        )
        config_x = _config(root / "raw", root / "warehouse")
        tables_x = open_tables(spark, str(root / "warehouse"), "delta-rs")
        ingest(spark, tables_x, config_x, short)
        build_snapshots(spark, tables_x, config_x, short[:-1])
        build_snapshots(spark, tables_x, config_x, short[-1:])  # warm-up
        built[label] = (tables_x, config_x)
    runs = {label: [] for label in built}
    for _ in range(args.repeats):
        for label, (tables_x, config_x) in built.items():
            runs[label].append(timed(lambda: build_snapshots(spark, tables_x, config_x, short[-1:]))[0])
    medians = {label: statistics.median(v) for label, v in runs.items()}
    results["one_day_build_s"] = medians
    results["catalogue_x10_over_catalogue"] = medians["catalogue_x10"] / medians["catalogue"]
    print(
        f"one day's build (day {len(short)}, rebuilt days included): {medians['catalogue']:.1f}s with "
        f"{args.items} items, {medians['catalogue_x10']:.1f}s with {10 * args.items}: "
        f"{results['catalogue_x10_over_catalogue']:.2f}x (target <= 1.3x)"
    )
    print(json.dumps(results, indent=2, default=str))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
