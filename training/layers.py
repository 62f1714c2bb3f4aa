"""Building blocks the model files share: linear (wide) logits, field embeddings, FM interactions, MLP."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from training.feature_layers import Categorical


@keras.saving.register_keras_serializable(package="recpipe")
class GatherEmbedding(keras.layers.Embedding):
    """keras.layers.Embedding whose lookup is a plain gather. Keras's `take` first maps negative indices
    to positive ones (a `where` per lookup); the indices here come from hashing, vocabularies and
    buckets and are never negative. The same weights, outputs and (IndexedSlices) gradients; DeepFM's
    44 tables traced 0.13 s faster (docs/training-performance.md: "Where DeepFM's start-up goes").
    The ranking models now hold their fields in `FieldEmbeddings` tables; this class stays registered
    so that models saved before load, and as a table of its own per field in tests."""

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
    column; list features sum their active columns; every field's weights in one `FieldEmbeddings`
    table) and dense numeric columns, plus a bias.
    Every weight starts at zero (one-hots, the numeric kernel, the constant), so the logit starts at
    exactly 0: a model starts at its global bias, the train positive rate's logit (GBDT+LR started from
    the trees: at XGBoost's prediction). A Glorot start of the constant alone is up to ±1.7 in logit,
    which undid that start on 4% click-through data (docs/training-performance.md: "The linear part's start")."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    terms = []
    if categoricals:
        weights = FieldEmbeddings(
            [c.cardinality for c in categoricals.values()], 1, zeros=True, l2=l2, name=f"{name}_weights"
        )([c.index for c in categoricals.values()])
        terms += [_masked_sum(w, c.mask) if c.mask is not None else w for w, c in zip(weights, categoricals.values())]
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


@keras.saving.register_keras_serializable(package="recpipe")
class FieldEmbeddings(keras.layers.Layer):
    """The embedding tables of several categorical fields held as one variable.

    Field f owns rows offsets[f] .. offsets[f] + cardinalities[f] - 1 and the first dims[f] columns of
    them; called on the fields' index tensors ([batch] or [batch, length], in the order given) it returns
    each field's vectors, [batch, dims[f]] or [batch, length, dims[f]]. A field's other columns start at
    zero, get no gradient and no L2 penalty and stay zero, so each field is looked up, started (the
    table's initializer, one draw for all, each value independent), penalized (L2 over its rows) and
    trained as a table of its own would be. One variable instead of one per field: the train step's
    trace, grappler's rewrites and the optimizer's updates have one lookup and one update for all the
    fields instead of one per field (issue 17: start-up; docs/training-performance.md: "One table for
    all fields"). The scalar fields are looked up with one gather; the indices are never negative
    (hashing, vocabularies, buckets)."""

    def __init__(
        self,
        cardinalities: list[int],
        dims: int | list[int],
        init_stddev: float | None = None,
        zeros: bool = False,
        l2: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.cardinalities = [int(c) for c in cardinalities]
        self.dims = [int(dims)] * len(self.cardinalities) if isinstance(dims, int) else [int(d) for d in dims]
        if len(self.dims) != len(self.cardinalities):
            raise ValueError(f"{len(self.cardinalities)} fields but {len(self.dims)} dims")
        self.init_stddev, self.zeros, self.l2 = init_stddev, bool(zeros), float(l2)
        self.offsets = [int(o) for o in np.cumsum([0, *self.cardinalities[:-1]])]

    def build(self, input_shape):
        rows, width = sum(self.cardinalities), max(self.dims)
        self.embeddings = self.add_weight(
            shape=(rows, width),
            initializer="zeros" if self.zeros else embedding_initializer(self.init_stddev),
            regularizer=keras.regularizers.L2(self.l2) if self.l2 else None,
            name="embeddings",
        )
        if not self.zeros and min(self.dims) < width:  # the columns no field uses start (and stay) at zero
            value = np.array(self.embeddings.numpy())
            for field, dim in enumerate(self.dims):
                value[self.field_rows(field), dim:] = 0.0
            self.embeddings.assign(value)

    def call(self, indices):
        out = [None] * len(indices)
        scalar = [f for f, index in enumerate(indices) if len(index.shape) == 1]
        if scalar:
            stacked = tf.stack([tf.cast(indices[f], tf.int32) for f in scalar], axis=1)
            offsets = tf.constant([self.offsets[f] for f in scalar], tf.int32)
            vectors = tf.gather(self.embeddings, stacked + offsets)  # [batch, scalar fields, width]
            # unstack, not a slice per field: the gradient is then one stack, not a [batch, fields, width]
            # tensor of zeros per field summed
            for f, field_vectors in zip(scalar, tf.unstack(vectors, axis=1)):
                out[f] = self._columns(field_vectors, f)
        for f, index in enumerate(indices):
            if out[f] is None:  # a list field: [batch, length]
                out[f] = self._columns(tf.gather(self.embeddings, tf.cast(index, tf.int32) + self.offsets[f]), f)
        return out

    def _columns(self, vectors, field: int):
        return vectors if self.dims[field] == vectors.shape[-1] else vectors[..., : self.dims[field]]

    def field_rows(self, field: int) -> slice:
        """The rows of the table that belong to field number `field` (the order of the constructor)."""
        return slice(self.offsets[field], self.offsets[field] + self.cardinalities[field])

    def get_config(self):
        return {
            **super().get_config(),
            "cardinalities": self.cardinalities,
            "dims": self.dims,
            "init_stddev": self.init_stddev,
            "zeros": self.zeros,
            "l2": self.l2,
        }


def embed_fields(
    categoricals: dict[str, Categorical],
    dims: int | dict[str, int],
    name: str,
    l2: float = 0.0,
    init_stddev: float | None = None,
) -> dict[str, keras.KerasTensor]:
    """{field: [batch, dim] embedding} for several categorical fields from one `FieldEmbeddings` table;
    list features take the mean over their unmasked values. The table starts as
    `embedding_initializer(init_stddev)` says. No fields, no table: {}."""
    if not categoricals:
        return {}
    names = list(categoricals)
    sizes = [dims if isinstance(dims, int) else dims[n] for n in names]
    looked_up = FieldEmbeddings(
        [categoricals[n].cardinality for n in names], sizes, init_stddev=init_stddev, l2=l2, name=name
    )([categoricals[n].index for n in names])
    out = {}
    for field, vectors in zip(names, looked_up):
        c = categoricals[field]
        if c.mask is None:
            out[field] = vectors
            continue
        count = ops.maximum(ops.sum(ops.cast(c.mask, "float32"), axis=1, keepdims=True), 1.0)
        out[field] = _masked_sum(vectors, c.mask) / count
    return out


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
