"""Online store benchmark (issue 20): publish throughput, incremental vs full publish, request build latency.

    python bench/online_store_bench.py [--days 200 --users 1000 --items 300] [--requests 300]
    python bench/online_store_bench.py --warehouse W --day D    # an existing warehouse: publishes only

1. generate-logs (the project's generator) for --days days, ingest and snapshot them in one pass each,
   samples of the last 3 days (their fitted transforms build the SavedModel of step 4);
2. a redis-server on a free 127.0.0.1 port (no persistence);
3. publish the second-to-last day into an empty namespace (full: every entity written), then the last
   day (incremental: only changed entities), each timed end to end (Spark job, Redis writes, flip, log);
4. request build for 1 user x 100 candidate items (random known users and items; 20 warm-up requests not
   counted): p50/p99, and end to end with a wide_deep SavedModel scored in process (tf.saved_model.load,
   serving_default; its weights are the initial ones: the cost is the same).
With --warehouse (e.g. MovieLens 100K's), steps 1 and 4 are skipped: D-1 is published in full, then D.
Prints one JSON object; README's numbers come from it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values, q):
    import numpy as np

    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=200)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "online"))
    parser.add_argument("--reuse", action="store_true", help="keep an existing warehouse under --out")
    parser.add_argument("--warehouse", help="publish from this existing warehouse (its snapshots) instead")
    parser.add_argument("--day", help="with --warehouse: the day published after the full publish of the day before")
    args = parser.parse_args()
    if bool(args.warehouse) != bool(args.day):
        parser.error("--warehouse and --day go together")

    import datetime as dt

    from features.online_store import OnlineStore, RedisLocation
    from features.synthetic_logs import generate_logs
    from features.tables import open_tables
    from jobs.build_samples import build_samples
    from jobs.build_snapshot import build_snapshots
    from jobs.ingest import ingest
    from jobs.publish_features import publish
    from jobs.spark_session import build_session

    out = Path(args.out)
    start = dt.date(2026, 1, 1)
    days = [start + dt.timedelta(days=i) for i in range(args.days)]
    if args.day:
        last = dt.date.fromisoformat(args.day)
        days = [last - dt.timedelta(days=1), last]
    port = free_port()
    config = {
        "paths": {"raw": str(out / "raw"), "warehouse": args.warehouse or str(out / "warehouse")},
        "samples": {"kind": "click"},
        "quality": {"enabled": False},
        "online_store": {"host": "127.0.0.1", "port": port, "namespace": "bench"},
    }
    spark = build_session(
        {
            "master": "local[2]",
            "app_name": "online-bench",
            "conf": {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false", "spark.driver.memory": "6g"},
        }
    )
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    result = (
        {"warehouse": args.warehouse, "days": [d.isoformat() for d in days]}
        if args.warehouse
        else {"days": args.days, "users": args.users, "items": args.items}
    )
    if not args.warehouse and not (args.reuse and tables.exists("user_snapshot")):
        if not (args.reuse and (out / "raw" / "events").is_dir()):
            shutil.rmtree(out, ignore_errors=True)
            generate_logs(
                config["paths"]["raw"], start_date=start, days=args.days, users=args.users, items=args.items, seed=7
            )
        shutil.rmtree(out / "warehouse", ignore_errors=True)
        t = time.time()
        ingest(spark, tables, config, days)
        build_snapshots(spark, tables, config, days)
        build_samples(spark, tables, config, days[-4:-1])
        result["build_seconds"] = time.time() - t
    result["events"] = tables.row_count("events")
    out.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        full = publish(spark, tables, config, days[-2])
        incremental = publish(spark, tables, config, days[-1])
        result["publish_full"] = {k: full[k] for k in ("rows", "rewritten", "seconds")}
        result["publish_full"]["rows_per_second"] = full["rows"] / full["seconds"]
        result["publish_incremental"] = {
            k: incremental[k] for k in ("rows", "rewritten", "unchanged", "removed", "seconds", "by_entity")
        }
        result["publish_incremental"]["rows_per_second"] = incremental["rows"] / incremental["seconds"]
        result["incremental_over_full_seconds"] = incremental["seconds"] / full["seconds"]
        result["redis_used_memory_bytes"] = OnlineStore(RedisLocation(port=port, namespace="bench")).client.info()[
            "used_memory"
        ]
        spark.stop()
        if not args.warehouse and args.requests:
            result["requests"] = request_latency(port, args, days)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(json.dumps(result, indent=2, default=str))


def request_latency(port: int, args, days) -> dict:
    import datetime as dt

    import keras
    import numpy as np
    import tensorflow as tf

    from features.feature_spec import load_spec
    from features.online_store import OnlineStore, RedisLocation
    from jobs import artifacts
    from jobs.settings import as_settings
    from training.export import write_saved_model
    from training.feature_layers import FeatureEncoders
    from training.inputs import model_inputs
    from training.models import build_model
    from training.online_requests import build_request

    spec = load_spec()
    warehouse = Path(args.out) / "warehouse"
    version = artifacts.latest_samples_version(warehouse)
    transforms = json.loads((artifacts.samples_dir(warehouse, version) / "transforms.json").read_text())["features"]
    keras.utils.set_random_seed(7)
    model = build_model(
        "wide_deep", FeatureEncoders(spec, transforms), as_settings({}).models.params("wide_deep"), None
    )
    saved = Path(args.out) / "model" / "1"
    shutil.rmtree(saved.parent, ignore_errors=True)
    write_saved_model(model, model_inputs(spec), saved)
    serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
    specs = serve.structured_input_signature[1]

    store = OnlineStore(RedisLocation(port=port, namespace="bench"))
    rng = np.random.default_rng(7)
    when = dt.datetime(2026, 7, 1, 12, tzinfo=dt.timezone.utc)
    build, end_to_end = [], []
    for n in range(args.requests + 20):
        user = int(rng.integers(1, args.users))
        items = [int(i) for i in rng.choice(np.arange(1, args.items), size=100, replace=False)]
        t = time.perf_counter()
        built = build_request(store, user, items, {"device": "mobile", "page": "home"}, when, spec=spec)
        t1 = time.perf_counter()
        serve(**{k: tf.constant(built.arrays[k], dtype=s.dtype) for k, s in specs.items()})["probability"].numpy()
        t2 = time.perf_counter()
        if n >= 20:
            build.append(t1 - t)
            end_to_end.append(t2 - t)
    return {
        "requests": args.requests,
        "items_per_request": 100,
        "build_ms": {"p50": percentile(build, 50), "p99": percentile(build, 99)},
        "end_to_end_ms": {"p50": percentile(end_to_end, 50), "p99": percentile(end_to_end, 99)},
    }


if __name__ == "__main__":
    main()
