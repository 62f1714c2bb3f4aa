"""XGBoost leaf indices: model-built leaf vocabularies, numpy reference and the TF/Keras encoder agree
with `booster.predict(pred_leaf=True)` bit for bit (NaNs, values at thresholds, unseen codes, denormals)."""

from __future__ import annotations

import json
from decimal import Decimal, localcontext

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

try:  # share the 2 cores politely; fails harmlessly if TF's runtime is already up
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

from features.gbdt_trees import (  # noqa: E402
    TreeTables,
    _float32_from_decimal,
    from_json,
    leaf_indices_from_pred_leaf,
    leaf_indices_numpy,
    to_json,
    tree_tables_from_booster,
)
from training.leaf_encoder import GBDTLeafEncoder, leaf_offsets, leaf_one_hot  # noqa: E402

N_FEATURES = 12
CATEGORICAL = {6: 10, 7: 5}  # column -> number of integer codes seen in training
SIGN = 8  # values in {-1, 0, 1}: yields split_condition 0.0, whose neighbours are denormals
PARAMS = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 5, "eta": 0.3, "seed": 0, "nthread": 1}


def _features(rng: np.random.Generator, n: int, unseen_codes: bool = False) -> np.ndarray:
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 9] = rng.lognormal(size=n)
    X[:, 10] = rng.uniform(-1e3, 1e3, size=n)
    for col, k in CATEGORICAL.items():
        X[:, col] = rng.integers(0, k, size=n)
        if unseen_codes:  # codes never seen in training, above and below the training range
            unseen = rng.random(n) < 0.3
            X[unseen, col] = rng.choice([k, k + 7, 50, 1000, -1, -3], size=unseen.sum())
    X[:, SIGN] = rng.integers(-1, 2, size=n)
    X[rng.random(X.shape) < 0.1] = np.nan
    return X.astype(np.float32)


