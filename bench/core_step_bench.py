"""How much of a model's steady state the streaming input path costs (issue 17): the same model core
trained on its encoded batches from `training.dataset` (Parquet read, conversion, shuffle buffer and
encoding every epoch, as `recpipe train` runs) and on the same encoded batches held in memory as tensors.

    .venv/bin/python bench/core_step_bench.py --config conf/movielens.yaml [--model deepfm] [--repeats 3]

Needs samples in the config's warehouse. One compiled core (the model's `build_split` core, compiled as
`recpipe train` compiles it) trains whole epochs on both inputs in turn: one untimed warm-up epoch of
each (tracing, page cache), then --repeats timed epochs of each, interleaved; medians of examples/s and
the ratio streaming / in memory. The in-memory batches are the full batches of one streamed epoch,
stacked (the last partial batch is left out on both sides' row counts). Nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/movielens.yaml")
    parser.add_argument("--model", default="deepfm", choices=["lr", "wide_deep", "deepfm"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from features.feature_spec import load_spec
    from jobs.config import load_config
    from jobs.train_models import build_for_training, load_training_inputs, with_initial_bias

    config = load_config(args.config)
    training = config.training.model_copy(update={"verbose": 0, "steps_per_execution": 1, "keep_encoded_max_mb": 0})
    inputs = load_training_inputs(config.paths.warehouse, None, needs_gbdt=False)
    split = inputs["manifest"]["splits"]["train"]
    params = with_initial_bias(config.models.params(args.model), inputs["manifest"])
    keras.utils.set_random_seed(training.seed)
    _, core, streamed, _, _ = build_for_training(args.model, load_spec(), inputs, params, training)
    full = [b for b in streamed if int(b[1].shape[0]) == training.batch_size]
    in_memory = tf.data.Dataset.from_tensor_slices(tuple(tf.nest.map_structure(lambda *t: tf.stack(t), *full)))
    in_memory = in_memory.prefetch(tf.data.AUTOTUNE)
    rows = {"streaming": split["rows"], "in memory": len(full) * training.batch_size}
    sources = {"streaming": streamed, "in memory": in_memory}
    rates: dict[str, list[float]] = {side: [] for side in sources}
    for round_ in range(args.repeats + 1):  # round 0 warms up both sides
        for side, dataset in sources.items():
            started = time.perf_counter()
            core.fit(dataset, epochs=1, verbose=0)
            if round_:
                rates[side].append(rows[side] / (time.perf_counter() - started))
    print(
        f"{args.model} core, batch {training.batch_size}, {split['rows']:,} train rows; median of {args.repeats} epochs"
    )
    for side, values in rates.items():
        print(f"{side:<10} {statistics.median(values):>10,.0f} examples/s  ({' '.join(f'{v:,.0f}' for v in values)})")
    ratio = statistics.median(rates["streaming"]) / statistics.median(rates["in memory"])
    print(f"streaming / in memory: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
