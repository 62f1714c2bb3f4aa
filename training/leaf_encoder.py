"""XGBoost trees inside a TensorFlow graph: raw features -> compact leaf indices (GBDT+LR).

`GBDTLeafEncoder` evaluates the trees described by `features.gbdt_trees.TreeTables` with gathers over
the padded node tables, one step per tree level, for all trees at once. Its output equals
`leaf_indices_from_pred_leaf(booster.predict(DMatrix(X), pred_leaf=True), tables)` bit for bit.

Comparisons are done on integers, not floats: TensorFlow's CPU kernels run with denormals flushed to
zero, so a float `x < 0.0` is False for x = -1e-45 where XGBoost says True. Each float32 is mapped to
an int32 key that orders exactly like IEEE `<` (-0.0 and +0.0 share key 0), and NaN (missing) is
detected from the bits as well.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from features.gbdt_trees import TreeTables, from_json, to_json

_ABS_MASK = 0x7FFFFFFF
_INF_BITS = 0x7F800000


def _order_key_numpy(values: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(values, np.float32).view(np.int32)
    magnitude = bits & _ABS_MASK
    return np.where(bits < 0, -magnitude, magnitude).astype(np.int32)


@keras.saving.register_keras_serializable(package="recpipe")
class GBDTLeafEncoder(keras.layers.Layer):
    """float32 features [batch, n_features] (NaN = missing) -> int32 leaf indices [batch, n_trees].

    `tables` is a `TreeTables` or its `to_json` dict; the tables become graph constants (no weights),
    and the config stores the JSON dict, so the layer survives `.keras` saving and `model.export()`.
    """

    def __init__(self, tables: TreeTables | dict, **kwargs: Any):
        kwargs["autocast"] = False  # never cast the features to a (mixed-precision) compute dtype
        super().__init__(**kwargs)
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError("GBDTLeafEncoder needs the TensorFlow Keras backend")
        self.tables = tables if isinstance(tables, TreeTables) else from_json(tables)
        t = self.tables
        # flat [n_trees * max_nodes] tables; node n of tree i lives at i * max_nodes + n
        self._tree_base = np.arange(t.n_trees, dtype=np.int32) * np.int32(t.max_nodes)
        self._feature = np.maximum(t.split_feature, 0).astype(np.int32).ravel()  # leaves: any valid column
        self._threshold_key = _order_key_numpy(t.threshold).ravel()
        self._left = t.left.astype(np.int32).ravel()
        self._right = t.right.astype(np.int32).ravel()
        self._missing = t.missing.astype(np.int32).ravel()
        self._leaf_index = t.leaf_index.astype(np.int32).ravel()

    def call(self, features):
        x = tf.convert_to_tensor(features)
        if x.dtype != tf.float32:
            x = tf.cast(x, tf.float32)  # feed float32: XGBoost also rounds float64 input to float32
        bits = tf.bitcast(x, tf.int32)
        magnitude = tf.bitwise.bitwise_and(bits, _ABS_MASK)
        is_nan = magnitude > _INF_BITS
        key = tf.where(bits < 0, -magnitude, magnitude)

        tree_base = tf.constant(self._tree_base)  # [n_trees]
        feature = tf.constant(self._feature)
        threshold_key = tf.constant(self._threshold_key)
        left, right, missing = tf.constant(self._left), tf.constant(self._right), tf.constant(self._missing)

        node = tf.zeros(tf.stack([tf.shape(x)[0], self.tables.n_trees]), tf.int32)  # everyone at the root
        for _ in range(self.tables.max_depth):  # leaves point to themselves: extra steps are no-ops
            at = node + tree_base  # [batch, n_trees] flat node positions
            column = tf.gather(feature, at)
            value_key = tf.gather(key, column, batch_dims=1)
            value_nan = tf.gather(is_nan, column, batch_dims=1)
            child = tf.where(value_key < tf.gather(threshold_key, at), tf.gather(left, at), tf.gather(right, at))
            node = tf.where(value_nan, tf.gather(missing, at), child)
        return tf.gather(tf.constant(self._leaf_index), node + tree_base)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.tables.n_trees)

    def compute_output_spec(self, features):
        return keras.KerasTensor((features.shape[0], self.tables.n_trees), dtype="int32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("autocast", None)
        config["tables"] = to_json(self.tables)
        return config


def leaf_offsets(leaves_per_tree: list[int]) -> np.ndarray:
    """Start of each tree's block in the concatenated leaf space (int32 [n_trees])."""
    return np.concatenate([[0], np.cumsum(leaves_per_tree, dtype=np.int64)[:-1]]).astype(np.int32)


def leaf_one_hot(indices, leaves_per_tree: list[int]):
    """Compact leaf indices [batch, n_trees] -> float32 multi-hot [batch, sum(leaves_per_tree)].

    Tree t's leaf j sets column offset_t + j: exactly one 1 per tree, the input of the LR half.
    """
    flat = tf.convert_to_tensor(indices, tf.int32) + tf.constant(leaf_offsets(leaves_per_tree))
    total = int(sum(leaves_per_tree))
    return tf.math.bincount(flat, minlength=total, maxlength=total, dtype=tf.float32, axis=-1)
