"""Soak run: 60 consecutive daily runs on synthetic logs with injected faults end with the same tables
as a fault-free run, wherever the faults allow.

    .venv/bin/python bench/soak.py [--days 60 --users 400 --items 80 --out bench/out/soak]

One synthetic log (with its own late events: 0.5% arrive up to two days late) is delivered twice:
  clean   every drop on time; one backfill `recpipe ingest` + `recpipe snapshot` over the range.
  faulty  `recpipe ingest --date D` then `recpipe snapshot --date D`, day by day, as the DAG runs
          them, with these faults:
            - bad rows on 5% of the days (malformed JSON, a truncated line, a bad type, an unknown
              event type: 1% of the drop's lines) → quarantined, the day goes on;
            - one day's drop is missing when its run starts → ingest exits 2 naming the path; the
              drop lands a day later and that day and the next run then;
            - one day's drop arrives with two thirds of its events lost upstream → ingest exits 4
              (the events row_count_change check), the drop is redelivered complete and rerun;
            - redeliveries: on 5% of the days, 2% of the drop's events are sent again in the drops
              one and three days later → quarantined (an id counts once), nothing doubles;
            - one day's optional users drop is late: that day's ingest leaves users as they were, the
              drop lands the next day and the day is ingested again before the next snapshot;
            - lines holding two JSON objects (on the bad-row days) → quarantined as malformed;
            - each day is run twice on 10% of the days (a retried task) → idempotent.
At the end: samples for the last 20 days (all but the first and last on short runs) in both warehouses, then every table compared with Spark
(rows in one and not the other, both ways; duplicates count) and the quarantine holding exactly the
injected lines (bad, multi-object and redelivered), counted per quarantine reason. Prints what it
checked and exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from features.synthetic_logs import generate_logs  # noqa: E402
from features.tables import open_tables  # noqa: E402
from jobs.cli import main  # noqa: E402
from jobs.spark_session import build_session  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START = dt.date(2026, 1, 1)
COMPARED = (
    "events",
    "users",
    "items",
    "item_daily",
    "user_daily",
    "user_category_daily",
    "item_snapshot",
    "user_snapshot",
    "item_snapshot_inactive",
    "user_snapshot_inactive",
    "user_category_snapshot",
    "samples",
)
BAD_LINES = [
    '{"event_id": "bad-json", "event_type": ',
    "not json at all",
    '{"event_id": "bad-type", "event_type": "click", "user_id": "abc", "item_id": 1, '
    '"event_time": "2026-01-01T00:00:00.000Z"}',
    '{"event_id": "bad-kind", "event_type": "view", "user_id": 1, "item_id": 1, '
    '"event_time": "2026-01-01T00:00:00.000Z"}',
    '{"event_id": "multi-1", "event_type": "impression", "user_id": 1, "item_id": 1, '
    '"event_time": "2026-01-01T00:00:00.000Z"}{"event_id": "multi-2", "event_type": "impression", '
    '"user_id": 1, "item_id": 1, "event_time": "2026-01-01T00:00:00.000Z"}',
]
REDELIVERED_AFTER = (1, 3)  # days after its first delivery an event is sent again


def write_config(root: Path, name: str, days: int) -> Path:
    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    config["paths"] = {"raw": str(root / name / "raw"), "warehouse": str(root / name / "warehouse")}
    config["dates"] = {"start": str(START), "end": str(START + dt.timedelta(days=days - 1))}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def events_file(raw: Path, day: dt.date) -> Path:
    return next((raw / "events" / f"dt={day}").glob("*.jsonl"))


def run(argv: list[str], log: list) -> int:
    """One CLI command in this process; its printout goes to the report, not the terminal."""
    started, printed = time.perf_counter(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = main(argv)
    log.append(
        {
            "argv": argv[:1] + argv[3:],
            "exit": code,
            "seconds": round(time.perf_counter() - started, 1),
            "printed": printed.getvalue().splitlines()[-12:],
        }
    )
    return code


def faulty_run(config: Path, raw: Path, days: list[dt.date], rng: random.Random, log: list) -> dict:
    """Day by day, with the faults of the module docstring; returns what was injected."""
    pool = days[3:-1]  # late faults: the first days have no history to compare with
    bad_days = sorted(rng.sample(pool, max(1, round(0.05 * len(days)))))
    missing_day, truncated_day = rng.sample([d for d in pool if d not in bad_days][:-1], 2)
    retried = set(rng.sample(days, max(1, len(days) // 10)))
    injected = 0
    for day in bad_days:  # bad rows mixed into the drop: 1% of its lines, at least one of each kind
        path = events_file(raw, day)
        lines = path.read_text().splitlines()
        count = max(len(BAD_LINES), len(lines) // 100)
        for i in range(count):
            lines.insert(rng.randrange(len(lines)), BAD_LINES[i % len(BAD_LINES)])
        path.write_text("\n".join(lines) + "\n")
        injected += count
    faulted = {missing_day, truncated_day}
    sources = [
        d
        for d in pool
        if d + dt.timedelta(days=max(REDELIVERED_AFTER)) <= days[-1]
        and not faulted & {d, *(d + dt.timedelta(days=k) for k in REDELIVERED_AFTER)}
    ]
    redelivered_days = sorted(rng.sample(sources, max(1, round(0.05 * len(days)))))
    resent = 0
    for day in redelivered_days:  # 2% of the day's events sent again one and three days later
        lines = events_file(raw, day).read_text().splitlines()
        again = rng.sample(lines, max(1, len(lines) // 50))
        for after in REDELIVERED_AFTER:
            path = events_file(raw, day + dt.timedelta(days=after))
            path.write_text(path.read_text() + "\n".join(again) + "\n")
            resent += len(again)
    late_users_day = next(
        d for d in rng.sample(pool[:-1], len(pool) - 1) if (raw / "users" / f"dt={d}").exists() and d not in faulted
    )
    held_users = raw.parent / "held-back-users"
    shutil.move(raw / "users" / f"dt={late_users_day}", held_users)  # an optional drop, late
    held_back = raw.parent / "held-back"
    shutil.move(raw / "events" / f"dt={missing_day}", held_back)  # not delivered yet
    full = events_file(raw, truncated_day).read_text()
    lines = full.splitlines()
    events_file(raw, truncated_day).write_text("\n".join(lines[: len(lines) // 3]) + "\n")

    outcomes = {"missing_drop_exit": None, "truncated_drop_exit": None, "retries_identical": 0}
    pending: list[dt.date] = []
    for day in days:
        if day == missing_day + dt.timedelta(days=1):  # the late drop lands: catch up in order
            shutil.move(held_back, raw / "events" / f"dt={missing_day}")
        if day == late_users_day + dt.timedelta(days=1):  # the late users drop lands: that day again
            shutil.move(held_users, raw / "users" / f"dt={late_users_day}")
            pending = sorted({*pending, late_users_day})
        for todo in [*pending, day]:
            code = run(["ingest", "--config", str(config), "--date", str(todo)], log)
            if todo == missing_day and code == 2:
                outcomes["missing_drop_exit"] = 2
                pending = [todo]
                break
            if todo == truncated_day and code == 4:
                outcomes["truncated_drop_exit"] = 4
                events_file(raw, todo).write_text(full)  # redelivered complete; the task is rerun
                code = run(["ingest", "--config", str(config), "--date", str(todo)], log)
            assert code == 0, f"ingest {todo} exited {code}"
            assert run(["snapshot", "--config", str(config), "--date", str(todo)], log) == 0
            if todo in retried:  # a retried task: the same day again leaves the same rows
                assert run(["ingest", "--config", str(config), "--date", str(todo)], log) == 0
                assert run(["snapshot", "--config", str(config), "--date", str(todo)], log) == 0
                outcomes["retries_identical"] += 1
        else:
            pending = []
    return {
        "bad_days": [str(d) for d in bad_days],
        "bad_lines": injected,
        "redelivered_days": len(redelivered_days),
        "redelivered_lines": resent,
        "late_users_day": str(late_users_day),
        "missing_day": str(missing_day),
        "truncated_day": str(truncated_day),
        "retried_days": len(retried),
        **outcomes,
    }


def compare(spark, clean, faulty, name: str) -> dict:
    left, right = clean.read(name), faulty.read(name)
    columns = [c for c in left.columns if c not in ("split",)] if name == "samples" else left.columns
    left, right = left.select(*columns), right.select(*columns)
    only_clean, only_faulty = left.exceptAll(right).count(), right.exceptAll(left).count()
    return {"table": name, "rows": left.count(), "only_clean": only_clean, "only_faulty": only_faulty}


def main_soak() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--items", type=int, default=80)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "soak"))
    args = parser.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    days = [START + dt.timedelta(days=i) for i in range(args.days)]
    generate_logs(
        root / "clean" / "raw", start_date=START, days=args.days, users=args.users, items=args.items, seed=args.seed
    )
    shutil.copytree(root / "clean" / "raw", root / "faulty" / "raw")
    clean_config, faulty_config = write_config(root, "clean", args.days), write_config(root, "faulty", args.days)
    log: list = []
    started = time.perf_counter()
    assert run(["ingest", "--config", str(clean_config)], log) == 0
    assert run(["snapshot", "--config", str(clean_config)], log) == 0
    clean_seconds = time.perf_counter() - started
    started = time.perf_counter()
    faults = faulty_run(faulty_config, root / "faulty" / "raw", days, random.Random(args.seed), log)
    faulty_seconds = time.perf_counter() - started
    window = ["--start", str(days[-min(21, len(days) - 1)]), "--end", str(days[-2])]
    for config in (clean_config, faulty_config):
        assert run(["samples", "--config", str(config), *window], log) == 0

    spark = build_session({"master": "local[2]", "app_name": "recpipe-soak", "conf": {"spark.ui.enabled": "false"}})
    clean = open_tables(spark, str(root / "clean" / "warehouse"), "delta-rs")
    faulty = open_tables(spark, str(root / "faulty" / "warehouse"), "delta-rs")
    results = [compare(spark, clean, faulty, name) for name in COMPARED]
    quarantined = {"clean": clean.read("events_quarantine").count(), "faulty": faulty.read("events_quarantine").count()}
    reasons = {
        r["reason"]: r["count"]
        for r in faulty.read("events_quarantine").groupBy("reason").count().orderBy("reason").collect()
    }  # a few distinct reasons
    failed_checks = faulty.read("quality").where("status = 'fail'").count()
    report = {
        "days": args.days,
        "faults": faults,
        "quarantine_rows": quarantined,
        "quarantine_reasons": reasons,
        "failed_quality_checks_left": failed_checks,
        "tables": results,
        "commands": len(log),
        "clean_backfill_seconds": round(clean_seconds, 1),
        "faulty_daily_seconds": round(faulty_seconds, 1),
    }
    (root / "report.json").write_text(json.dumps({**report, "log": log}, indent=2))

    print(f"soak: {args.days} daily runs, {len(log)} commands, faults {json.dumps(faults)}")
    print(f"{'table':<24} {'rows':>9} {'only clean':>11} {'only faulty':>12}")
    for r in results:
        print(f"{r['table']:<24} {r['rows']:>9} {r['only_clean']:>11} {r['only_faulty']:>12}")
    print("quarantined lines per reason (faulty run):")
    for reason, count in reasons.items():
        print(f"  {count:>6}  {reason}")
    checks = {
        "every table equal to the fault-free run": all(r["only_clean"] == r["only_faulty"] == 0 for r in results),
        "quarantine holds exactly the injected lines (bad, multi-object, redelivered)": quarantined["faulty"]
        - quarantined["clean"]
        == faults["bad_lines"] + faults["redelivered_lines"],
        "missing drop: exit 2, caught up the next day": faults["missing_drop_exit"] == 2,
        "truncated drop: quality gate exit 4, clean after redelivery": faults["truncated_drop_exit"] == 4
        and failed_checks == 0,
        "retried days left identical tables": faults["retries_identical"] == faults["retried_days"],
    }
    for what, ok in checks.items():
        print(f"  {'ok ' if ok else 'FAIL'} {what}")
    print(
        f"clean backfill {clean_seconds:.0f}s; faulty day-by-day {faulty_seconds:.0f}s "
        f"({faulty_seconds / clean_seconds:.1f}x, {len(log) - 2} commands)"
    )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main_soak())
