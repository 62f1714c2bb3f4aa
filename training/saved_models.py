"""Loading a trained `model.keras` in any process.

A saved model names recpipe's own classes: `recpipe>FusedAdam` (the optimizer it was compiled with,
training/fused_adam.py), `recpipe>FieldEmbeddings` (its embedding tables, training/layers.py;
`recpipe>GatherEmbedding` in models saved before the fields shared one table) and, for GBDT+LR,
`recpipe>LeafEncoder`. Keras finds them only once their modules are imported, which a fresh
`recpipe evaluate` or `recpipe export` process would not otherwise have done. Every job loads a trained
model through `load_trained`.
"""

from __future__ import annotations

from pathlib import Path

import keras

import training.fused_adam  # noqa: F401  (registers recpipe>FusedAdam)
import training.layers  # noqa: F401  (registers recpipe>FieldEmbeddings, recpipe>GatherEmbedding)
import training.leaf_encoder  # noqa: F401  (registers recpipe>LeafEncoder)


def load_trained(path: str | Path) -> keras.Model:
    return keras.saving.load_model(path)
