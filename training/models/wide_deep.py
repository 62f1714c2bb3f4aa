"""Wide&Deep (Cheng et al., 2016), trained jointly: one logit = wide (LR over one-hots and crosses)
+ deep (embeddings of the `deep` categoricals and normalized numerics into a ReLU MLP)."""

from __future__ import annotations

import keras
from keras import ops

from training.feature_layers import FeatureEncoders
from training.layers import embed_fields, mlp, probability
from training.models.lr import wide_logit


def deep_input(encoders: FeatureEncoders, embedding_dim: int, l2: float = 0.0, init_stddev: float | None = None):
    """The MLP's input: each `deep` categorical's embedding (min(embedding_dim, cardinality) wide, every
    field's rows in one table) and each numeric's [value, missing], in the spec's order."""
    features = encoders.names("deep")
    categoricals = {f: encoders.categorical(f) for f in features if encoders.is_categorical(f)}
    dims = {f: min(embedding_dim, c.cardinality) for f, c in categoricals.items()}
    vectors = embed_fields(categoricals, dims, "deep_embedding", l2, init_stddev)
    return ops.concatenate([vectors[f] if f in vectors else encoders.numeric(f) for f in features], axis=-1)


def build(encoders: FeatureEncoders, params, gbdt: dict | None = None) -> keras.Model:
    deep = deep_input(encoders, params.embedding_dim, params.l2, params.embedding_init_stddev)
    deep_logit = mlp(deep, list(params.hidden_units), params.dropout, "deep")
    logits = [wide_logit(encoders, params), deep_logit]
    bias = 0.0 if params.initial_bias is None else params.initial_bias
    return keras.Model(encoders.graph_inputs, probability(logits, bias), name="wide_deep")
