"""Compile and fit one model: early stopping on valid AUC, best-model checkpoint, TensorBoard logs.

The caller (jobs/train_models.py) builds the datasets and the model and decides where files go.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import keras
import numpy as np

from training.fused_adam import FusedAdam
from training.layers import FieldEmbeddings

OPTIMIZERS = ("adam", "adagrad", "ftrl", "sgd")


def optimizer(params) -> keras.optimizers.Optimizer:
    """params: a model's settings (jobs/settings.py ModelParams: optimizer, learning_rate, l1, ftrl_l2)."""
    name, rate = params.optimizer, params.learning_rate
    if name == "adam":  # Keras 3's Adam, with TensorFlow's fused kernel per variable (training/fused_adam.py)
        return FusedAdam(rate)
    if name == "adagrad":
        return keras.optimizers.Adagrad(rate)
    if name == "sgd":
        return keras.optimizers.SGD(rate)
    if name == "ftrl":  # FTRL-Proximal with L1: sparse wide weights (McMahan et al., 2013)
        return keras.optimizers.Ftrl(
            rate, l1_regularization_strength=params.l1, l2_regularization_strength=params.ftrl_l2
        )
    raise ValueError(f"unknown optimizer '{name}': choose one of {', '.join(OPTIMIZERS)}")


AUTO_STEPS_PER_EXECUTION = 8  # what `steps_per_execution: auto` runs per call on long epochs
AUTO_MIN_BATCHES_PER_EPOCH = 1000  # ... from this many batches per epoch


def steps_per_execution(setting: int | str, train_rows: int | None, batch_size: int) -> int:
    """The `training.steps_per_execution` setting as a number. `auto`: 8 steps per call when an epoch has
    >= 1,000 batches, else 1. Calls of 8 steps are a tf.while_loop Keras traces at the first step: ~1-2 s
    more start-up (DeepFM on ml-100k: 2.8-2.9 s → 3.8-5.8 s) against ~1-2 ms less Python per step
    (Wide&Deep on the 200-day set, 1,120 batches per epoch: +5-8% examples/s). Unknown rows: 1."""
    if setting != "auto":
        return int(setting)
    if train_rows is None or -(-train_rows // batch_size) < AUTO_MIN_BATCHES_PER_EPOCH:
        return 1
    return AUTO_STEPS_PER_EXECUTION


def compile_model(model: keras.Model, params, steps_per_execution: int = 1, train_metrics: bool = False) -> keras.Model:
    """Compile, and create the optimizer's slot variables now (eagerly, ~0.3 s for DeepFM): left to the
    first train step they are created inside its tf.function trace (~4 s), which then traces twice.
    steps_per_execution: train steps per call of the compiled train function (a tf.while_loop over the
    iterator; a short last call takes what is left), so Keras's Python loop and callbacks run once per
    that many batches (the `training.steps_per_execution` setting). The compiled AUC and PR AUC are
    measured on the valid split (val_auc, what early stopping watches) and by `evaluate`; on the train
    batches only with train_metrics (the `training.train_metrics` setting, `loss_only_train_steps`)."""
    model.compile(
        optimizer=optimizer(params),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.AUC(curve="PR", name="pr_auc")],
        steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)
    if not train_metrics:
        loss_only_train_steps(model)
    return model


def loss_only_train_steps(model: keras.Model) -> None:
    """Make `model`'s train steps update and report the loss only, not the compiled metrics.

    Keras's train step updates every compiled metric on every batch: the train split's AUC and PR AUC,
    a running mean over an epoch of changing weights with dropout on, which nothing here decides on.
    On the 200-day samples they cost 0.15-0.28 s of the first call's trace and up to 7% of DeepFM's
    steady state, Wide&Deep's level (DeepCTR, the peer, compiles no metric). Keras's own train step
    still runs (forward pass, loss, gradients, optimizer); only its `compute_metrics` call returns the
    loss tracker's mean instead of updating the metrics, so the epoch logs carry `loss` and, from the
    validation, `val_loss`, `val_auc`, `val_pr_auc`. `evaluate` and the validation are untouched."""
    keras_train_step, keras_compute_metrics = model.train_step, model.compute_metrics
    loss = next(metric for metric in model.metrics if metric.name == "loss")  # Keras's loss tracker
    in_train_step = False

    def train_step(data):
        nonlocal in_train_step
        in_train_step = True
        try:
            return keras_train_step(data)
        finally:
            in_train_step = False

    def compute_metrics(x, y, y_pred, sample_weight=None):
        if not in_train_step:
            return keras_compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        for metric in model.metrics:  # the compiled metrics built as their first update would, not updated
            if getattr(metric, "built", True) is False:
                metric.build(y, y_pred)
        return {"loss": loss.result()}

    model.train_step, model.compute_metrics = train_step, compute_metrics


