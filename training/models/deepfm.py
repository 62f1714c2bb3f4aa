"""DeepFM (Guo et al., 2017): FM and a deep MLP over the same field embeddings, summed into one logit.

Every `fm` feature is a field. Categorical fields (vocabularies, hash bins, quantile buckets) look up a
k-dim vector; numeric fields (normalize/log1p) scale a learned vector by the value (missing has its own
vector), or with `numeric_fm: false` (DeepCTR's way) skip the FM and enter the MLP as values.
logit = bias + first-order terms + pairwise FM interactions + MLP(concatenated fields [, numeric values]).
"""

from __future__ import annotations

import keras
from keras import ops

from training.feature_layers import FeatureEncoders
from training.layers import embed_fields, embedding_initializer, fm_interaction, linear_logit, mlp, probability


def build(encoders: FeatureEncoders, params, gbdt: dict | None = None) -> keras.Model:
    k, l2 = params.embedding_dim, params.l2
    regularizer = keras.regularizers.L2(l2) if l2 else None
    stddev = params.embedding_init_stddev
    names = encoders.names("fm")
    categoricals = {f: encoders.categorical(f) for f in names if encoders.is_categorical(f)}
    # every categorical field's vectors from one table; list fields: the mean of their values' vectors
    embedded = embed_fields(categoricals, k, "field_embedding", l2, stddev)
    vectors, numerics = [], {}
    for field in names:
        if field in embedded:
            vectors.append(embedded[field])
            continue
        numerics[field] = encoders.numeric(field)
        if params.numeric_fm:
            # initialized like an embedding row: glorot-sized vectors would make the random FM products of
            # the numeric fields swamp the logit before training starts
            vectors.append(
                keras.layers.Dense(
                    k,
                    use_bias=False,
                    kernel_initializer=embedding_initializer(stddev),
                    kernel_regularizer=regularizer,
                    name=f"field_{field}",
                )(numerics[field])
            )
    fields = ops.stack(vectors, axis=1)  # [batch, fields, k], shared by the FM and the deep part
    first_order = linear_logit(categoricals, numerics, "first_order", l2=l2)
    deep_input = ops.reshape(fields, (-1, len(vectors) * k))
    if numerics and not params.numeric_fm:
        deep_input = ops.concatenate([deep_input, *numerics.values()], axis=-1)
    deep = mlp(deep_input, list(params.hidden_units), params.dropout, "deep")
    logits = [first_order, fm_interaction(fields), deep]
    bias = 0.0 if params.initial_bias is None else params.initial_bias
    return keras.Model(encoders.graph_inputs, probability(logits, bias), name="deepfm")