def _labels(rng: np.random.Generator, X: np.ndarray) -> np.ndarray:
    z = np.nan_to_num(X, nan=0.0)
    logit = (
        z[:, 0]
        - 0.8 * z[:, 1] * z[:, 2]
        + 0.7 * (z[:, 6] % 3 == 1)
        - 0.5 * z[:, 7]
        + z[:, SIGN]
        + 0.3 * np.log1p(z[:, 9])
    )
    logit += 0.6 * np.isnan(X[:, 3])
    return (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(np.float32)


def _path_rows(tables: TreeTables, base: np.ndarray, trees) -> np.ndarray:
    """For every internal node: rows that follow the path to it, with its split feature set to the
    threshold exactly, one float32 ulp below and above, and NaN."""
    rows = []
    for t in trees:
        parent = {}
        for node in np.flatnonzero(~tables.is_leaf[t] & (tables.split_feature[t] >= 0)):
            parent[int(tables.left[t, node])] = (int(node), True)
            parent[int(tables.right[t, node])] = (int(node), False)
        for node in np.flatnonzero(tables.split_feature[t] >= 0):
            lo, hi, n = {}, {}, int(node)
            while n in parent:  # constraints x >= lo (right branches) and x < hi (left branches)
                n, went_left = parent[n]
                f, thr = int(tables.split_feature[t, n]), tables.threshold[t, n]
                if went_left:
                    hi[f] = min(hi.get(f, np.float32(np.inf)), thr)
                else:
                    lo[f] = max(lo.get(f, np.float32(-np.inf)), thr)
            row = base[len(rows) % len(base)].copy()
            for f in set(lo) | set(hi):
                row[f] = lo[f] if f in lo else np.nextafter(hi[f], np.float32(-np.inf))
            f, thr = int(tables.split_feature[t, node]), tables.threshold[t, node]
            for value in (thr, np.nextafter(thr, np.float32(-np.inf)), np.nextafter(thr, np.float32(np.inf)), np.nan):
                rows.append(row.copy())
                rows[-1][f] = value
    return np.asarray(rows, np.float32)


def _visits(tables: TreeTables, t: int, row: np.ndarray, target: int) -> bool:
    node = 0
    while True:
        if node == target:
            return True
        if tables.is_leaf[t, node]:
            return False
        x = row[tables.split_feature[t, node]]
        node = (
            tables.missing[t, node]
            if np.isnan(x)
            else (tables.left if x < tables.threshold[t, node] else tables.right)[t, node]
        )


def _xgb_leaves(booster, tables: TreeTables, X: np.ndarray) -> np.ndarray:
    return leaf_indices_from_pred_leaf(booster.predict(xgb.DMatrix(X), pred_leaf=True), tables)


def _assert_tables_equal(a: TreeTables, b: TreeTables) -> None:
    for field in ("split_feature", "left", "right", "missing", "is_leaf", "leaf_index"):
        got, want = getattr(a, field), getattr(b, field)
        assert got.dtype == want.dtype and np.array_equal(got, want), field
    assert a.threshold.dtype == b.threshold.dtype == np.float32
    assert np.array_equal(a.threshold.view(np.uint32), b.threshold.view(np.uint32))
    for field in ("n_trees", "max_depth", "n_features", "leaves_per_tree", "feature_names"):
        assert getattr(a, field) == getattr(b, field), field


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(42)
    X = _features(rng, 3000)
    booster = xgb.train(PARAMS, xgb.DMatrix(X, label=_labels(rng, X)), num_boost_round=40)
    tables = tree_tables_from_booster(booster)
    X_random = _features(rng, 1500, unseen_codes=True)
    X_path = _path_rows(tables, X_random, range(tables.n_trees))
    extremes = np.array(
        [
            [0.0] * N_FEATURES,
            [-0.0] * N_FEATURES,
            [np.nan] * N_FEATURES,
            [1e30] * N_FEATURES,
            [-1e30] * N_FEATURES,
            [1e-45] * N_FEATURES,
            [-1e-45] * N_FEATURES,
        ],
        np.float32,
    )
    X_test = np.concatenate([X_random, X_path, extremes])
    return booster, tables, X_test, X_path


def test_tables_shape_and_vocab_from_model(trained):
    booster, tables, _, _ = trained
    assert tables.n_trees == 40 and tables.n_features == N_FEATURES
    assert tables.feature_names == [f"f{i}" for i in range(N_FEATURES)]
    assert 1 <= tables.max_depth <= 5
    assert tables.split_feature.dtype == np.int32 and tables.threshold.dtype == np.float32
    df = booster.trees_to_dataframe()
    leaves = df[df["Feature"] == "Leaf"]
    assert tables.leaves_per_tree == leaves.groupby("Tree").size().reindex(range(40)).tolist()
    for t, group in leaves.groupby("Tree"):  # leaf node ids sorted ascending -> 0..L-1
        assert tables.leaf_index[t, sorted(group["Node"])].tolist() == list(range(len(group)))
        assert np.sum(tables.leaf_index[t] >= 0) == len(group)
    # leaves nobody in a small data set reaches still have their index (vocab is the model's, not the data's)
    few = leaf_indices_numpy(tables, _features(np.random.default_rng(7), 5))
    reached = sum(len(np.unique(few[:, t])) for t in range(tables.n_trees))
    assert reached < sum(tables.leaves_per_tree)
    assert np.all((few >= 0) & (few < np.array(tables.leaves_per_tree)))


def test_numpy_reference_matches_pred_leaf(trained):
    booster, tables, X_test, X_path = trained
    want = _xgb_leaves(booster, tables, X_test)
    assert want.dtype == np.int32 and want.shape == (len(X_test), 40)
    assert np.array_equal(leaf_indices_numpy(tables, X_test), want)
    # the threshold rows really sit on the splits (so the `<` and NaN cases are exercised)
    assert 0.0 in set(tables.threshold[tables.split_feature == SIGN].tolist())
    # (a few miss: a split whose threshold lies outside the range allowed by its ancestors only separates NaNs)
    targets = [(t, int(n)) for t in range(tables.n_trees) for n in np.flatnonzero(tables.split_feature[t] >= 0)]
    assert len(X_path) == 4 * len(targets)
    hits = [_visits(tables, t, X_path[4 * i], n) for i, (t, n) in enumerate(targets)]
    assert np.mean(hits) > 0.95


def test_encoder_matches_pred_leaf(trained):
    booster, tables, X_test, _ = trained
    want = _xgb_leaves(booster, tables, X_test)
    got = GBDTLeafEncoder(tables)(X_test)
    assert got.dtype == tf.int32
    assert np.array_equal(got.numpy(), want)
    assert np.array_equal(tf.function(GBDTLeafEncoder(tables))(tf.constant(X_test)).numpy(), want)


def test_denormal_thresholds(trained):
    """TF flushes denormals to zero in float ops; the encoder compares integer keys instead."""
    booster, tables, X_test, _ = trained
    model = json.loads(bytes(booster.save_raw("json")))
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    for t, value in enumerate([1e-40, -1e-44, 1.4e-45, 0.0, -3e-39]):
        trees[t]["split_conditions"][0] = value
    edited = xgb.Booster()
    edited.load_model(bytearray(json.dumps(model).encode()))
    edited_tables = tree_tables_from_booster(edited)
    assert edited_tables.threshold[1, 0] == np.float32(-1e-44) and edited_tables.threshold[1, 0] != 0
    X = np.concatenate([X_test[:300], _path_rows(edited_tables, X_test, range(5))])
    want = _xgb_leaves(edited, edited_tables, X)
    assert np.array_equal(leaf_indices_numpy(edited_tables, X), want)
    assert np.array_equal(GBDTLeafEncoder(edited_tables)(X).numpy(), want)


def test_json_round_trip(trained):
    _, tables, X_test, _ = trained
    data = json.loads(json.dumps(to_json(tables)))
    restored = from_json(data)
    _assert_tables_equal(restored, tables)
    assert np.array_equal(GBDTLeafEncoder(data)(X_test).numpy(), GBDTLeafEncoder(tables)(X_test).numpy())
    with pytest.raises(ValueError):
        from_json({**data, "format": "something else"})


def test_float32_parsing_is_correctly_rounded():
    rng = np.random.default_rng(0)
    bits = np.concatenate(
        [
            rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32),
            np.array([0, 1, 2, 0x007FFFFF, 0x00800000, 0x3F800000, 0x3F800001, 0x7F7FFFFF], np.uint32),
        ]
    )
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    texts = [np.format_float_scientific(v, unique=True) for v in values]  # shortest round-trip, like XGBoost
    assert np.array_equal(_float32_from_decimal(texts).view(np.uint32), values.view(np.uint32))
    # a decimal just above the midpoint of 1.0 and its successor: float64 rounds it onto the midpoint
    # and float32(float64) then ties to even (1.0); correct rounding gives the successor
    with localcontext(prec=60):
        above_mid = str(Decimal(1) + Decimal(2) ** -24 + Decimal("1e-30"))
    assert np.float32(float(above_mid)) == np.float32(1.0)
    assert _float32_from_decimal([above_mid])[0] == np.nextafter(np.float32(1), np.float32(2))