class _Throughput(keras.callbacks.Callback):
    """Training time of each whole epoch, from its start (buffer fill, tracing, first batch included) to
    the start of its validation, and the same without the first batch (the steady state). With
    steps_per_execution > 1 Keras reports batches per execution: the "first batch" is the first
    execution's batches, and the steady state leaves all of them out."""

    def __init__(self, batch_size: int, rows_per_epoch: int | None = None, input_seconds: float = 0.0):
        super().__init__()
        self.batch_size, self.rows_per_epoch = batch_size, rows_per_epoch
        self.input_seconds = input_seconds  # input preparation before fit (making the train dataset)
        self.epochs: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.batches = time.perf_counter() - (0.0 if self.epochs else self.input_seconds), 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches == 1:  # `batch`: the index of the execution's last step
            self.first_batch, self.first_steps = time.perf_counter(), batch + 1

    def on_test_begin(self, logs=None):
        if hasattr(self, "started") and self.batches > 0:
            now = time.perf_counter()
            examples = self.rows_per_epoch or self.batches * self.batch_size
            self.epochs.append(
                {
                    "examples": examples,
                    "seconds": now - self.started,
                    "first_batch_seconds": self.first_batch - self.started,
                    "steady_examples": examples - self.first_steps * self.batch_size,
                    "steady_seconds": now - self.first_batch,
                }
            )
            del self.started

    def summary(self) -> dict:
        if not self.epochs:
            return {"train_examples_per_second": None, "steady_examples_per_second": None, "first_batch_seconds": []}
        total = lambda key: sum(e[key] for e in self.epochs)  # noqa: E731
        steady = total("steady_seconds")
        return {
            "train_examples_per_second": total("examples") / total("seconds"),  # whole epochs
            "steady_examples_per_second": total("steady_examples") / steady if steady > 0 else None,
            "first_batch_seconds": [round(e["first_batch_seconds"], 3) for e in self.epochs],
        }


class ZeroUnreachedRows(keras.callbacks.Callback):
    """Embedding rows no train step has reached are set to zero before every validation and at the end.

    A hashed id first seen after the split lands on a row no train row reaches; from a random start that
    row feeds noise to the MLP. At zero it contributes nothing, as DeepCTR's shared unseen-value row at
    N(0, 1e-4) (docs/training-performance.md: "Unreached rows at zero").
    Reached means changed: a row still equal to its start after training began had no gradient. Vector
    tables only (output_dim > 1; linear weights start at zero). Cold starts only: after a warm start an
    unchanged row holds what the older model learnt. With an L2 penalty every row moves each step
    (Adam decays unreached rows toward zero itself), so none is reset."""

    def on_train_begin(self, logs=None):
        self.tables = [(v, np.array(v.numpy())) for v in embedding_tables(self.model)]

    def on_test_begin(self, logs=None):
        self.reset()

    def on_train_end(self, logs=None):
        self.reset()

    def reset(self) -> None:
        for variable, start in getattr(self, "tables", []):
            value = np.array(variable.numpy())
            unreached = np.all(value == start, axis=1) & np.any(value != 0, axis=1)
            if unreached.any():
                value[unreached] = 0.0
                variable.assign(value)
                start[unreached] = 0.0  # a zeroed row that a later step reaches moves away from 0


def embedding_tables(model) -> list:
    """The vector tables of `model` and of the models nested in it: Embedding layers with output_dim > 1
    and `FieldEmbeddings` tables more than one column wide (training/layers.py)."""
    tables = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            tables += embedding_tables(layer)
        elif isinstance(layer, keras.layers.Embedding) and layer.output_dim > 1:
            tables.append(layer.embeddings)
        elif isinstance(layer, FieldEmbeddings) and max(layer.dims) > 1:
            tables.append(layer.embeddings)
    return tables


