"""Building blocks the model files share: linear (wide) logits, field embeddings, FM interactions, MLP."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from training.feature_layers import Categorical


@keras.saving.register_keras_serializable(package="recpipe")
class GatherEmbedding(keras.layers.Embedding):
    """keras.layers.Embedding whose lookup is a plain gather. Keras's `take` first maps negative indices
    to positive ones (a `where` per lookup); the indices here come from hashing, vocabularies and
    buckets and are never negative. The same weights, outputs and (IndexedSlices) gradients; DeepFM's
    44 tables trace 0.13 s faster (docs/training-performance.md: "Where DeepFM's start-up goes")."""

    def call(self, inputs):
        if inputs.dtype not in (tf.int32, tf.int64):
            inputs = tf.cast(inputs, tf.int32)
        return tf.gather(self.embeddings, inputs)


def _masked_sum(values, mask):
    """values [batch, length, d] with mask [batch, length] → [batch, d] (padding contributes nothing)."""
    return ops.sum(values * ops.expand_dims(ops.cast(mask, values.dtype), -1), axis=1)


def linear_logit(
    categoricals: dict[str, Categorical],
    numerics: dict[str, keras.KerasTensor],
    name: str,
    l2: float = 0.0,
):
    """Logistic regression over one-hot categoricals (a 1-wide embedding = the weight of each one-hot
    column; list features sum their active columns) and dense numeric columns, plus a bias.
    Every weight starts at zero (one-hots, the numeric kernel, the constant), so the logit starts at
    exactly 0: a model starts at its global bias, the train positive rate's logit (GBDT+LR started from
    the trees: at XGBoost's prediction). A Glorot start of the constant alone is up to ±1.7 in logit,
    which undid that start on 4% click-through data (docs/training-performance.md: "The linear part's start")."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    terms = []
    for field, c in categoricals.items():
        weights = GatherEmbedding(
            c.cardinality, 1, embeddings_initializer="zeros", embeddings_regularizer=regularizer, name=f"{name}_{field}"
        )(c.index)
        terms.append(_masked_sum(weights, c.mask) if c.mask is not None else weights)
    if numerics:
        dense = ops.concatenate(list(numerics.values()), axis=-1)
        terms.append(
            keras.layers.Dense(
                1,
                use_bias=False,
                kernel_initializer="zeros",
                kernel_regularizer=regularizer,
                name=f"{name}_numeric",
            )(dense)
        )
    constant = keras.layers.Dense(1, kernel_initializer="zeros", name=f"{name}_bias")  # a learned constant
    bias = constant(ops.ones_like(terms[0]))
    return keras.layers.Add(name=f"{name}_logit")([*terms, bias])


def embedding_initializer(stddev: float | None):
    """None: keras.layers.Embedding's default, uniform(-0.05, 0.05); a value: N(0, stddev) (DeepCTR: 1e-4).
    A new initializer per table: an unseeded Keras 3 initializer fixes its seed when it is made, so one
    instance shared by several tables would start them all at the same (prefix of one) random draw."""
    if stddev is None:
        return keras.initializers.RandomUniform(-0.05, 0.05)
    return keras.initializers.RandomNormal(0.0, stddev)


def embed(c: Categorical, dim: int, name: str, l2: float = 0.0, init_stddev: float | None = None):
    """[batch, dim] embedding of one field; list features take the mean over their unmasked values.
    The table starts as `embedding_initializer(init_stddev)` says."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    vectors = GatherEmbedding(
        c.cardinality,
        dim,
        embeddings_initializer=embedding_initializer(init_stddev),
        embeddings_regularizer=regularizer,
        name=name,
    )(c.index)
    if c.mask is None:
        return vectors
    count = ops.maximum(ops.sum(ops.cast(c.mask, "float32"), axis=1, keepdims=True), 1.0)
    return _masked_sum(vectors, c.mask) / count


def fm_interaction(fields):
    """Pairwise FM term over field vectors [batch, fields, k]: 0.5 * sum_k((sum_f v)^2 - sum_f v^2) → [batch, 1]."""
    square_of_sum = ops.square(ops.sum(fields, axis=1))
    sum_of_squares = ops.sum(ops.square(fields), axis=1)
    return 0.5 * ops.sum(square_of_sum - sum_of_squares, axis=1, keepdims=True)


def mlp(x, hidden_units: list[int], dropout: float, name: str):
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{name}_dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout_{i}")(x)
    return keras.layers.Dense(1, name=f"{name}_logit")(x)


def probability(logits: list, initial_bias: float = 0.0) -> keras.KerasTensor:
    """sigmoid(sum of the logits + a global bias). The bias starts at `initial_bias` — the logit of the
    train positive rate, set by the trainer — so a 4% CTR model does not spend its first epochs
    walking the bias from 0 to -3.2 (and ends calibrated)."""
    bias = keras.layers.Dense(
        1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(initial_bias), name="global_bias"
    )(ops.zeros_like(logits[0]))
    logit = keras.layers.Add(name="logit")([*logits, bias])
    return keras.layers.Activation("sigmoid", name="probability")(logit)