def test_keras_export_savedmodel(trained, tmp_path):
    _, tables, X_test, _ = trained
    want = leaf_indices_numpy(tables, X_test)
    inputs = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    model = keras.Model(inputs, GBDTLeafEncoder(tables, name="leaves")(inputs))
    assert np.array_equal(np.asarray(model.predict(X_test, verbose=0)), want)

    model.export(str(tmp_path / "sm"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert np.array_equal(reloaded.serve(tf.constant(X_test)).numpy(), want)
    outputs = reloaded.signatures["serving_default"](features=tf.constant(X_test))
    (out,) = outputs.values()
    assert out.dtype == tf.int32 and np.array_equal(out.numpy(), want)

    # the layer also serializes through config (.keras files)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert np.array_equal(np.asarray(loaded(X_test[:200])), want[:200])
    layer = GBDTLeafEncoder.from_config(model.get_layer("leaves").get_config())
    _assert_tables_equal(layer.tables, tables)


def test_leaf_one_hot(trained):
    _, tables, X_test, _ = trained
    idx = leaf_indices_numpy(tables, X_test[:300])
    dense = leaf_one_hot(idx, tables.leaves_per_tree).numpy()
    assert dense.dtype == np.float32 and dense.shape == (300, sum(tables.leaves_per_tree))
    expected = np.zeros_like(dense)
    np.put_along_axis(expected, idx + leaf_offsets(tables.leaves_per_tree), 1.0, axis=1)
    assert np.array_equal(dense, expected)


def test_several_trees_per_round():
    rng = np.random.default_rng(3)
    X = _features(rng, 600)
    y = np.digitize(np.nan_to_num(X[:, 0]) + X[:, SIGN], [-0.5, 0.5]).astype(np.float32)
    params = {**PARAMS, "objective": "multi:softprob", "num_class": 3, "num_parallel_tree": 2, "max_depth": 3}
    booster = xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=3)
    tables = tree_tables_from_booster(booster)
    assert tables.n_trees == 3 * 3 * 2
    X_test = np.concatenate([_features(rng, 300, unseen_codes=True), _path_rows(tables, X, range(tables.n_trees))])
    want = _xgb_leaves(booster, tables, X_test)
    assert np.array_equal(leaf_indices_numpy(tables, X_test), want)
    assert np.array_equal(GBDTLeafEncoder(tables)(X_test).numpy(), want)


def test_sklearn_api_booster(trained):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(5)
    X = _features(rng, 800)
    clf = xgb.XGBClassifier(n_estimators=10, max_depth=4, tree_method="hist", random_state=0, n_jobs=1)
    clf.fit(X, _labels(rng, X))
    tables = tree_tables_from_booster(clf)
    X_test = trained[2]
    want = leaf_indices_from_pred_leaf(clf.get_booster().predict(xgb.DMatrix(X_test), pred_leaf=True), tables)
    assert np.array_equal(GBDTLeafEncoder(tables)(X_test).numpy(), want)


def test_unsupported_models_raise():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"c": pd.Categorical(rng.integers(0, 6, 400)), "x": rng.normal(size=400)})
    y = frame["c"].cat.codes.isin([1, 4]).astype(float)
    booster = xgb.train({**PARAMS, "max_depth": 2}, xgb.DMatrix(frame, label=y, enable_categorical=True), 2)
    with pytest.raises(NotImplementedError, match="categorical"):
        tree_tables_from_booster(booster)

    X = rng.normal(size=(200, 3)).astype(np.float32)
    linear = xgb.train({"booster": "gblinear", "nthread": 1}, xgb.DMatrix(X, label=(X[:, 0] > 0).astype(float)), 2)
    with pytest.raises(ValueError, match="gblinear"):
        tree_tables_from_booster(linear)

    tables = tree_tables_from_booster(xgb.train(PARAMS, xgb.DMatrix(X, label=(X[:, 0] > 0).astype(float)), 2))
    with pytest.raises(ValueError, match="shape"):
        leaf_indices_from_pred_leaf(np.zeros((4, 3)), tables)


def test_one_tree_model_pred_leaf_has_no_tree_axis():
    """Early stopping can leave a single tree; xgboost then returns pred_leaf as [n]."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    booster = xgb.train({"max_depth": 2, "objective": "binary:logistic"}, xgb.DMatrix(X, label=y), num_boost_round=1)
    tables = tree_tables_from_booster(booster)
    pred_leaf = booster.predict(xgb.DMatrix(X), pred_leaf=True)
    assert pred_leaf.ndim == 1
    leaves = leaf_indices_from_pred_leaf(pred_leaf, tables)
    assert leaves.shape == (200, 1) and np.array_equal(leaves, leaf_indices_numpy(tables, X))