def early_stopping(patience: int) -> keras.callbacks.EarlyStopping:
    """Stop when valid AUC has not improved for `patience` epochs and keep the best epoch's weights."""
    return keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience, restore_best_weights=True)


def valid_auc(model: keras.Model, valid) -> float:
    """The compiled AUC metric (the one early stopping watches as val_auc) on `valid`, as the model is."""
    return float(model.evaluate(valid, return_dict=True, verbose=0)["auc"])


def start_counts(params, warm_started: bool = False) -> bool:
    """Do the starting weights mean something (so early stopping scores them as epoch 0)? A warm start,
    or GBDT+LR started at the trees' own prediction (`init_from_gbdt`)."""
    return warm_started or bool(getattr(params, "init_from_gbdt", False))


def start_wins(start_auc: float | None, best_trained: float) -> bool:
    """No trained epoch beat the start's valid AUC (ties keep the start)."""
    return start_auc is not None and start_auc >= best_trained


def keep_start_if_better(model: keras.Model, start: tuple[float, list] | None, best_trained: float) -> bool:
    """`start` = (valid AUC, weights) before training: when no trained epoch beat it, the model gets its
    starting weights back (early stopping's epoch 0). True when it did."""
    if start is None or not start_wins(start[0], best_trained):
        return False
    model.set_weights(start[1])
    return True


def fit(
    model: keras.Model,
    train,
    valid,
    out_dir: Path,
    training,
    rows_per_epoch: int | None = None,
    start_is_a_candidate: bool = False,
    zero_unreached_rows: bool = True,
    input_seconds: float = 0.0,
) -> dict:
    """Train until valid AUC stops improving; returns the Keras history plus best epoch and throughput:
    train_examples_per_second over whole epochs (buffer fill and first batch included), the steady
    state without each epoch's first batch, and the first batch's seconds per epoch.
    training: the `training` settings (jobs/settings.py TrainingSettings); rows_per_epoch: the train
    split's rows (else batches x batch size). start_is_a_candidate: the starting weights mean something
    (a warm start, GBDT+LR started at the trees' own prediction): their valid AUC is measured first and,
    when no epoch beats it, they are what the model keeps (best_epoch 0, `kept_start`).
    zero_unreached_rows: ZeroUnreachedRows (a cold start; False after a warm start). input_seconds: the
    train input's preparation before fit (making its dataset), counted in the first epoch's time
    and start-up."""
    patience = training.early_stopping_patience
    start = (valid_auc(model, valid), model.get_weights()) if start_is_a_candidate else None
    throughput = _Throughput(training.batch_size, rows_per_epoch, input_seconds)
    callbacks = [
        early_stopping(patience),
        keras.callbacks.ModelCheckpoint(
            str(out_dir / "checkpoints" / "best.keras"), monitor="val_auc", mode="max", save_best_only=True
        ),
        keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard")),
        throughput,
    ]
    if zero_unreached_rows:  # last: its on_train_end sees the weights EarlyStopping restored
        callbacks.append(ZeroUnreachedRows())
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    warnings.filterwarnings("ignore", message=".*(shuffle=True. was passed|input ran out of data)")  # tf.data: expected
    history = model.fit(
        train, validation_data=valid, epochs=training.max_epochs, callbacks=callbacks, verbose=training.verbose
    )
    logs = {k: [float(v) for v in values] for k, values in history.history.items()}
    best = max(range(len(logs["val_auc"])), key=lambda i: logs["val_auc"][i])
    kept_start = keep_start_if_better(model, start, logs["val_auc"][best])
    if kept_start:
        model.save(out_dir / "checkpoints" / "best.keras")
    return {
        "history": logs,
        "best_epoch": 0 if kept_start else best + 1,
        "epochs": len(logs["val_auc"]),
        "best_val_auc": start[0] if start is not None and kept_start else logs["val_auc"][best],
        "start_val_auc": None if start is None else start[0],
        "kept_start": kept_start,
        "seconds": time.perf_counter() - started,
        **throughput.summary(),
    }
