"""The DeepCTR side of bench/peers_bench.py; runs in .venv-deepctr (TF_USE_LEGACY_KERAS=1, tf_keras).

    TF_USE_LEGACY_KERAS=1 .venv-deepctr/bin/python bench/peers/deepctr_side.py FIELDS.npz MODEL EMBEDDING \
        HIDDEN DROPOUT LEARNING_RATE EPOCHS BATCH SEED [FIRST_STEPS]

FIELDS.npz (written by bench/peers_bench.py from the samples' Parquet shards): for every model field
`sparse:<name>` (int32 codes, 0 = missing/unseen, with `vocab:<name>`), `dense:<name>` (float32) or
`varlen:<name>` (int32 [rows, N], 0 = padding), per split as `<split>/<kind>:<name>`, and
`<split>/label`. Trains DeepCTR's DeepFM or WDL on train for EPOCHS whole epochs (batch BATCH, Adam),
with DeepCTR's defaults unless told to take one of recpipe's choices: DEEPCTR_EMBEDDINGS_UNIFORM=B starts
every embedding table at uniform(-B, B), its own draw (recpipe's default start, B = 0.05), and
DEEPCTR_LINEAR_FIELDS=a,b,... puts only those fields in the linear part (recpipe's `wide` role),
timed like recpipe's training (from each epoch's start, the first batch included, to its end), and
prints one JSON line: examples/s over whole epochs, the steady state, the seconds to the end of the
epoch's first FIRST_STEPS batches (default 1: recpipe's first call of its train function runs
`training.steps_per_execution` batches, so the bench passes that) and valid and test AUC (sklearn).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat  # noqa: E402
from deepctr.models import WDL, DeepFM  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402


class Timer(tf.keras.callbacks.Callback):
    def __init__(self, first_steps: int = 1):
        super().__init__()
        self.epochs, self.first_steps = [], first_steps

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.first = time.perf_counter(), None

    def on_train_batch_end(self, batch, logs=None):
        if self.first is None and batch + 1 >= self.first_steps:
            self.first = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((self.started, self.first, time.perf_counter()))


def main() -> int:
    path, model_name, embedding, hidden, dropout, rate, epochs, batch, seed = sys.argv[1:10]
    first_steps = int(sys.argv[10]) if len(sys.argv) > 10 else 1
    embedding, epochs, batch, seed = int(embedding), int(epochs), int(batch), int(seed)
    hidden = tuple(int(h) for h in hidden.split(","))
    tf.keras.utils.set_random_seed(seed)
    data = np.load(path, allow_pickle=False)
    names = sorted({key.split("/", 1)[1] for key in data.files if key.startswith("train/") and ":" in key})
    columns = []
    for i, key in enumerate(names):
        kind, name = key.split(":", 1)
        start = {}  # DeepCTR's own: N(0, 1e-4), one seeded initializer shared by every table
        if os.environ.get("DEEPCTR_EMBEDDINGS_UNIFORM"):  # recpipe's: uniform(-b, b), each table its own draw
            bound = float(os.environ["DEEPCTR_EMBEDDINGS_UNIFORM"])
            start["embeddings_initializer"] = tf.keras.initializers.RandomUniform(-bound, bound, seed=seed * 1000 + i)
        if kind == "sparse":
            columns.append(SparseFeat(name, int(data[f"vocab:{name}"]), embedding_dim=embedding, **start))
        elif kind == "dense":
            columns.append(DenseFeat(name, 1))
        else:
            values = data[f"train/{key}"]
            columns.append(
                VarLenSparseFeat(
                    SparseFeat(name, int(data[f"vocab:{name}"]), embedding_dim=embedding, **start),
                    maxlen=values.shape[1],
                    combiner="mean",
                )
            )

    def inputs(split):
        return {key.split(":", 1)[1]: data[f"{split}/{key}"] for key in names}

    build = DeepFM if model_name == "deepfm" else WDL
    linear = columns  # DeepCTR's own: the linear part over every field
    if os.environ.get("DEEPCTR_LINEAR_FIELDS"):  # recpipe's Wide&Deep: over the spec's `wide` fields only
        wide = set(os.environ["DEEPCTR_LINEAR_FIELDS"].split(","))
        linear = [c for c in columns if c.name in wide]
    model = build(linear, columns, dnn_hidden_units=hidden, dnn_dropout=float(dropout), seed=seed, task="binary")
    model.compile(tf.keras.optimizers.Adam(float(rate)), "binary_crossentropy")
    timer = Timer(first_steps)
    train_rows = len(data["train/label"])
    model.fit(inputs("train"), data["train/label"], batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer])
    seconds = sum(end - start for start, _, end in timer.epochs)
    steady = sum(end - first for _, first, end in timer.epochs)
    result = {
        "examples_per_second": epochs * train_rows / seconds,
        "steady_examples_per_second": epochs * (train_rows - first_steps * batch) / steady,
        "first_batch_seconds": [round(first - start, 3) for start, first, _ in timer.epochs],
    }
    for split in ("valid", "test"):
        predictions = model.predict(inputs(split), batch_size=4 * batch, verbose=0).ravel()
        result[f"{split}_auc"] = float(roc_auc_score(data[f"{split}/label"], predictions))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
