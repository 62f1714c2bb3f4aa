"""Training throughput per model on CPU vs the tf.data input pipeline alone (issue 6 benchmark).

    .venv/bin/python bench/training_bench.py --config conf/movielens.yaml [--epochs 2]

Needs samples (and the GBDT for gbdt_lr) in the config's warehouse: run `recpipe run` first. Prints
rows/s of the input pipeline (shuffled, as in training; and plain), training examples/s of each model
(first batch of each epoch excluded: graph tracing) and the ratio pipeline / training: > 1 means the
input pipeline is not the bottleneck.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from features.feature_spec import load_spec  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.settings import MODEL_NAMES  # noqa: E402
from jobs.train_models import load_training_inputs  # noqa: E402
from training.dataset import make_dataset  # noqa: E402
from training.feature_layers import FeatureEncoders  # noqa: E402
from training.inputs import model_inputs  # noqa: E402
from training.models import build_model  # noqa: E402
from training.train import compile_model, fit  # noqa: E402


def pipeline_rate(dataset, epochs: int) -> float:
    """Rows/s after the first batch of each epoch, measured like training throughput (training.train)."""
    rows, seconds = 0, 0.0
    for _ in range(epochs):
        iterator = iter(dataset)
        next(iterator)
        started = time.perf_counter()
        for _, label, _ in iterator:
            rows += int(label.shape[0])
        seconds += time.perf_counter() - started
    return rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/movielens.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    config = load_config(args.config)
    training = config.training
    inputs = load_training_inputs(config.paths.warehouse, None, needs_gbdt=True)
    spec, shards = load_spec(), inputs["source"] / "parquet"
    batch, buffer, chunk = training.batch_size, training.shuffle_buffer, training.chunk_rows

    def train_set():
        return make_dataset(shards, "train", model_inputs(spec), batch, buffer, 7, chunk)

    rows = inputs["manifest"]["splits"]["train"]["rows"]
    shuffled = pipeline_rate(train_set(), args.epochs)
    plain = pipeline_rate(make_dataset(shards, "train", model_inputs(spec), batch, 0, chunk_rows=chunk), args.epochs)
    print(f"train split: {rows} rows, batch {batch}, shuffle buffer {buffer}, {args.epochs} epochs")
    print(f"{'tf.data alone (shuffled)':<28} {shuffled:>10,.0f} rows/s")
    print(f"{'tf.data alone (no shuffle)':<28} {plain:>10,.0f} rows/s")
    print(f"{'model':<12} {'params':>10} {'examples/s':>11} {'pipeline/training':>18}")
    for name in MODEL_NAMES:
        params = config.models.params(name)
        keras.utils.set_random_seed(7)
        model = compile_model(build_model(name, FeatureEncoders(spec, inputs["transforms"]), params, inputs["gbdt"]), params)
        valid = make_dataset(shards, "valid", model_inputs(spec), 4 * batch, chunk_rows=chunk)
        result = fit(model, train_set(), valid, Path(tempfile.mkdtemp()),
                     training.model_copy(update={"max_epochs": args.epochs, "early_stopping_patience": args.epochs,
                                                 "verbose": 0}))
        rate = result["train_examples_per_second"]
        print(f"{name:<12} {model.count_params():>10,} {rate:>11,.0f} {shuffled / rate:>17.1f}x")


if __name__ == "__main__":
    main()
