"""In-process SavedModel latency and throughput (issue 7 benchmark).

    .venv/bin/python bench/serving_bench.py --config conf/movielens.yaml [--repeats 200]

Loads every published SavedModel under the config's export root (the newest version of each model)
with `tf.saved_model.load`, calls `serving_default` on batches of 1, 100 and 1000 real test rows and
prints p50/p99 latency and rows/s (warm: the first calls of each batch size are not timed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from features.feature_spec import load_spec  # noqa: E402
from jobs import artifacts  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.export_model import test_rows  # noqa: E402
from training.publish_gate import published_versions  # noqa: E402
from training.export import to_tensors  # noqa: E402
from training.inputs import model_inputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/movielens.yaml")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    config = load_config(args.config)
    warehouse = config.paths.warehouse
    rows = test_rows(artifacts.samples_dir(warehouse, artifacts.latest_samples_version(warehouse)) / "parquet", 1000)
    inputs = model_inputs(load_spec())
    root = Path(config.export.root)
    print(f"{'model':<10} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'rows/s':>10}")
    for model_root in sorted(p for p in root.iterdir() if published_versions(p)):
        serve = tf.saved_model.load(str(model_root / str(published_versions(model_root)[-1]))).signatures[
            "serving_default"
        ]
        for batch in (1, 100, 1000):
            features = to_tensors({k: v[:batch] for k, v in rows.items()}, inputs)
            for _ in range(5):
                serve(**features)
            repeats = max(20, args.repeats // (1 if batch < 1000 else 4))
            latencies = []
            for _ in range(repeats):
                started = time.perf_counter()
                serve(**features)["probability"].numpy()
                latencies.append(time.perf_counter() - started)
            p50, p99 = np.percentile(latencies, [50, 99]) * 1000
            print(f"{model_root.name:<10} {batch:>5} {p50:>8.2f} {p99:>8.2f} {batch / np.median(latencies):>10,.0f}")


if __name__ == "__main__":
    main()
