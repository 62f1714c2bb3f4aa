"""DeepFM (Guo et al., 2017): FM and a deep MLP over the same field embeddings, summed into one logit.

Every `fm` feature is a field. Categorical fields (vocabularies, hash bins, quantile buckets) look up a
k-dim vector; numeric fields (normalize/log1p) scale a learned vector by the value (missing has its own
vector). logit = bias + first-order terms + pairwise FM interactions + MLP(concatenated fields).
"""

from __future__ import annotations

import keras
from keras import ops

from training.feature_layers import FeatureEncoders
from training.layers import embed, embed_fields, fm_interaction, linear_logit, mlp, probability

FIELD_INITIALIZER = keras.initializers.RandomUniform(-0.05, 0.05)  # keras.layers.Embedding's default


def build(encoders: FeatureEncoders, params, gbdt: dict | None = None) -> keras.Model:
    k, l2 = params.embedding_dim, params.l2
    regularizer = keras.regularizers.L2(l2) if l2 else None
    categoricals, numerics = {}, {}
    for field in encoders.names("fm"):
        if encoders.is_categorical(field):
            categoricals[field] = encoders.categorical(field)
        else:
            numerics[field] = encoders.numeric(field)
    vectors = []  # [batch, n, k] blocks of field vectors
    scalars = [c for c in categoricals.values() if c.mask is None]
    if scalars:  # one table for every scalar categorical field
        vectors.append(embed_fields(scalars, k, "field_categorical", l2))
    for field, c in categoricals.items():
        if c.mask is not None:  # list fields: mean of their values' vectors
            vectors.append(ops.expand_dims(embed(c, k, f"field_{field}", l2), 1))
    if numerics:  # field f's vector: value_f * w_f + missing_f * m_f, every field's kernel in one weight
        # initialized like an embedding row: glorot-sized vectors would make the random FM products of
        # the numeric fields swamp the logit before training starts
        vectors.append(
            keras.layers.EinsumDense(
                "bfi,fik->bfk",
                output_shape=(len(numerics), k),
                kernel_initializer=FIELD_INITIALIZER,
                kernel_regularizer=regularizer,
                name="field_numeric",
            )(ops.stack(list(numerics.values()), axis=1))
        )
    fields = ops.concatenate(vectors, axis=1) if len(vectors) > 1 else vectors[0]  # shared by FM and MLP
    n_fields = len(categoricals) + len(numerics)
    first_order = linear_logit(categoricals, numerics, "first_order", l2=l2)
    deep = mlp(ops.reshape(fields, (-1, n_fields * k)), list(params.hidden_units), params.dropout, "deep")
    logits = [first_order, fm_interaction(fields), deep]
    bias = 0.0 if params.initial_bias is None else params.initial_bias
    return keras.Model(encoders.graph_inputs, probability(logits, bias), name="deepfm")
