"""Benchmark: our online request build against Feast's online read from Redis, same features, same rows.

    .venv/bin/python bench/online_vs_feast.py [--warehouse W] [--requests 300]   # make bench-online-feast

Runs in the project's venv and starts Feast's side in .venv-feast (`feast[redis]`, its own pins):
1. two redis-servers on free 127.0.0.1 ports (no persistence): one for us, one for Feast;
2. `publish` (jobs/publish_features.py) of the warehouse's last snapshot day into ours; the same rows
   (every user, item and user x category known as of that day, exactly the values we publish, defaults
   included) go to Parquet, and Feast writes them into its Redis with `write_to_online_store` (untimed);
3. the same request sequence on both sides, 1 user x 100 candidate items (random known ids, seeded),
   20 warm-up requests then --requests timed ones, one after the other in the same process per side:
   - ours: `training.online_requests.build_request` (two pipelined round trips, defaults, missing-entity
     indicators, the model's input arrays and the TF Serving body);
   - Feast: `get_online_features` of the user and item features for the 100 (user, item) rows, then of
     the user x category features for the pairs of the items' categories (the join needs the item's
     category first, as ours), to dicts: no defaults and no model encoding, so it does less work;
4. the values of the first 20 requests are compared (every feature both return, Feast's null = ours not
   found), and p50/p99 printed with the ratio. Default warehouse: bench/snapshot_bench.py --source
   synthetic (200 days, 6,500 users, 3,000 items).
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
OUT = REPO / "bench" / "out" / "online-feast"
FEAST_PYTHON = REPO / ".venv-feast" / "bin" / "python"
ENTITY_KEYS = {"user": ["user_id"], "item": ["item_id"], "user_category": ["user_id", "category"]}
WARM_UP = 20
CHECKED_REQUESTS = 20


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    values = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def _redis(port: int, workdir: Path) -> subprocess.Popen:
    import redis

    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 20
    while True:
        try:
            redis.Redis(port=port).ping()
            return process
        except redis.exceptions.ConnectionError:
            assert process.poll() is None and time.time() < deadline, "redis-server did not start"
            time.sleep(0.1)


def ours(args) -> None:
    sys.path.insert(0, str(REPO))
    import datetime as dt

    import numpy as np
    from pyspark.sql import functions as F

    from features import online_features
    from features.feature_spec import load_spec
    from features.online_store import OnlineStore, RedisLocation
    from features.snapshot_as_of import built_days
    from features.tables import open_tables
    from jobs.publish_features import publish
    from jobs.spark_session import build_session
    from training.online_requests import build_request

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    spec = load_spec()
    spark = build_session(
        {
            "master": "local[2]",
            "app_name": "online-vs-feast",
            "conf": {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false", "spark.driver.memory": "6g"},
        }
    )
    tables = open_tables(spark, args.warehouse, "delta-rs")
    day = max(built_days(tables, "user"))
    ours_port, feast_port = _free_port(), _free_port()
    servers = [_redis(ours_port, OUT), _redis(feast_port, OUT)]
    try:
        config = {
            "paths": {"warehouse": args.warehouse},
            "online_store": {"host": "127.0.0.1", "port": ours_port, "namespace": "bench"},
        }
        published = publish(spark, tables, config, day)
        rows = online_features.entity_rows(tables, spec, day, online_features.snapshot_versions(tables))
        rows.write.mode("overwrite").parquet(str(OUT / "entity_rows"))  # what Feast loads: the same values
        users = sorted(int(r.key) for r in rows.where(F.col("entity") == "user").select("key").collect())
        items = sorted(int(r.key) for r in rows.where(F.col("entity") == "item").select("key").collect())
        spark.stop()

        rng = np.random.default_rng(7)
        sequence = [
            (int(rng.choice(users)), [int(i) for i in rng.choice(items, size=100, replace=False)])
            for _ in range(WARM_UP + args.requests)
        ]
        (OUT / "requests.json").write_text(json.dumps(sequence))
        store = OnlineStore(RedisLocation(port=ours_port, namespace="bench"))
        when = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
        context = {"device": "mobile", "page": "home"}
        timed, checked = [], []
        for n, (user, candidates) in enumerate(sequence):
            started = time.perf_counter()
            built = build_request(store, user, candidates, context, when, spec=spec)
            if n >= WARM_UP:
                timed.append(time.perf_counter() - started)
            if n < CHECKED_REQUESTS:
                checked.append({"rows": built.rows, "indicators": built.indicators})
        (OUT / "ours_rows.json").write_text(json.dumps(checked, default=str))
        result = {
            "day": day.isoformat(),
            "published_rows": published["rows"],
            "requests": args.requests,
            "ours_ms": _percentiles(timed),
        }
        feast = subprocess.run(
            [str(FEAST_PYTHON), __file__, "feast", "--port", str(feast_port), "--requests", str(args.requests)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if feast.returncode != 0:
            raise SystemExit(f"Feast's side failed:\n{feast.stderr[-3000:]}")
        result.update(json.loads(feast.stdout.strip().splitlines()[-1]))
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
    print(json.dumps(result, indent=2))
    for q in ("p50", "p99"):
        print(
            f"{q}: ours {result['ours_ms'][q]:.1f} ms, Feast {result['feast_ms'][q]:.1f} ms: "
            f"ours is {result['feast_ms'][q] / result['ours_ms'][q]:.2f}x faster"
        )


def feast(args) -> None:
    import datetime as dt

    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String
    from feast.value_type import ValueType

    sys.path.insert(0, str(REPO))
    from features.feature_spec import load_spec  # the spec's names and dtypes (pydantic, yaml: both here)

    spec = load_spec()
    types = {
        "long": Int64,
        "int": Int32,
        "double": Float64,
        "float": Float32,
        "string": String,
        "boolean": Bool,
        "array<long>": Array(Int64),
        "array<int>": Array(Int32),
        "array<string>": Array(String),
        "array<double>": Array(Float64),
    }
    names = {
        e: [(f.name, f.dtype) for f in spec.model_features() if f.entity == e]
        for e in ("user", "item", "user_category")
    }
    names["item"].append(("_category", "string"))  # the user x category join key, as ours stores it
    stored = pd.read_parquet(OUT / "entity_rows")
    repo = OUT / "feast_repo"
    repo.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(
        config=RepoConfig(
            project="recpipe_online",
            registry=str(repo / "registry.db"),
            provider="local",
            offline_store={"type": "file"},
            online_store={"type": "redis", "connection_string": f"127.0.0.1:{args.port}"},
            entity_key_serialization_version=3,
            repo_path=str(repo),
        )
    )
    entities = {
        "user_id": Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64),
        "item_id": Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64),
        "category": Entity(name="category", join_keys=["category"], value_type=ValueType.STRING),
    }
    views, frames = {}, {}
    now = dt.datetime.now(dt.timezone.utc)
    for entity, fields in names.items():
        values = pd.DataFrame([json.loads(v) for v in stored.loc[stored["entity"] == entity, "value"]])
        keys = stored.loc[stored["entity"] == entity, "key"].str.split(":", n=1, expand=True).reset_index(drop=True)
        for i, key in enumerate(ENTITY_KEYS[entity]):
            values[key] = keys[i].astype("int64") if key.endswith("_id") else keys[i]
        values["feature_ts"] = now
        path = OUT / f"feast_{entity}.parquet"
        values.to_parquet(path)
        frames[entity] = values
        views[entity] = FeatureView(
            name=f"{entity}_features",
            entities=[entities[k] for k in ENTITY_KEYS[entity]],
            ttl=dt.timedelta(days=3650),
            schema=[Field(name=n, dtype=types[t]) for n, t in fields],
            source=FileSource(name=f"{entity}_source", path=str(path), timestamp_field="feature_ts"),
            online=True,
        )
    store.apply([*entities.values(), *views.values()])
    for entity, frame in frames.items():
        store.write_to_online_store(f"{entity}_features", frame)

    user_item = [f"user_features:{n}" for n, _ in names["user"]] + [f"item_features:{n}" for n, _ in names["item"]]
    pair_features = [f"user_category_features:{n}" for n, _ in names["user_category"]]

    def lookup(user: int, candidates: list[int]) -> list[dict]:
        first = store.get_online_features(
            features=user_item, entity_rows=[{"user_id": user, "item_id": i} for i in candidates]
        ).to_dict()
        categories = list(dict.fromkeys(c for c in first["_category"] if c is not None))
        pairs = {}
        if categories:
            second = store.get_online_features(
                features=pair_features, entity_rows=[{"user_id": user, "category": c} for c in categories]
            ).to_dict()
            pairs = {c: {n: second[n][k] for n, _ in names["user_category"]} for k, c in enumerate(categories)}
        rows = []
        for k in range(len(candidates)):
            row = {n: first[n][k] for n, _ in names["user"] + names["item"]}
            row.update(pairs.get(first["_category"][k], {n: None for n, _ in names["user_category"]}))
            rows.append(row)
        return rows

    sequence = json.loads((OUT / "requests.json").read_text())
    timed, returned = [], []
    for n, (user, candidates) in enumerate(sequence):
        started = time.perf_counter()
        rows = lookup(user, candidates)
        if n >= WARM_UP:
            timed.append(time.perf_counter() - started)
        if n < CHECKED_REQUESTS:
            returned.append(rows)

    # the values: where ours found the entity, Feast returns the same value; where ours did not, null
    ours_rows = json.loads((OUT / "ours_rows.json").read_text())
    indicator = {"user": "user_in_snapshot", "item": "item_in_snapshot", "user_category": "user_category_in_snapshot"}
    compared = 0
    for mine, theirs in zip(ours_rows, returned):
        for row, found, feast_row in zip(mine["rows"], mine["indicators"], theirs):
            for entity in ("user", "item", "user_category"):
                for name, _ in names[entity]:
                    if name == "_category":
                        continue
                    expected = row[name] if found[indicator[entity]] else None
                    got = feast_row[name]
                    got = list(got) if isinstance(got, (list, tuple)) else got
                    assert got == expected, f"{name}: Feast {got!r} vs ours {expected!r}"
                    compared += 1
    print(json.dumps({"feast_ms": _percentiles(timed), "values_compared": compared}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", choices=["ours", "feast"], default="ours")
    parser.add_argument("--warehouse", default=str(REPO / "bench" / "out" / "snapshot-synthetic" / "warehouse"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--port", type=int, help="Feast's redis-server (the feast step)")
    args = parser.parse_args()
    if args.step == "feast":
        feast(args)
    else:
        ours(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
