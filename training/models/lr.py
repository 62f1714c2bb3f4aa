"""LR: logistic regression over the wide features (one-hots, bucketized numerics, crosses).

FTRL with L1 (`optimizer: ftrl`, `l1`) keeps the weights sparse, as for the wide part of Wide&Deep.
"""

from __future__ import annotations

import keras

from training.feature_layers import FeatureEncoders
from training.layers import linear_logit, probability


def wide_logit(encoders: FeatureEncoders, params, name: str = "wide"):
    """Every `wide` feature (categorical index, or the normalized value for normalize/log1p features,
    and with `numeric_buckets` also their quantile bucket) plus the spec's crosses: all (`crosses:
    true`), none (`false`, the default) or a list of cross names. `params`: the model's settings
    (jobs/settings.py). The logit starts at 0 (training.layers.linear_logit)."""
    categoricals, numerics = {}, {}
    for feature in encoders.names("wide"):
        if encoders.is_categorical(feature):
            categoricals[feature] = encoders.categorical(feature)
        else:
            numerics[feature] = encoders.numeric(feature)
            if params.numeric_buckets:
                categoricals[f"{feature}_bucket"] = encoders.bucketized(feature)
    chosen = params.crosses
    crosses = {c.name: c for c in encoders.spec.crosses}
    names = list(crosses) if chosen is True else list(chosen or [])
    unknown = [n for n in names if n not in crosses]
    if unknown:
        raise ValueError(f"unknown cross {unknown[0]}: the spec has {', '.join(crosses)}")
    for cross in names:  # not `name`: that is the linear part's (its layers' prefix)
        categoricals[cross] = encoders.cross(crosses[cross])
    return linear_logit(categoricals, numerics, name, l2=params.l2)


def build(encoders: FeatureEncoders, params, gbdt: dict | None = None) -> keras.Model:
    bias = 0.0 if params.initial_bias is None else params.initial_bias
    return keras.Model(encoders.graph_inputs, probability([wide_logit(encoders, params)], bias), name="lr")
