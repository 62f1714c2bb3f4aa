"""Build a long synthetic warehouse up to the gbdt stage, for the benchmarks that need millions of sample
rows (issue 17: `bench/gbdt_stage_bench.py`, `bench/peers_bench.py`, `bench/training_bench.py`).

    .venv/bin/python bench/synthetic_warehouse.py [--days 200 --users 2000 --items 500] [--out bench/out/synthetic-200d]
    .venv/bin/python bench/peers_bench.py --config bench/out/synthetic-200d/config.yaml --epochs 1 --repeats 1

Writes `<out>/config.yaml` (conf/demo.yaml with its paths under <out> and its dates covering --days), then
runs the project's own stages through the `recpipe` command line: generate-logs, ingest, snapshot, samples
(every day with a next day to label from) and gbdt. With the defaults: 1.45M impressions, 1,434,573
sample rows (train 1,146,564), about 10 minutes on two cores. Prints each stage's seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=200)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", default="2026-01-01", help="first day, YYYY-MM-DD")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "synthetic-200d"))
    args = parser.parse_args()
    if args.days < 3:
        parser.error("--days must be at least 3 (samples need a day before and a day after)")

    out = Path(args.out).resolve()
    first = dt.date.fromisoformat(args.start)
    last = first + dt.timedelta(days=args.days - 1)
    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    config["source"]["synthetic"].update({"users": args.users, "items": args.items, "seed": args.seed})
    config["paths"] = {"raw": str(out / "raw"), "warehouse": str(out / "warehouse")}
    config["dates"] = {"start": first.isoformat(), "end": last.isoformat()}
    config["export"]["root"] = str(out / "export")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    recpipe = [sys.executable, "-m", "jobs.cli"]
    days = ["--start", first.isoformat(), "--end", last.isoformat()]
    labelled = [
        "--start",
        (first + dt.timedelta(days=1)).isoformat(),
        "--end",
        (last - dt.timedelta(days=1)).isoformat(),
    ]
    stages = {
        "generate-logs": [
            "generate-logs",
            "--out",
            str(out / "raw"),
            "--start-date",
            first.isoformat(),
            "--days",
            str(args.days),
            "--users",
            str(args.users),
            "--items",
            str(args.items),
            "--seed",
            str(args.seed),
        ],
        "ingest": ["ingest", "--config", str(path), *days],
        "snapshot": ["snapshot", "--config", str(path), *days],
        "samples": ["samples", "--config", str(path), *labelled],
        "gbdt": ["gbdt", "--config", str(path)],
    }
    for name, command in stages.items():
        started = time.perf_counter()
        subprocess.run([*recpipe, *command], cwd=REPO, check=True)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    print(f"config: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
