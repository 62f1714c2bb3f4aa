"""Training throughput per model on CPU: the raw-feature path (the whole model, preprocessing included,
in every train step) vs the encoded path (tf.data encodes the features in a parallel map, the model core
trains on encoded batches; issue 17; the split kept in memory by its first epoch when the config's
`training.keep_encoded_max_mb` and more than one epoch allow it, as `recpipe train`), the streamed path
(encoded, never kept), and the tf.data input pipeline alone.

    .venv/bin/python bench/training_bench.py --config conf/movielens.yaml [--epochs 2] [--repeats 3]
        [--models deepfm,wide_deep] [--paths raw,encoded|streamed,encoded]

Needs samples (and the GBDT for gbdt_lr) in the config's warehouse: run `recpipe run` first. For every
model and path, interleaved (path 1, path 2, path 1, path 2, ...), after one untimed warm-up run of each:
  setup s       build + compile + datasets (the tf.data map's tracing) before fit starts
  examples/s    training examples/s over whole epochs (buffer fill, tracing and first batch included;
                validation excluded), as training.train.fit measures it
  steady        the same without each epoch's first batch
  first batch   seconds from the start of epoch 1 to the end of its first batch
  test AUC      of the raw-feature model after the epochs (the same seed on both paths)
Medians over the repeats; ratio = second path / first path examples/s. Each run builds its model afresh, so every
timed run traces its own graph as `recpipe train` does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from features.feature_spec import load_spec  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.train_models import build_for_training, load_training_inputs  # noqa: E402
from training.baselines import score_test  # noqa: E402
from training.dataset import make_dataset  # noqa: E402
from training.inputs import model_inputs  # noqa: E402
from training.train import fit  # noqa: E402

PATHS = {  # path: what replaces the config's training settings
    "raw": {"encode_in_input_pipeline": False},
    "encoded": {"encode_in_input_pipeline": True},  # kept when the config's keep_encoded_max_mb allows it
    "streamed": {"encode_in_input_pipeline": True, "keep_encoded_max_mb": 0.0},  # encoded, never kept
}


def pipeline_rate(dataset, epochs: int) -> float:
    """Rows/s over whole epochs (the shuffle buffer's fill and the first batch included)."""
    rows, started = 0, time.perf_counter()
    for _ in range(epochs):
        for _, label, _ in dataset:
            rows += int(label.shape[0])
    return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/movielens.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="deepfm,wide_deep")
    parser.add_argument("--paths", default="raw,encoded")
    args = parser.parse_args()
    config = load_config(args.config)
    inputs = load_training_inputs(config.paths.warehouse, None, needs_gbdt=True)
    spec, shards = load_spec(), inputs["source"] / "parquet"
    rows = inputs["manifest"]["splits"]["train"]["rows"]
    test_shards = inputs["source"] / "parquet"
    base = config.training.model_copy(
        update={"max_epochs": args.epochs, "early_stopping_patience": args.epochs, "verbose": 0}
    )
    plain = lambda: make_dataset(shards, "train", model_inputs(spec), base.batch_size, base.shuffle_buffer, 7)  # noqa: E731
    pipeline_rate(plain(), 1)  # warm-up: file cache, tf.data tracing
    print(
        f"train split: {rows} rows, batch {base.batch_size}, shuffle buffer {base.shuffle_buffer}, {args.epochs} epochs"
    )
    print(f"tf.data alone (raw features, shuffled): {pipeline_rate(plain(), args.epochs):,.0f} rows/s")

    def run(name: str, path: dict) -> dict:
        params = config.models.params(name)
        training = base.model_copy(update=path)
        keras.utils.set_random_seed(7)
        started = time.perf_counter()
        model, trained, train, valid, ready = build_for_training(name, spec, inputs, params, training)
        setup = time.perf_counter() - started
        result = fit(trained, train, valid, Path(tempfile.mkdtemp()), training, rows, input_seconds=ready)
        scored = score_test(model, test_shards)
        return {
            "setup": setup,
            "rate": result["train_examples_per_second"],
            "steady": result["steady_examples_per_second"],
            "first": result["first_batch_seconds"][0],
            "auc": roc_auc_score(scored["label"], scored["prediction"]),
        }

    header = f"{'model':<10} {'path':<8} {'setup s':>8} {'examples/s':>11} {'steady':>9} {'first batch s':>14} {'test AUC':>9}"
    print(header)
    for name in args.models.split(","):
        paths = args.paths.split(",")
        for path in paths:
            run(name, PATHS[path])  # warm-up: file cache, oneDNN kernels
        results: dict[str, list[dict]] = {p: [] for p in paths}
        for _ in range(args.repeats):
            for path in paths:
                results[path].append(run(name, PATHS[path]))
        medians = {}
        for path in paths:
            m = medians[path] = {k: statistics.median(r[k] for r in results[path]) for k in results[path][0]}
            aucs = "/".join(f"{r['auc']:.4f}" for r in results[path])
            print(
                f"{name:<10} {path:<8} {m['setup']:>8.1f} {m['rate']:>11,.0f} {m['steady']:>9,.0f} "
                f"{m['first']:>14.1f} {m['auc']:>9.4f}  (AUCs {aucs})"
            )
        if len(paths) == 2:
            a, b = (medians[p] for p in paths)
            print(
                f"{name:<10} {paths[1]}/{paths[0]}: examples/s {b['rate'] / a['rate']:.2f}x, steady "
                f"{b['steady'] / a['steady']:.2f}x, first batch {b['first'] / a['first']:.2f}x"
            )


if __name__ == "__main__":
    main()
