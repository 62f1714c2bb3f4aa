"""FusedAdam (training/fused_adam.py) against Keras 3's own Adam and a numpy Adam written out by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.fused_adam import FusedAdam
from training.layers import GatherEmbedding

ROOT = Path(__file__).resolve().parents[1]


def _model(seed: int) -> keras.Model:
    """An embedding (sparse gradients) and dense layers (dense gradients), as in the ranking models."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((1,), dtype="int32", name="ids")
    numeric = keras.Input((3,), name="numeric")
    embedded = keras.layers.Flatten()(GatherEmbedding(40, 4)(ids))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([embedded, numeric]))
    return keras.Model([ids, numeric], keras.layers.Dense(1, activation="sigmoid")(hidden))


def _batches(steps: int):
    rng = np.random.default_rng(3)
    for step in range(steps):
        # each id at most once per batch (see the duplicates test); the later batches use ids 0-19 only:
        # rows 20-39 get no gradient there, and their moments must still decay
        ids = rng.permutation(40 if step < 2 else 20)[:16].reshape(-1, 1).astype("int32")
        yield (
            {"ids": ids, "numeric": rng.normal(size=(16, 3))},
            rng.integers(0, 2, (16, 1)).astype("float32"),
        )


def _trained(optimizer: keras.optimizers.Optimizer, steps: int = 6) -> list[np.ndarray]:
    model = _model(seed=11)
    model.compile(optimizer=optimizer, loss="binary_crossentropy")
    for features, label in _batches(steps):
        model.train_on_batch(features, label)
    return model.get_weights()


def test_fused_adam_trains_to_the_same_weights_as_keras_adam():
    keras_weights = _trained(keras.optimizers.Adam(0.01))
    fused_weights = _trained(FusedAdam(0.01))
    assert len(keras_weights) == len(fused_weights)
    start = _model(seed=11).get_weights()
    for before, expected, got in zip(start, keras_weights, fused_weights, strict=True):
        assert not np.allclose(before, expected)  # the steps did move every variable
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_fused_adam_matches_adam_written_out_in_numpy():
    """Three steps of y = w x with a fixed gradient sequence, against the textbook update."""
    lr, beta_1, beta_2, epsilon = 0.1, 0.9, 0.999, 1e-7
    weight = keras.Variable(np.array([1.0, -2.0, 0.5], dtype="float32"))
    optimizer = FusedAdam(lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    gradients = [np.array([0.5, -1.0, 0.0]), np.array([0.2, 0.3, -0.4]), np.array([-1.0, 0.1, 0.25])]
    w, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for t, g in enumerate(gradients, start=1):
        optimizer.apply_gradients([(g.astype("float32"), weight)])
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        w = w - lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (np.sqrt(v) + epsilon)
        np.testing.assert_allclose(weight.numpy(), w, rtol=1e-5, atol=1e-6)
    assert int(optimizer.iterations.numpy()) == 3


def _saved(path: Path) -> tuple[keras.Model, dict]:
    """A model compiled with FusedAdam, one step trained, saved to `path`; with the batch it saw."""
    model = _model(seed=5)
    model.compile(optimizer=FusedAdam(0.01), loss="binary_crossentropy")
    features, label = next(_batches(1))
    model.train_on_batch(features, label)
    model.save(path)
    return model, features


def test_a_model_compiled_with_fused_adam_saves_and_reloads(tmp_path):
    model, features = _saved(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, FusedAdam)
    assert loaded.optimizer.learning_rate.numpy() == pytest.approx(0.01)
    np.testing.assert_allclose(loaded.predict(features, verbose=0), model.predict(features, verbose=0), atol=1e-7)


def test_an_id_twice_in_a_batch_gets_adam_on_its_summed_gradient():
    """Embedding rows looked up twice: the step is the dense (textbook) Adam step on the summed gradient.
    Keras 3's Adam would square each occurrence instead (v = 0.001 (1 + 1) rather than 0.001 (1 + 1)^2)."""
    table = keras.Variable(np.zeros((4, 2), dtype="float32"))
    optimizer = FusedAdam(0.1)
    ids = tf.constant([1, 1, 2])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table.value, ids))  # d loss / d row = how often the row was looked up
    (gradient,) = tape.gradient(loss, [table.value])
    assert isinstance(gradient, tf.IndexedSlices)
    optimizer.apply_gradients([(gradient, table)])
    g = np.array([[0, 0], [2, 2], [1, 1], [0, 0]], dtype="float64")
    m, v = 0.1 * g, 0.001 * g * g
    expected = -0.1 * np.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    velocity = optimizer._velocities[0].numpy()
    np.testing.assert_allclose(velocity[1], [0.004, 0.004], rtol=1e-4)  # (1 + 1)^2 / 1000, not 2 / 1000


def test_a_fresh_process_loads_a_saved_model_through_load_trained(tmp_path):
    """`recpipe evaluate` and `recpipe export` load model.keras in a process that never trained: the
    optimizer's class (it was not registered there, at first) and the embedding tables' must be found."""
    _saved(tmp_path / "model.keras")
    code = (
        "import sys; from training.saved_models import load_trained; m = load_trained(sys.argv[1]); "
        "print(type(m.optimizer).__name__, *[type(x).__name__ for x in m.layers if 'Embedding' in type(x).__name__])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "model.keras")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "FusedAdam GatherEmbedding"
    # and the jobs load trained models only that way
    direct = [p.name for p in (ROOT / "jobs").glob("*.py") if "keras.saving.load_model" in p.read_text()]
    assert direct == []
