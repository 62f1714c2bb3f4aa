"""Benchmark: the whole `recpipe gbdt` stage vs a plain xgboost stage on the same samples (issue 17).

    .venv/bin/python bench/gbdt_stage_bench.py --config conf/movielens.yaml [--repeats 3]

Needs a warehouse where `recpipe samples` ran (e.g. after `recpipe run --config conf/movielens.yaml`);
the config's warehouse is written to (gbdt_leaves, _artifacts/gbdt): point --config at a copy if that
matters. Three sides, each a fresh process (interpreter, imports and, for recpipe, the Spark session
included), interleaved, one warm-up round, then the median of --repeats rounds:

- plain: pandas reads the train/valid/test Parquet shards of the samples, xgboost.train (hist,
  nthread=1, early stopping on valid) on the GBDT's inputs, leaves (pred_leaf) and probabilities for
  every row, one Parquet file written. What a user without recpipe would write.
- recpipe gbdt on the driver (the config's gbdt.local_max_rows) and on Spark (local_max_rows: 0), both
  writing the Delta table gbdt_leaves, the booster, leaf vocabularies, importance and metrics.

Prints seconds and the ratio to the plain stage (the issue's target: <= 3x on the driver path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def plain_stage(warehouse: str, out: str) -> None:
    """The peer: pandas + xgboost, no Spark. Leaves are raw pred_leaf node ids (no vocabulary)."""
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    from features import gbdt
    from features.feature_spec import load_spec
    from jobs import artifacts

    version = artifacts.latest_samples_version(warehouse)
    source = artifacts.samples_dir(warehouse, version)
    transforms = json.loads((source / "transforms.json").read_text())["features"]
    features = gbdt.dense_features(load_spec(), transforms)
    names = [f.name for f in features]
    frames = {}
    for split in ("train", "valid", "test"):
        frame = pd.read_parquet(source / "parquet" / f"split={split}", columns=["sample_id", "label", *names])
        for f in features:
            if f.vocabulary is not None:
                codes = pd.Categorical(frame[f.name], categories=list(f.vocabulary)).codes.astype(np.float32)
                frame[f.name] = np.where(frame[f.name].isna(), np.nan, np.where(codes < 0, len(f.vocabulary), codes))
        frames[split] = frame
    matrices = {
        s: xgb.DMatrix(f[names].astype(np.float32), label=f["label"], missing=np.nan) for s, f in frames.items()
    }
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 5, "eta": 0.1, "nthread": 1}
    params.update({"eval_metric": "logloss", "seed": 7})
    booster = xgb.train(
        params,
        matrices["train"],
        100,
        evals=[(matrices["valid"], "valid")],
        early_stopping_rounds=10,
        verbose_eval=False,
    )
    booster = booster[: booster.best_iteration + 1]
    parts = []
    for split, frame in frames.items():
        leaves = booster.predict(matrices[split], pred_leaf=True).astype(np.int32)
        parts.append(
            pd.DataFrame(
                {
                    "sample_id": frame["sample_id"],
                    "split": split,
                    "gbdt_leaves": list(leaves),
                    "gbdt_probability": booster.predict(matrices[split]),
                }
            )
        )
    pd.concat(parts).to_parquet(out)
    print(f"plain: {booster.num_boosted_rounds()} trees")


def run(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/movielens.yaml")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round (median)")
    parser.add_argument("--plain-stage", nargs=2, metavar=("WAREHOUSE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_stage:
        plain_stage(*args.plain_stage)
        return 0

    from jobs.config import load_config

    config = load_config(args.config)
    warehouse = str(Path(config.paths.warehouse).resolve())
    with tempfile.TemporaryDirectory() as scratch:
        on_spark = Path(scratch) / "on-spark.yaml"
        raw = yaml.safe_load(Path(args.config).read_text())
        raw.setdefault("gbdt", {})["local_max_rows"] = 0
        raw.setdefault("paths", {})["warehouse"] = warehouse
        on_spark.write_text(yaml.safe_dump(raw))
        recpipe = [sys.executable, "-m", "jobs.cli", "gbdt"]
        sides = {
            "plain xgboost stage": [sys.executable, __file__, "--plain-stage", warehouse, f"{scratch}/plain.parquet"],
            "recpipe gbdt, driver": [*recpipe, "--config", str(Path(args.config).resolve())],
            "recpipe gbdt, Spark": [*recpipe, "--config", str(on_spark)],
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        for round_ in range(args.repeats + 1):  # round 0 warms up every side (page cache, JIT, pyc)
            for name, command in sides.items():
                seconds = run(command)
                if round_:
                    times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    plain = medians["plain xgboost stage"]
    from jobs import artifacts

    manifest = artifacts.samples_dir(warehouse, artifacts.latest_samples_version(warehouse)) / "manifest.json"
    rows = sum(split["rows"] for split in json.loads(manifest.read_text())["splits"].values())
    print(f"samples: {rows:,} rows; median of {args.repeats} after a warm-up, each side a fresh process")
    print(f"{'side':<24} {'seconds':>8} {'x plain':>8}")
    for name, seconds in medians.items():
        print(f"{name:<24} {seconds:>8.1f} {seconds / plain:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
