"""Where the training input path spends its time, stage by stage, with no model training (issue 17).

    .venv/bin/python bench/input_pipeline_bench.py --config conf/movielens.yaml [--rows 300000]
        [--models deepfm,wide_deep] [--repeats 3]

Needs samples in the config's warehouse. Rows/s over the first --rows rows of the shuffled train split,
each stage including the ones before it:
  python generator       the shards read as Arrow, converted to numpy (nulls filled, lists padded) and
                         passed through the shuffle buffer: `training.dataset`'s Python side alone
  tf.data raw            the same inside `tf.data.Dataset.from_generator`, rebatched to the batch size
                         (what the raw-feature path trains on), drained in the graph as `fit` does
  tf.data encoded <m>    plus model m's preprocessing in the parallel map (what the encoded path trains on)
One untimed warm-up pass of each stage (page cache, tracing), then the median of --repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from features.feature_spec import load_spec  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.train_models import load_training_inputs  # noqa: E402
from training.dataset import make_dataset, record_batches, shuffled_batches  # noqa: E402
from training.inputs import arrow_to_arrays, model_inputs, split_files  # noqa: E402
from training.models import build_split  # noqa: E402


def rate(batches, rows: int, label_of) -> float:
    seen, started = 0, time.perf_counter()
    for batch in batches:
        seen += len(label_of(batch))
        if seen >= rows:
            break
    return seen / (time.perf_counter() - started)


def graph_rate(dataset, rows: int, batch_size: int) -> float:
    """Rows/s of a tf.data pipeline drained inside the graph (`Dataset.reduce`), as `fit` consumes it: no
    Python object per batch, unlike iterating it from Python."""
    import tensorflow as tf

    taken = dataset.take(-(-rows // batch_size))
    started = time.perf_counter()
    seen = int(taken.reduce(tf.constant(0, tf.int64), lambda n, batch: n + tf.shape(batch[1], tf.int64)[0]))
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/movielens.yaml")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--models", default="deepfm,wide_deep")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config)
    training = config.training
    inputs = load_training_inputs(config.paths.warehouse, None, needs_gbdt=True)
    spec, shards = load_spec(), inputs["source"] / "parquet"
    raw_inputs = model_inputs(spec)
    columns = [i.name for i in raw_inputs] + ["label", "weight"]
    files = split_files(shards, "train")
    block = max(1, 8192 // training.batch_size) * training.batch_size

    def python_side():
        parts = (
            (arrow_to_arrays(b, raw_inputs), b.column("label").to_numpy(), b.column("weight").to_numpy())
            for b in record_batches(files, columns, training.chunk_rows, training.seed, 0)
        )
        return shuffled_batches(parts, training.shuffle_buffer, block, np.random.default_rng(1))

    def dataset(encode=None):
        return make_dataset(
            shards, "train", raw_inputs, training.batch_size, training.shuffle_buffer, training.seed,
            training.chunk_rows, encode=encode,
        )  # fmt: skip

    stages = {
        "python generator": lambda: rate(python_side(), args.rows, lambda b: b[1]),
        "tf.data raw": lambda: graph_rate(dataset(), args.rows, training.batch_size),
    }
    for name in args.models.split(","):
        params = config.models.params(name)
        preprocessing = build_split(name, spec, inputs["transforms"], params, inputs["gbdt"]).preprocessing
        fields = len(preprocessing.outputs)
        stages[f"tf.data encoded {name} ({fields} fields)"] = lambda p=preprocessing: graph_rate(
            dataset(p), args.rows, training.batch_size
        )
    print(
        f"train split: first {args.rows:,} rows, batch {training.batch_size}, shuffle buffer {training.shuffle_buffer}"
    )
    for stage, run in stages.items():
        run()  # warm-up
        print(f"{stage:<42} {statistics.median(run() for _ in range(args.repeats)):>10,.0f} rows/s", flush=True)


if __name__ == "__main__":
    main()
