"""Benchmark: what the cross-drop redelivery check (features/redelivery.py) costs ingest.

    .venv/bin/python bench/ingest_bench.py [--days 200 --users 300 --items 200 --repeats 3]

One synthetic log of `--days` daily drops, ingested into fresh warehouses with the check on and off
(`ingest.redelivery_check: false`), the two sides interleaved, `--repeats` times each after one
warm-up of each (the first 20 drops), medians reported. Two shapes of work, both timed whole
(validation, the Delta commits of events/quarantine/users/items, the quality checks and the
ingest_runs commit included):
  backfill  every drop in one `ingest` run (the check is a window over the run's rows);
  daily     the last `--daily-days` drops again, one run each, on top of the whole history (the check
            also reads the events ids of the horizon's partitions: lateness + a week on both sides).
Target (issue 14): check on / check off <= 1.2x. Prints ratios; the seconds depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.synthetic_logs import generate_logs  # noqa: E402
from features.tables import open_tables  # noqa: E402
from jobs.ingest import ingest  # noqa: E402
from jobs.spark_session import build_session  # noqa: E402

START = dt.date(2026, 1, 1)


def _config(raw: Path, warehouse: Path, check: bool) -> dict:
    return {
        "paths": {"raw": str(raw), "warehouse": str(warehouse)},
        "ingest": {"allowed_lateness_hours": 48, "allowed_clock_skew_minutes": 60, "redelivery_check": check},
        "quality": {"enabled": True},
    }


def _timed(spark, warehouse: Path, config: dict, runs: list[list[dt.date]]) -> float:
    tables = open_tables(spark, str(warehouse), "delta-rs")
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        for days in runs:
            ingest(spark, tables, config, days)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=200)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--daily-days", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/out/ingest")
    args = parser.parse_args()

    out = Path(args.out)
    raw = out / "raw"
    if not (raw / "events").exists():
        generate_logs(str(raw), start_date=START, days=args.days, users=args.users, items=args.items, seed=11)
    spark = build_session(
        {
            "master": "local[2]",
            "app_name": "ingest-bench",
            "conf": {"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "4g", "spark.ui.enabled": "false"},
        }
    )
    days = [START + dt.timedelta(days=i) for i in range(args.days)]
    recent = days[-args.daily_days :]
    times: dict[tuple[str, bool], list[float]] = {}
    for repeat in range(args.repeats + 1):  # repeat 0 warms both sides up on 20 drops and is not counted
        for check in (True, False):
            warehouse = out / f"warehouse-{'on' if check else 'off'}"
            shutil.rmtree(warehouse, ignore_errors=True)
            config = _config(raw, warehouse, check)
            backfill = _timed(spark, warehouse, config, [days if repeat else days[:20]])
            daily = _timed(spark, warehouse, config, [[day] for day in (recent if repeat else days[15:20])])
            if repeat:
                times.setdefault(("backfill", check), []).append(backfill)
                times.setdefault(("daily", check), []).append(daily)
            print(
                f"repeat {repeat}{' (warm-up)' if not repeat else ''}: check {'on ' if check else 'off'} "
                f"backfill {backfill:.1f}s, {len(recent)} daily runs {daily:.1f}s",
                flush=True,
            )
    events = open_tables(spark, str(out / "warehouse-on"), "delta-rs").row_count("events")
    print(f"\n{args.days} drops, {events} events after the check; medians of {args.repeats} runs each")
    for shape in ("backfill", "daily"):
        on, off = statistics.median(times[(shape, True)]), statistics.median(times[(shape, False)])
        print(f"{shape:<9} check on {on:7.1f}s  off {off:7.1f}s  ratio {on / off:.2f}x (target <= 1.2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
