"""The demo pipeline's Spark stages on a Spark standalone cluster (one master, one worker with 2 cores,
executors without recpipe installed: the jobs ship it) vs local[2]: wall time of each stage (a `recpipe`
CLI process each, JVM start included on both sides), its ratio, and whether every table is the same.

    .venv/bin/python bench/cluster_bench.py [--users 2000 --items 500 --days 14] [--gbdt-on-spark]   # make bench-cluster

Prints one line per stage and a table check; run it on an otherwise idle machine for meaningful seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402

from standalone_cluster import StandaloneCluster  # noqa: E402

STAGES = [
    ("ingest", ["--start", "{start}", "--end", "{end}"]),
    ("snapshot", ["--start", "{start}", "--end", "{end}"]),
    ("samples", ["--start", "{first_sample}", "--end", "{last_sample}"]),
    ("gbdt", []),
]


def config(root: Path, args, master: str) -> Path:
    text = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    text["source"]["synthetic"].update({"users": args.users, "items": args.items})
    text["paths"] = {"raw": str(root.parent / "raw"), "warehouse": str(root / "warehouse")}
    text["spark"]["master"] = master
    text["spark"]["conf"].update({"spark.executor.memory": "1g", "spark.driver.memory": "2g", "spark.cores.max": "2"})
    text["training"]["models"] = []
    if args.gbdt_on_spark:  # the Spark path (the demo's samples are below gbdt.local_max_rows: the driver's)
        text["gbdt"]["local_max_rows"] = 0
    path = root / "config.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(text))
    return path


def run_stages(root: Path, path: Path, env: dict, days: dict) -> dict[str, float]:
    timings = {}
    for stage, extra in STAGES:
        command = [sys.executable, "-m", "jobs.cli", stage, "--config", str(path), *[e.format(**days) for e in extra]]
        started = time.monotonic()
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        timings[stage] = time.monotonic() - started
        print(f"  {root.name} {stage}: {timings[stage]:.1f}s", flush=True)
        if result.returncode != 0:
            raise SystemExit(f"{stage} failed on {root.name}: {result.stderr[-2000:]}")
    return timings


def same_tables(left: Path, right: Path) -> tuple[int, list[str]]:
    """Tables compared with delta-rs and pandas (run ids and build times left out)."""
    from deltalake import DeltaTable

    volatile = {"run_id", "recorded_at", "built_at"}
    names = sorted(p.name for p in left.iterdir() if (p / "_delta_log").is_dir())
    different = []
    for name in names:
        frames = []
        for root in (left, right):
            frame = DeltaTable(str(root / name)).to_pandas()
            frame = frame[[c for c in frame.columns if c not in volatile]].astype(str)
            frames.append(frame.sort_values(list(frame.columns)).reset_index(drop=True))
        if not frames[0].equals(frames[1]):
            different.append(name)
    return len(names), different


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--gbdt-on-spark", action="store_true", help="gbdt.local_max_rows: 0 on both sides")
    args = parser.parse_args()
    import datetime as dt

    start = dt.date(2026, 1, 1)
    days = {
        "start": start,
        "end": start + dt.timedelta(days=args.days - 1),
        "first_sample": start + dt.timedelta(days=1),
        "last_sample": start + dt.timedelta(days=args.days - 2),
    }
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as temp:
        root = Path(temp)
        from features.synthetic_logs import generate_logs

        generate_logs(str(root / "raw"), start_date=start, days=args.days, users=args.users, items=args.items, seed=7)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK_"))}
        env["PYTHONPATH"] = str(REPO)
        local = run_stages(root / "local", config(root / "local", args, "local[2]"), env, days)
        with StandaloneCluster(root / "standalone") as cluster:
            cluster_env = dict(env, PYSPARK_PYTHON=str(cluster.executor_python), SPARK_LOCAL_IP="127.0.0.1")
            remote = run_stages(root / "cluster", config(root / "cluster", args, cluster.url), cluster_env, days)
        count, different = same_tables(root / "cluster" / "warehouse", root / "local" / "warehouse")
    print(f"demo Spark stages, {args.days} days, {args.users} users, {args.items} items")
    print(f"{'stage':<10} {'local[2]':>10} {'standalone':>11} {'ratio':>7}")
    for stage, _ in STAGES:
        print(f"{stage:<10} {local[stage]:>9.1f}s {remote[stage]:>10.1f}s {remote[stage] / local[stage]:>6.2f}x")
    total_local, total_remote = sum(local.values()), sum(remote.values())
    print(f"{'total':<10} {total_local:>9.1f}s {total_remote:>10.1f}s {total_remote / total_local:>6.2f}x")
    print(f"tables: {count} compared, {'all equal' if not different else 'DIFFERENT: ' + ', '.join(different)}")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
