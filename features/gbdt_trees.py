"""XGBoost trees as flat, padded tables: the GBDT half of GBDT+LR (He et al., 2014).

`booster.predict(dmatrix, pred_leaf=True)` returns raw *node ids*, which are sparse and differ per
tree. The tables below give every tree a compact leaf vocabulary 0..L_t-1 (leaf node ids sorted
ascending), built from the model itself so that leaves no training row reached still get an index,
and hold enough of the tree structure to evaluate the trees elsewhere (numpy here, TensorFlow in
`training.leaf_encoder`) with exactly XGBoost's routing:

* go left when ``float32(x) < float32(split_condition)``, else right;
* go to the default child (``default_left``) when x is missing (NaN).

Feed dense float32 features with NaN for missing. XGBoost turns float64 input into float32 before
comparing; a model trained from scipy sparse input treats absent entries (zeros) as missing, which
dense input cannot reproduce.

Only numerical splits are supported (categorical splits and vector leaves raise). Several trees per
boosting round (multi-class, ``num_parallel_tree > 1``) are fine: trees are kept in model order,
which is the column order of ``pred_leaf``. Every tree of the booster is used, as
``Booster.predict`` does; slice the booster (``booster[: best_iteration + 1]``) to drop the trees
after an early-stopping point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

FORMAT = "recpipe.gbdt_trees/v1"

_ARRAY_FIELDS = ("split_feature", "threshold", "left", "right", "missing", "is_leaf", "leaf_index")


@dataclass
class TreeTables:
    """Per-tree node arrays of shape [n_trees, max_nodes], padded with self-pointing dummy nodes."""

    split_feature: np.ndarray  # int32, -1 for leaves (and padding)
    threshold: np.ndarray  # float32, 0 for leaves (and padding)
    left: np.ndarray  # int32 child node ids; leaves (and padding) point to themselves
    right: np.ndarray  # int32
    missing: np.ndarray  # int32, the default child taken when the feature is NaN
    is_leaf: np.ndarray  # bool
    leaf_index: np.ndarray  # int32 compact leaf index 0..L_t-1, -1 for internal nodes (and padding)
    n_trees: int
    max_depth: int  # deepest leaf (root = depth 0): number of steps needed to reach any leaf
    n_features: int
    leaves_per_tree: list[int]
    feature_names: list[str]

    @property
    def max_nodes(self) -> int:
        return int(self.split_feature.shape[1])


# ---------------------------------------------------------------------------------------------
# Building from a booster
# ---------------------------------------------------------------------------------------------


def _float32_from_decimal(texts: list[Any]) -> np.ndarray:
    """Correctly rounded decimal text -> float32.

    XGBoost writes each float32 as its shortest round-trip decimal, so correct rounding recovers the
    float32 bits exactly. Going through float64 (what `float()` does) is exact except when the float64
    lands exactly halfway between two float32 values, where a second round-half-even can pick the
    wrong one; those (practically never occurring) cases are settled with exact rational arithmetic.
    """
    texts = [t if isinstance(t, str) else repr(t) for t in texts]
    as64 = np.array([float(t) for t in texts], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = as64.astype(np.float32)
        towards = np.where(as64 > as32, np.float32(np.inf), np.float32(-np.inf)).astype(np.float32)
        neighbour = np.nextafter(as32, towards)
        tie = (as64 != as32) & (np.abs(as64 - as32) == np.abs(neighbour.astype(np.float64) - as64))
    for i in np.flatnonzero(tie):
        exact = Fraction(texts[i])
        if abs(exact - Fraction(float(neighbour[i]))) < abs(exact - Fraction(float(as32[i]))):
            as32[i] = neighbour[i]
    return as32


def _tree_list(model: dict) -> list[dict]:
    learner = model["learner"]
    booster = learner["gradient_booster"]
    name = booster.get("name")
    if name == "dart":
        booster = booster["gbtree"]
    elif name != "gbtree":
        raise ValueError(f"only tree boosters (gbtree, dart) have leaves, got booster={name!r}")
    return booster["model"]["trees"]


def tree_tables_from_booster(booster: Any) -> TreeTables:
    """Tables for every tree of an `xgboost.Booster` (or an sklearn-API model with `get_booster()`)."""
    if hasattr(booster, "get_booster"):
        booster = booster.get_booster()
    # parse_float=str keeps the exact decimal text of every float (see _float32_from_decimal)
    model = json.loads(bytes(booster.save_raw("json")), parse_float=str)
    learner = model["learner"]
    n_features = int(learner["learner_model_param"]["num_feature"])
    feature_names = list(learner.get("feature_names") or []) or [f"f{i}" for i in range(n_features)]
    if len(feature_names) != n_features:
        raise ValueError(f"{len(feature_names)} feature names for {n_features} features")

    parsed = [_parse_tree(t, i, n_features) for i, t in enumerate(_tree_list(model))]
    n_trees = len(parsed)
    width = max((len(p["split_feature"]) for p in parsed), default=1)
    self_ids = np.broadcast_to(np.arange(width, dtype=np.int32), (n_trees, width))
    tables = TreeTables(
        split_feature=np.full((n_trees, width), -1, np.int32),
        threshold=np.zeros((n_trees, width), np.float32),
        left=self_ids.copy(),
        right=self_ids.copy(),
        missing=self_ids.copy(),
        is_leaf=np.zeros((n_trees, width), bool),
        leaf_index=np.full((n_trees, width), -1, np.int32),
        n_trees=n_trees,
        max_depth=max((p["depth"] for p in parsed), default=0),
        n_features=n_features,
        leaves_per_tree=[p["n_leaves"] for p in parsed],
        feature_names=feature_names,
    )
    for t, p in enumerate(parsed):
        n = len(p["split_feature"])
        for field in _ARRAY_FIELDS:
            getattr(tables, field)[t, :n] = p[field]
    return tables


def leaf_values_from_booster(booster: Any) -> tuple[list[list[float]], float]:
    """Each tree's leaf values in compact leaf order (ascending leaf node id, as `leaf_index`) and the
    base margin, so that margin = base_margin + sum of the reached leaves' values. GBDT+LR starts its
    leaf weights from these: before any LR step it predicts exactly what the booster predicts."""
    if hasattr(booster, "get_booster"):
        booster = booster.get_booster()
    model = json.loads(bytes(booster.save_raw("json")))
    values: list[list[float]] = []
    for tree in _tree_list(model):
        left, conditions = np.asarray(tree["left_children"]), np.asarray(tree["split_conditions"], np.float64)
        tables = _parse_tree(tree, len(values), int(model["learner"]["learner_model_param"]["num_feature"]))
        values.append(conditions[np.flatnonzero(tables["is_leaf"])].tolist())  # a leaf's split_condition is its value
        assert len(values[-1]) == tables["n_leaves"] and (left[tables["is_leaf"]] == -1).all()
    base_score = float(str(model["learner"]["learner_model_param"]["base_score"]).strip("[]"))
    objective = model["learner"]["objective"]["name"]
    base_margin = (
        float(np.log(base_score / (1 - base_score)))
        if objective.startswith(("binary:logistic", "reg:logistic"))
        else base_score
    )
    return values, base_margin


def _parse_tree(tree: dict, number: int, n_features: int) -> dict:
    param = tree["tree_param"]
    if int(param.get("size_leaf_vector", "1")) > 1:
        raise NotImplementedError(
            f"tree {number}: vector leaves (multi_strategy='multi_output_tree') are not supported"
        )
    if any(int(s) != 0 for s in tree.get("split_type", [])):
        raise NotImplementedError(f"tree {number}: categorical splits are not supported; train with numeric codes")

    left = np.asarray(tree["left_children"], np.int64)
    right = np.asarray(tree["right_children"], np.int64)
    n = len(left)
    feature = np.asarray(tree["split_indices"], np.int64)
    default_left = np.asarray(tree["default_left"], np.int64).astype(bool)
    if not (len(right) == len(feature) == len(default_left) == len(tree["split_conditions"]) == n) or n == 0:
        raise ValueError(f"tree {number}: inconsistent node arrays")

    # walk from the root: depth of every reachable node (deleted/unused nodes stay unreachable)
    depth = np.full(n, -1, np.int64)
    depth[0] = 0
    stack = [0]
    while stack:
        node = stack.pop()
        if left[node] == -1:
            continue
        for child in (left[node], right[node]):
            if not 0 < child < n or depth[child] != -1:
                raise ValueError(f"tree {number}: node {node} has invalid child {child}")
            depth[child] = depth[node] + 1
            stack.append(int(child))
    reachable = depth >= 0
    is_leaf = reachable & (left == -1)
    internal = reachable & (left != -1)
    if np.any((feature[internal] < 0) | (feature[internal] >= n_features)):
        raise ValueError(f"tree {number}: split feature out of range 0..{n_features - 1}")

    ids = np.arange(n)
    leaf_ids = np.flatnonzero(is_leaf)  # ascending node ids -> 0..L-1
    leaf_index = np.full(n, -1, np.int64)
    leaf_index[leaf_ids] = np.arange(len(leaf_ids))
    threshold = np.zeros(n, np.float32)
    threshold[internal] = _float32_from_decimal([tree["split_conditions"][i] for i in np.flatnonzero(internal)])
    return {
        "split_feature": np.where(internal, feature, -1),
        "threshold": threshold,
        "left": np.where(internal, left, ids),
        "right": np.where(internal, right, ids),
        "missing": np.where(internal, np.where(default_left, left, right), ids),
        "is_leaf": is_leaf,
        "leaf_index": leaf_index,
        "depth": int(depth.max()),
        "n_leaves": len(leaf_ids),
    }


# ---------------------------------------------------------------------------------------------
# JSON artifact
# ---------------------------------------------------------------------------------------------


def to_json(tables: TreeTables) -> dict:
    """JSON-serializable dict (ints, bools, strings only); thresholds as float32 bit patterns (uint32)."""
    return {
        "format": FORMAT,
        "n_trees": int(tables.n_trees),
        "max_depth": int(tables.max_depth),
        "n_features": int(tables.n_features),
        "leaves_per_tree": [int(v) for v in tables.leaves_per_tree],
        "feature_names": [str(v) for v in tables.feature_names],
        "split_feature": tables.split_feature.tolist(),
        "threshold_bits": np.ascontiguousarray(tables.threshold, np.float32).view(np.uint32).tolist(),
        "left": tables.left.tolist(),
        "right": tables.right.tolist(),
        "missing": tables.missing.tolist(),
        "is_leaf": tables.is_leaf.tolist(),
        "leaf_index": tables.leaf_index.tolist(),
    }


def from_json(data: dict) -> TreeTables:
    if data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} artifact (format={data.get('format')!r})")
    n_trees = int(data["n_trees"])

    def array(key: str, dtype) -> np.ndarray:
        values = np.array(data[key], dtype=dtype)
        return values if n_trees else values.reshape(0, 1)

    tables = TreeTables(
        split_feature=array("split_feature", np.int32),
        threshold=array("threshold_bits", np.uint32).view(np.float32),
        left=array("left", np.int32),
        right=array("right", np.int32),
        missing=array("missing", np.int32),
        is_leaf=array("is_leaf", bool),
        leaf_index=array("leaf_index", np.int32),
        n_trees=n_trees,
        max_depth=int(data["max_depth"]),
        n_features=int(data["n_features"]),
        leaves_per_tree=[int(v) for v in data["leaves_per_tree"]],
        feature_names=[str(v) for v in data["feature_names"]],
    )
    shapes = {getattr(tables, f).shape for f in _ARRAY_FIELDS}
    if len(shapes) != 1 or next(iter(shapes))[0] != n_trees or len(tables.leaves_per_tree) != n_trees:
        raise ValueError(f"inconsistent table shapes {shapes} for {n_trees} trees")
    return tables


# ---------------------------------------------------------------------------------------------
# Leaf indices
# ---------------------------------------------------------------------------------------------


def leaf_indices_from_pred_leaf(pred_leaf: np.ndarray, tables: TreeTables) -> np.ndarray:
    """XGBoost ``predict(..., pred_leaf=True)`` node ids [n, n_trees] -> compact leaf indices (int32)."""
    nodes = np.asarray(pred_leaf)
    if nodes.ndim == 1 and tables.n_trees == 1:  # xgboost drops the tree axis of a one-tree model
        nodes = nodes.reshape(-1, 1)
    if nodes.ndim != 2 or nodes.shape[1] != tables.n_trees:
        raise ValueError(f"expected pred_leaf of shape [n, {tables.n_trees}], got {nodes.shape}")
    node_ids = nodes.astype(np.int64)
    if np.any(node_ids != nodes) or np.any((node_ids < 0) | (node_ids >= tables.max_nodes)):
        raise ValueError("pred_leaf holds values that are not node ids of these trees")
    out = tables.leaf_index[np.arange(tables.n_trees), node_ids]
    if np.any(out < 0):
        raise ValueError("pred_leaf holds node ids that are not leaves: tables and booster do not match")
    return out.astype(np.int32)


def leaf_indices_numpy(tables: TreeTables, X: np.ndarray) -> np.ndarray:
    """Reference traversal: compact leaf indices [n, n_trees] for raw features X [n, n_features]."""
    X = np.asarray(X, dtype=np.float32)  # XGBoost compares in float32 too
    if X.ndim != 2 or X.shape[1] != tables.n_features:
        raise ValueError(f"expected X of shape [n, {tables.n_features}], got {X.shape}")
    trees = np.arange(tables.n_trees)
    node = np.zeros((X.shape[0], tables.n_trees), np.int64)
    for _ in range(tables.max_depth):
        feature = np.maximum(tables.split_feature[trees, node], 0)
        value = np.take_along_axis(X, feature, axis=1)
        go_left = value < tables.threshold[trees, node]
        node = np.where(
            np.isnan(value),
            tables.missing[trees, node],
            np.where(go_left, tables.left[trees, node], tables.right[trees, node]),
        )
    return tables.leaf_index[trees, node].astype(np.int32)
