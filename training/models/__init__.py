"""The four ranking models, one file each; `build_model(name, ...)` picks one by its config name.

`build_split` builds the same model as a preprocessing model (raw features -> encoded views) and a core
(encoded views -> probability), for training on encoded batches, plus the raw-feature model wrapping the
two (what is saved and exported; it shares the core's weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from training.models import deepfm, gbdt_lr, lr, wide_deep

# keyed by the registry's names (jobs/settings.py ModelName; tests/test_config.py checks they agree)
BUILDERS = {"lr": lr.build, "gbdt_lr": gbdt_lr.build, "wide_deep": wide_deep.build, "deepfm": deepfm.build}


def build_model(name: str, encoders, params, gbdt: dict | None = None):
    """params: the model's settings (jobs/settings.py models.<name>: LRParams, GBDTLRParams, ...)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model '{name}': choose one of {', '.join(BUILDERS)}")
    return BUILDERS[name](encoders, params, gbdt)


@dataclass
class SplitModel:
    preprocessing: keras.Model  # raw named features -> {view key: encoded tensor}; no trainable weights
    core: keras.Model  # {view key: encoded tensor} -> probability [batch, 1]; every trainable weight
    full: keras.Model  # raw named features -> probability: core(preprocessing(features)), same weights


def build_split(name: str, spec, transforms: dict, params, gbdt: dict | None = None) -> SplitModel:
    from training.feature_layers import FeatureEncoders

    encoders = FeatureEncoders(spec, transforms, split=True)
    core = build_model(name, encoders, params, gbdt)
    preprocessing = encoders.preprocessing_model()
    # the preprocessing layers sit in `full` itself (get_layer finds them), the core as one nested layer
    full = keras.Model(encoders.inputs, core(dict(encoders.encoded_outputs)), name=core.name)
    return SplitModel(preprocessing, core, full)
