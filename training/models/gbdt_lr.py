"""GBDT+LR (He et al., 2014): logistic regression over the one-hot leaves of the XGBoost trees.

The trees run inside the graph (training.leaf_encoder.GBDTLeafEncoder) on the raw features, so the
model needs no precomputed leaves; `raw_categoricals: true` adds the wide categoricals to the LR, and
`wide: true` (default) the whole wide part of the `lr` model (categoricals, normalized numerics, `crosses`).
With `init_from_gbdt: true` (default false) the leaf weights start at the trees' leaf values and the bias
at the booster's base margin: before the first step the model predicts what XGBoost predicts, and the
LR re-weights the leaves from there instead of from zero. Defaults: jobs/settings.py GBDTLRParams.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from training.feature_layers import FeatureEncoders
from training.layers import linear_logit, probability
from training.leaf_encoder import GBDTLeafEncoder, leaf_offsets
from training.models.lr import wide_logit


def build(encoders: FeatureEncoders, params, gbdt: dict | None = None) -> keras.Model:
    if gbdt is None:
        raise ValueError("gbdt_lr needs the GBDT artifacts (trees.json, features.json): run recpipe gbdt first")
    trees = gbdt["trees"]
    leaves = encoders.encoded(
        "gbdt_leaves", GBDTLeafEncoder(trees, name="gbdt_leaves")(encoders.gbdt_matrix(gbdt["features"]["inputs"]))
    )
    offsets = ops.convert_to_tensor(leaf_offsets(trees["leaves_per_tree"]))
    l2 = params.l2
    total = int(sum(trees["leaves_per_tree"]))
    start, margin = "zeros", 0.0
    if params.init_from_gbdt:
        start = keras.initializers.Constant(np.concatenate(gbdt["leaf_values"]).reshape(total, 1))
        margin = gbdt["base_margin"]
    leaf_l2 = params.leaf_l2  # the trees were fitted on the same rows: leaves overfit first
    leaf_weights = keras.layers.Embedding(
        total,
        1,
        embeddings_initializer=start,
        name="leaf_weights",
        embeddings_regularizer=keras.regularizers.L2(leaf_l2) if leaf_l2 else None,
    )(leaves + offsets)
    logits = [ops.sum(leaf_weights, axis=1)]  # one active leaf per tree: the LR over the one-hot leaf vector
    if params.wide:
        logits.append(wide_logit(encoders, params, "raw"))
    elif params.raw_categoricals:
        categoricals = {f: encoders.categorical(f) for f in encoders.names("wide") if encoders.is_categorical(f)}
        logits.append(linear_logit(categoricals, {}, "raw", l2=l2))
    # started from the trees, the global bias starts at the booster's base margin instead of the train rate
    initial_bias = margin if params.init_from_gbdt else (0.0 if params.initial_bias is None else params.initial_bias)
    return keras.Model(encoders.graph_inputs, probability(logits, initial_bias), name="gbdt_lr")
