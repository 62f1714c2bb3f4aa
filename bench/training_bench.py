"""Training throughput per model on CPU vs the tf.data input pipeline alone (issue 6 benchmark).

    .venv/bin/python bench/training_bench.py --config conf/movielens.yaml [--epochs 2]

Needs samples (and the GBDT for gbdt_lr) in the config's warehouse: run `recpipe run` first. Prints
rows/s of the input pipeline (shuffled, as in training; and plain), training examples/s of each model
over whole epochs (buffer fill, tracing and first batch included; validation excluded), the steady
state without each epoch's first batch, the first batch's seconds, and the ratio pipeline / training:
> 1 means the input pipeline alone is faster than training. Each side is warmed up by one untimed pass
(the pipeline) or one untimed epoch (the models, built afresh for the timed run).
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
    """Rows/s over whole epochs (the shuffle buffer's fill and the first batch included), measured like
    training throughput (training.train)."""
    rows, started = 0, time.perf_counter()
    for _ in range(epochs):
        for _, label, _ in dataset:
            rows += int(label.shape[0])
    return rows / (time.perf_counter() - started)


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
    pipeline_rate(train_set(), 1)  # warm-up: file cache, tf.data tracing
    shuffled = pipeline_rate(train_set(), args.epochs)
    plain = pipeline_rate(make_dataset(shards, "train", model_inputs(spec), batch, 0, chunk_rows=chunk), args.epochs)
    print(f"train split: {rows} rows, batch {batch}, shuffle buffer {buffer}, {args.epochs} epochs")
    print(f"{'tf.data alone (shuffled)':<28} {shuffled:>10,.0f} rows/s")
    print(f"{'tf.data alone (no shuffle)':<28} {plain:>10,.0f} rows/s")
    print(
        f"{'model':<12} {'params':>10} {'examples/s':>11} {'steady':>9} {'first batch s':>14} {'pipeline/training':>18}"
    )
    for name in MODEL_NAMES:
        params = config.models.params(name)

        def train_once(epochs: int) -> tuple:
            keras.utils.set_random_seed(7)
            model = compile_model(
                build_model(name, FeatureEncoders(spec, inputs["transforms"]), params, inputs["gbdt"]), params
            )
            valid = make_dataset(shards, "valid", model_inputs(spec), 4 * batch, chunk_rows=chunk)
            settings = training.model_copy(
                update={"max_epochs": epochs, "early_stopping_patience": epochs, "verbose": 0}
            )
            return model, fit(model, train_set(), valid, Path(tempfile.mkdtemp()), settings, rows)

        train_once(1)  # warm-up: file cache, XLA/oneDNN kernels (the timed run still traces its own graph)
        model, result = train_once(args.epochs)
        rate = result["train_examples_per_second"]
        first = "/".join(f"{s:.1f}" for s in result["first_batch_seconds"])
        print(
            f"{name:<12} {model.count_params():>10,} {rate:>11,.0f} {result['steady_examples_per_second']:>9,.0f} "
            f"{first:>14} {shuffled / rate:>17.1f}x"
        )


if __name__ == "__main__":
    main()
