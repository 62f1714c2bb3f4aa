"""The models' inputs: Arrow → numpy conversion, the tf.data pipeline, preprocessing layers, FM term."""

from __future__ import annotations

import math

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from features.errors import PipelineInputError
from features.feature_spec import parse_spec
from training.dataset import encoded_row_bytes, make_dataset, shuffled_batches
from training.feature_layers import FeatureEncoders
from training.inputs import ModelInput, arrow_to_arrays, model_inputs
from training.layers import FieldEmbeddings, GatherEmbedding, fm_interaction
from training.models import build_model, build_split

SPEC = parse_spec(
    {
        "windows_days": [1],
        "counters": {},
        "interaction_events": [],
        "ctr_prior_strength": 1,
        "ctr_prior_fallback": 0.1,
        "last_n_items": 3,
        "top_categories": 2,
        "entities": {"context": {"key": []}, "user": {"key": ["user_id"]}},
        "crosses": [
            {"features": ["device", "last_items"], "num_bins": 97},
            {"features": ["device", "age"], "num_bins": 50},
        ],
        "features": [
            {
                "name": "device",
                "entity": "context",
                "kind": "event_column",
                "dtype": "string",
                "transform": "vocabulary",
                "roles": ["wide", "fm"],
            },
            {
                "name": "position",
                "entity": "context",
                "kind": "event_column",
                "dtype": "int",
                "transform": "vocabulary",
                "roles": ["wide"],
            },
            {
                "name": "item",
                "entity": "context",
                "kind": "event_column",
                "dtype": "long",
                "transform": "hashing",
                "roles": ["deep"],
            },
            {
                "name": "age",
                "entity": "user",
                "kind": "attribute",
                "dtype": "int",
                "transform": "quantile_buckets",
                "roles": ["wide", "fm"],
            },
            {
                "name": "rating",
                "entity": "user",
                "kind": "rating_mean",
                "dtype": "double",
                "transform": "normalize",
                "roles": ["wide", "deep", "fm"],
            },
            {
                "name": "clicks",
                "entity": "user",
                "kind": "window_count",
                "dtype": "long",
                "transform": "log1p",
                "roles": ["deep"],
            },
            {
                "name": "last_items",
                "entity": "user",
                "kind": "last_items",
                "dtype": "array<long>",
                "transform": "hashing",
                "roles": ["wide"],
            },
            {
                "name": "top_categories",
                "entity": "user",
                "kind": "top_categories",
                "dtype": "array<string>",
                "transform": "vocabulary",
                "roles": ["deep", "fm"],
            },
            {"name": "first_date", "entity": "user", "kind": "first_date", "dtype": "date", "roles": []},
        ],
    }
)
TRANSFORMS = {
    "device": {"transform": "vocabulary", "values": ["mobile", "tv"]},
    "position": {"transform": "vocabulary", "values": [0, -1, 2]},
    "item": {"transform": "hashing", "num_bins": 100},
    "age": {"transform": "quantile_buckets", "boundaries": [20.0, 30.0]},
    "rating": {"transform": "normalize", "mean": 3.0, "std": 2.0, "boundaries": [2.0, 4.0]},
    "clicks": {"transform": "log1p", "mean": 1.0, "std": 0.5, "boundaries": [0.0, 2.0]},
    "last_items": {"transform": "hashing", "num_bins": 50},
    "top_categories": {"transform": "vocabulary", "values": ["Drama", "Comedy"]},
}
ROWS = pa.table(
    {
        "device": ["mobile", None, "tablet"],
        "position": pa.array([-1, 2, 7], pa.int32()),
        "item": pa.array([5, 6, None], pa.int64()),
        "age": pa.array([19, 30, None], pa.int32()),
        "rating": [5.0, None, 3.0],
        "clicks": pa.array([0, 3, None], pa.int64()),
        "last_items": pa.array([[4, 5, 6, 7], [], None], pa.list_(pa.int64())),
        "top_categories": pa.array([["Drama"], ["Western", "Comedy"], None], pa.list_(pa.string())),
    }
)


def test_inputs_follow_the_spec_and_fill_nulls_and_pad_lists():
    inputs = {i.name: i for i in model_inputs(SPEC)}
    assert "first_date" not in inputs  # no model role, no input
    assert inputs["age"] == ModelInput("age", "float32") and inputs["position"] == ModelInput("position", "int64")
    assert inputs["last_items"] == ModelInput("last_items", "int64", 3)
    assert inputs["top_categories"] == ModelInput("top_categories", "string", 2)
    arrays = arrow_to_arrays(ROWS, list(inputs.values()))
    assert arrays["device"].tolist() == ["mobile", "", "tablet"]
    assert arrays["item"].tolist() == [5, 6, -1]
    assert arrays["age"][:2].tolist() == [19.0, 30.0] and math.isnan(arrays["age"][2])
    assert arrays["last_items"].tolist() == [[4, 5, 6], [-1, -1, -1], [-1, -1, -1]]  # truncated to last_n_items
    assert arrays["top_categories"].tolist() == [["Drama", ""], ["Western", "Comedy"], ["", ""]]


def _encoded(outputs, rows=ROWS):
    encoders = FeatureEncoders(SPEC, TRANSFORMS)
    model = keras.Model(encoders.inputs, outputs(encoders))
    arrays = arrow_to_arrays(rows, model_inputs(SPEC))
    return model({k: tf.constant(v) for k, v in arrays.items()})


def test_categorical_views_lookup_hash_and_bucket():
    device, position, age, top = _encoded(
        lambda e: [e.categorical(n).index for n in ("device", "position", "age", "top_categories")]
    )
    assert device.numpy().tolist() == [1, 0, 0]  # index 0 = out of vocabulary (also the missing "")
    assert position.numpy().tolist() == [2, 3, 0]  # -1 is a real value here, not IntegerLookup's OOV token
    assert age.numpy().tolist() == [0, 2, 3]  # < 20, [30, inf), missing → its own bucket
    assert top.numpy().tolist() == [[1, 0], [0, 2], [0, 0]]
    encoders = FeatureEncoders(SPEC, TRANSFORMS)
    assert [encoders.categorical(n).cardinality for n in ("device", "position", "age", "item")] == [3, 4, 4, 100]


def test_numeric_views_normalize_with_a_missing_indicator():
    rating, clicks = _encoded(lambda e: [e.numeric("rating"), e.numeric("clicks")])
    np.testing.assert_allclose(rating.numpy(), [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(clicks.numpy()[:2, 0], [(0 - 1.0) / 0.5, (math.log1p(3) - 1.0) / 0.5], atol=1e-5)
    far = _encoded(lambda e: [e.numeric("rating")], rows=ROWS.set_column(4, "rating", pa.array([1e6, -1e6, 3.0])))
    np.testing.assert_allclose(far.numpy()[:, 0], [5.0, -5.0, 0.0])  # clipped at 5 standard deviations
    assert clicks.numpy()[2].tolist() == [0.0, 1.0]


def test_bucketized_numerics_use_the_raw_train_quantiles():
    rating, clicks = _encoded(lambda e: [e.bucketized("rating").index, e.bucketized("clicks").index])
    assert rating.numpy().tolist() == [2, 3, 1]  # 5 >= 4; missing → the last bucket; 2 <= 3 < 4
    assert clicks.numpy().tolist() == [1, 2, 3]  # on raw counts, not log1p: 0 <= 0 < 2; 3 >= 2; missing
    encoders = FeatureEncoders(SPEC, TRANSFORMS)
    assert encoders.bucketized("rating").cardinality == 4
    with pytest.raises(ValueError, match="age .quantile_buckets. has no bucketized view"):
        encoders.bucketized("age")
    old = {**TRANSFORMS, "rating": {k: v for k, v in TRANSFORMS["rating"].items() if k != "boundaries"}}
    with pytest.raises(PipelineInputError, match="no bucket boundaries for rating.*rebuild the samples"):
        FeatureEncoders(SPEC, old).bucketized("rating")


def test_numeric_buckets_let_lr_fit_a_non_monotone_numeric():
    """Label 1 exactly when the rating is in the middle bucket [2, 4): a line through the normalized value
    cannot rank that (any monotone score has AUC 0.5 here), its buckets can (AUC 1)."""
    from training.train import compile_model

    rng = np.random.default_rng(3)
    ratings = rng.uniform(0.0, 6.0, 3000)
    labels = ((ratings >= 2.0) & (ratings < 4.0)).astype("float32")
    rows = pa.table(
        {name: pa.nulls(len(ratings), ROWS.schema.field(name).type) for name in ROWS.column_names}
    ).set_column(4, "rating", pa.array(ratings))
    features = _raw_tensors(rows)
    aucs = {}
    for buckets in (False, True):
        keras.utils.set_random_seed(2)
        params = _params("lr", crosses=False, numeric_buckets=buckets, learning_rate=0.05)
        model = build_model("lr", FeatureEncoders(SPEC, TRANSFORMS), params)
        compile_model(model, params)
        model.fit(features, labels, batch_size=256, epochs=15, verbose=0)
        auc = keras.metrics.AUC(num_thresholds=1000)
        auc.update_state(labels, np.asarray(model(features)).reshape(-1))
        aucs[buckets] = float(auc.result())
    assert aucs[True] > 0.99 and aucs[False] < 0.8, aucs


def test_list_cross_is_element_wise_and_keeps_the_mask():
    def outputs(encoders):
        cross = encoders.cross(SPEC.crosses[0])
        return [cross.index, cross.mask, encoders.cross(SPEC.crosses[1]).index]

    index, mask, scalar_cross = _encoded(outputs)
    assert index.shape == (3, 3) and mask.numpy().tolist() == [[True] * 3, [False] * 3, [False] * 3]
    assert len(set(index.numpy()[0].tolist())) == 3  # mobile x 4, mobile x 5, mobile x 6
    assert scalar_cross.shape == (3,) and all(0 <= v < 50 for v in scalar_cross.numpy())


def test_fm_interaction_equals_the_pairwise_sum():
    fields = np.random.default_rng(1).normal(size=(4, 5, 3)).astype(np.float32)
    expected = [sum(fields[b, i] @ fields[b, j] for i in range(5) for j in range(i + 1, 5)) for b in range(4)]
    np.testing.assert_allclose(np.asarray(fm_interaction(tf.constant(fields))).ravel(), expected, rtol=1e-5)


def test_gather_embedding_looks_up_and_differentiates_as_keras_embedding():
    """The same rows and the same sparse gradient as keras.layers.Embedding (without its negative-index
    fix, which no index of ours needs), for int32 and int64 indices of any rank; every table of the
    ranking models is one."""
    keras.utils.set_random_seed(7)
    ours, theirs = GatherEmbedding(6, 3), keras.layers.Embedding(6, 3)
    for ids in (tf.constant([[0, 5], [2, 2]], tf.int64), tf.constant([4, 1, 4], tf.int32)):
        ours.build(ids.shape)
        theirs.build(ids.shape)
        theirs.set_weights(ours.get_weights())
        got, gradients = [], []
        for layer in (ours, theirs):
            with tf.GradientTape() as tape:
                out = layer(ids)
                loss = tf.reduce_sum(out * tf.reshape(tf.range(1.0, 1.0 + float(tf.size(out))), tf.shape(out)))
            got.append(out.numpy())
            gradients.append(tf.convert_to_tensor(tape.gradient(loss, layer.trainable_variables[0].value)).numpy())
        np.testing.assert_array_equal(got[0], ours.get_weights()[0][ids.numpy()])
        np.testing.assert_array_equal(got[0], got[1])
        np.testing.assert_array_equal(gradients[0], gradients[1])


def _field_tables(fused: FieldEmbeddings) -> list[GatherEmbedding]:
    """A table of its own per field of `fused`, holding that field's block of the fused table."""
    tables = []
    for field, (rows, dim) in enumerate(zip(fused.cardinalities, fused.dims)):
        table = GatherEmbedding(rows, dim, embeddings_regularizer=keras.regularizers.L2(fused.l2))
        table.build((None,))
        table.set_weights([fused.get_weights()[0][fused.field_rows(field), :dim]])
        tables.append(table)
    return tables


def test_field_embeddings_look_up_penalize_and_train_as_one_table_per_field():
    """Three fields (scalar 5 x 3, list 4 x 2, scalar 7 x 3) in one FieldEmbeddings table against a
    GatherEmbedding per field started from the same blocks: the same vectors, the same L2 penalty (0.1 x
    the sum of squares, by hand) and, after 3 Adam steps, the same weights. The column the 2-wide field
    does not use starts at zero and stays there."""
    from training.fused_adam import FusedAdam

    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    shapes = [(), (3,), ()]
    fused = FieldEmbeddings([5, 4, 7], [3, 2, 3], l2=0.1)
    ids = [keras.Input(shape, dtype="int32", name=f"f{i}") for i, shape in enumerate(shapes)]
    fused_out = fused(ids)
    start = fused.get_weights()[0].copy()
    assert start.shape == (16, 3) and np.all(start[5:9, 2] == 0) and np.all(start[5:9, :2] != 0)
    separate = _field_tables(fused)
    separate_out = [table(x) for table, x in zip(separate, ids)]

    def model(outputs):
        flat = keras.layers.Concatenate()([outputs[0], keras.layers.Flatten()(outputs[1]), outputs[2]])
        head = keras.layers.Dense(1, activation="sigmoid", kernel_initializer="ones", name="head")
        return keras.Model(ids, head(flat))

    models = [model(fused_out), model(separate_out)]
    batches = [
        (
            {"f0": rng.integers(0, 5, 8), "f1": rng.integers(0, 4, (8, 3)), "f2": rng.integers(0, 7, 8)},
            rng.integers(0, 2, (8, 1)).astype("float32"),
        )
        for _ in range(3)
    ]
    first = {k: tf.constant(v, tf.int32) for k, v in batches[0][0].items()}
    for got, table, x in zip(fused(list(first.values())), separate, first.values()):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(table(x)))
        np.testing.assert_array_equal(np.asarray(got), table.get_weights()[0][x.numpy()])
    blocks = [start[0:5, :3], start[5:9, :2], start[9:16, :3]]
    by_hand = 0.1 * sum(float(np.sum(np.square(b.astype("float64")))) for b in blocks)
    np.testing.assert_allclose(float(sum(fused.losses)), by_hand, rtol=1e-5)
    np.testing.assert_allclose(float(sum(fused.losses)), float(sum(sum(t.losses) for t in separate)), rtol=1e-6)
    for m in models:
        m.compile(FusedAdam(0.05), "binary_crossentropy")
        for features, label in batches:
            m.train_on_batch(features, label)
    trained = fused.get_weights()[0]
    assert not np.allclose(trained, start)
    np.testing.assert_array_equal(trained[5:9, 2], 0.0)
    for field, table in enumerate(separate):
        block = trained[fused.field_rows(field), : fused.dims[field]]
        np.testing.assert_allclose(block, table.get_weights()[0], rtol=1e-5, atol=1e-7)
    restored = FieldEmbeddings.from_config(fused.get_config())
    assert (restored.cardinalities, restored.dims, restored.l2) == ([5, 4, 7], [3, 2, 3], 0.1)


def test_the_ranking_models_hold_each_parts_fields_in_one_table():
    """LR's weights, Wide&Deep's deep vectors and DeepFM's field vectors and first-order weights are one
    FieldEmbeddings table each (no table per field); its fields are the part's categorical fields, and
    the vector tables are the ones ZeroUnreachedRows resets (the 1-wide weight tables are not)."""
    from training.train import embedding_tables

    expected = {
        "lr": {"wide_weights": 1},
        "wide_deep": {"wide_weights": 1, "deep_embedding": 16},
        "deepfm": {"first_order_weights": 1, "field_embedding": 8},
    }
    for name, tables in expected.items():
        core = build_split(name, SPEC, TRANSFORMS, _params(name, embedding_dim=16 if name != "deepfm" else 8)).core
        assert not [layer.name for layer in core.layers if isinstance(layer, keras.layers.Embedding)]
        fused = {layer.name: layer for layer in core.layers if isinstance(layer, FieldEmbeddings)}
        assert {n: max(layer.dims) for n, layer in fused.items()} == tables
        for layer in fused.values():
            assert len(layer.cardinalities) >= 2
            assert layer.get_weights()[0].shape[0] == sum(layer.cardinalities)
        vectors = [v for n, layer in fused.items() if max(layer.dims) > 1 for v in layer.weights]
        assert [v.path for v in embedding_tables(core)] == [v.path for v in vectors]


def test_shuffle_buffer_emits_every_row_once_in_mixed_order():
    parts = [
        ({"x": np.arange(i, i + 100)}, np.zeros(100, np.float32), np.ones(100, np.float32)) for i in range(0, 1000, 100)
    ]
    batches = list(shuffled_batches(iter(parts), buffer_rows=300, batch_size=64, rng=np.random.default_rng(0)))
    seen = np.concatenate([b[0]["x"] for b in batches])
    assert sorted(seen.tolist()) == list(range(1000))
    assert all(len(b[1]) == 64 for b in batches[:-1])
    assert not np.array_equal(seen, np.arange(1000))
    assert len(set(seen[:64] // 100)) >= 3  # the first batch already mixes three record batches


@pytest.fixture
def shards(tmp_path):
    root = tmp_path / "parquet"
    for split, (start, rows) in {"train": (0, 5000), "valid": (5000, 700)}.items():
        (root / f"split={split}").mkdir(parents=True)
        for shard in range(2):
            ids = np.arange(start + shard * rows // 2, start + (shard + 1) * rows // 2)
            table = (
                ROWS.take(ids % 3)
                .append_column("label", pa.array(ids % 2, pa.int32()))
                .append_column("weight", pa.array([None if i % 5 == 0 else 2.0 for i in ids], pa.float64()))
                .append_column("user_id", pa.array(ids, pa.int64()))
            )
            pq.write_table(table, root / f"split={split}" / f"part-{shard}.parquet")
    return root


def test_dataset_streams_each_split_once_per_epoch_with_weights(shards):
    inputs = model_inputs(SPEC)
    train = make_dataset(
        shards,
        "train",
        inputs,
        batch_size=256,
        shuffle_buffer=1000,
        seed=3,
        chunk_rows=500,
        extra={"user_id": tf.int64},
    )
    epochs = [np.concatenate([f["user_id"].numpy() for f, _, _ in train]) for _ in range(2)]
    assert sorted(epochs[0].tolist()) == list(range(5000)) == sorted(epochs[1].tolist())
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    features, label, weight = next(iter(train))
    assert features["last_items"].shape == (256, 3) and features["device"].dtype == tf.string
    ids = features["user_id"].numpy()
    np.testing.assert_array_equal(label.numpy(), ids % 2)
    np.testing.assert_array_equal(weight.numpy(), np.where(ids % 5 == 0, 1.0, 2.0))  # missing weight → 1
    valid = make_dataset(shards, "valid", inputs, batch_size=512, extra={"user_id": tf.int64})
    assert np.concatenate([f["user_id"].numpy() for f, _, _ in valid]).tolist() == list(range(5000, 5700))
    # tf.data's autotuning off: with it, epoch starts stalled for seconds (training/dataset.py _OPTIONS)
    assert train.options().autotune.enabled is False and valid.options().autotune.enabled is False


def test_missing_split_names_the_path(tmp_path):
    with pytest.raises(PipelineInputError, match="split=test"):
        make_dataset(tmp_path, "test", model_inputs(SPEC))


def _params(name: str, **update):
    from jobs.settings import as_settings

    params = as_settings({}).models.params(name)
    return params.model_copy(update={"crosses": True, **update} if name != "deepfm" else update)


def _raw_tensors(rows=ROWS):
    return {k: tf.constant(v) for k, v in arrow_to_arrays(rows, model_inputs(SPEC)).items()}


@pytest.mark.parametrize(
    "name, update",
    [
        ("lr", {}),
        ("lr", {"numeric_buckets": True}),
        ("wide_deep", {}),
        ("deepfm", {"numeric_fm": True}),
        ("deepfm", {"numeric_fm": False}),
    ],
)
def test_split_model_is_the_single_graph_model(name, update):
    keras.utils.set_random_seed(5)
    single = build_model(name, FeatureEncoders(SPEC, TRANSFORMS), _params(name, **update))
    keras.utils.set_random_seed(5)
    split = build_split(name, SPEC, TRANSFORMS, _params(name, **update))
    assert not split.preprocessing.trainable_weights  # every trainable weight is in the core
    assert [w.shape for w in split.core.trainable_weights] == [w.shape for w in single.trainable_weights]
    for a, b in zip(split.full.trainable_weights, single.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # same seed, same initial weights
    assert split.full.trainable_weights == split.core.trainable_weights  # shared, not copied
    for weights in (single.trainable_weights, split.core.trainable_weights):  # nonzero weights: a real check
        for w in weights:
            w.assign(np.random.default_rng(len(w.path)).normal(0, 0.3, w.shape).astype("float32"))
    raw = _raw_tensors()
    expected = np.asarray(single(raw))
    np.testing.assert_array_equal(np.asarray(split.full(raw)), expected)  # the exported model is unchanged
    encoded = split.preprocessing(raw)
    assert {k for k in encoded if k.endswith("__index")} >= {"device__index", "age__index"}
    np.testing.assert_allclose(np.asarray(split.core(encoded)), expected, atol=1e-6)
    if name == "lr":  # crosses are encoded too: the core holds no hashing, lookup or bucket layers
        assert {"cross_device_x_last_items__index", "cross_device_x_age__index"} <= set(encoded)
        assert ("rating__bucket__index" in encoded) == update.get("numeric_buckets", False)
        kinds = {type(layer).__name__ for layer in split.core.layers}
        assert not kinds & {"StringLookup", "IntegerLookup", "Hashing", "HashedCrossing", "Discretization"}


def test_encoded_dataset_trains_the_core_of_the_saved_model(shards, tmp_path):
    from training.train import compile_model

    inputs = model_inputs(SPEC)
    split = build_split("wide_deep", SPEC, TRANSFORMS, _params("wide_deep"))
    raw = make_dataset(shards, "valid", inputs, batch_size=512, extra={"user_id": tf.int64})
    encoded = make_dataset(shards, "valid", inputs, 512, extra={"user_id": tf.int64}, encode=split.preprocessing)
    for (r, r_label, r_weight), (e, e_label, e_weight) in zip(raw, encoded):
        expected = split.preprocessing({i.name: r[i.name] for i in inputs})
        assert set(e) == set(expected) | {"user_id"} and "top_categories__index_mask" in e
        np.testing.assert_array_equal(e["user_id"].numpy(), r["user_id"].numpy())
        np.testing.assert_array_equal(e_label.numpy(), r_label.numpy())
        np.testing.assert_array_equal(e_weight.numpy(), r_weight.numpy())
        for key, value in expected.items():
            np.testing.assert_array_equal(e[key].numpy(), np.asarray(value))
    before = np.asarray(split.full(_raw_tensors()))
    core = compile_model(split.core, _params("wide_deep"))
    train = make_dataset(shards, "train", inputs, 256, shuffle_buffer=1000, seed=3, encode=split.preprocessing)
    core.fit(train, epochs=1, verbose=0)
    after = np.asarray(split.full(_raw_tensors()))
    assert np.abs(after - before).max() > 1e-4  # training the core moved the raw-feature model
    np.testing.assert_allclose(after, np.asarray(core(split.preprocessing(_raw_tensors()))), atol=1e-6)


@pytest.mark.parametrize("name", ["deepfm", "wide_deep"])  # wide_deep: crosses, whose layers take no 0-row block
def test_a_kept_split_gives_the_streamed_batches_and_reads_no_shard_after_its_first_full_epoch(tmp_path, name):
    """keep_encoded: the train split, filled into memory by its first full epoch, gives every epoch the
    batches the streaming path gives (same shard shuffle, same buffer, the same rows in each batch); an
    epoch left after one batch fills nothing for good (the next one streams again), and once one epoch
    has run through, no shard is read again (they are deleted). Rows are told apart by `rating` = id / 1000."""
    root = tmp_path / "parquet" / "split=train"
    root.mkdir(parents=True)
    for shard, ids in enumerate(np.array_split(np.arange(3000), 3)):
        table = ROWS.take(ids % 3).drop_columns(["rating"]).append_column("rating", pa.array(ids / 1000.0))
        table = table.append_column("label", pa.array(ids % 2, pa.int32())).append_column(
            "weight", pa.array(np.where(ids % 5 == 0, 1.0, 2.0))
        )
        pq.write_table(table, root / f"part-{shard}.parquet")
    inputs, encode = model_inputs(SPEC), build_split(name, SPEC, TRANSFORMS, _params(name)).preprocessing
    args = (tmp_path / "parquet", "train", inputs, 128, 1000, 3, 700)

    def row_ids(epoch) -> list[np.ndarray]:
        return [np.rint((f["rating__numeric"].numpy()[:, 0] * 2 + 3) * 1000).astype(int) for f, _, _ in epoch]

    streamed = make_dataset(*args, encode=encode)
    expected = [list(streamed) for _ in range(4)]
    kept = make_dataset(*args, encode=encode, keep_encoded=True)
    assert kept.options().autotune.enabled is False  # its epochs' starts stalled with tf.data's autotuning
    next(iter(kept))  # epoch 0, left after its first batch
    for epoch, want in enumerate(expected[1:], start=1):
        got = list(kept)
        if epoch == 1:
            for path in root.iterdir():
                path.unlink()
        assert [len(b[1]) for b in got] == [len(b[1]) for b in want]
        for (f, label, weight), (g, want_label, want_weight) in zip(got, want):
            assert set(f) == set(g)
            for key in f:
                np.testing.assert_allclose(f[key].numpy(), g[key].numpy(), rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(label.numpy(), want_label.numpy())
            np.testing.assert_array_equal(weight.numpy(), want_weight.numpy())
        ids = np.concatenate(row_ids(got))
        assert sorted(ids) == list(range(3000))  # every row once
        np.testing.assert_array_equal(np.concatenate(row_ids(got))[:5], np.concatenate(row_ids(want))[:5])
    assert not np.array_equal(np.concatenate(row_ids(expected[1])), np.concatenate(row_ids(expected[2])))


@pytest.mark.parametrize("keep", [False, True])
def test_making_a_train_dataset_converts_no_function_with_autograph(shards, monkeypatch, keep):
    """The map functions have no Python control flow on tensors; autograph converting them (and, for a
    kept split, `_Packing`'s methods one call at a time) cost ~0.2 s of start-up on the 200-day samples."""
    from tensorflow.python.autograph.impl import api

    converted = []
    convert = api._convert_actual
    monkeypatch.setattr(api, "_convert_actual", lambda f, ctx: converted.append(f) or convert(f, ctx))
    encode = build_split("wide_deep", SPEC, TRANSFORMS, _params("wide_deep")).preprocessing
    make_dataset(shards, "train", model_inputs(SPEC), 2, 4, 1, encode=encode, keep_encoded=keep)
    assert [getattr(f, "__qualname__", f) for f in converted] == []


def test_a_kept_valid_split_replays_its_first_pass_without_reading_a_shard(tmp_path):
    """keep_encoded without shuffling (the valid split): every pass gives the streamed batches in file
    order; after the first pass the shards are deleted and later passes still give them (from memory)."""
    root = tmp_path / "parquet" / "split=valid"
    root.mkdir(parents=True)
    for shard, ids in enumerate(np.array_split(np.arange(1000), 2)):
        table = ROWS.take(ids % 3).drop_columns(["rating"]).append_column("rating", pa.array(ids / 1000.0))
        table = table.append_column("label", pa.array(ids % 2, pa.int32())).append_column(
            "weight", pa.array(np.ones(len(ids)))
        )
        pq.write_table(table, root / f"part-{shard}.parquet")
    inputs, encode = model_inputs(SPEC), build_split("deepfm", SPEC, TRANSFORMS, _params("deepfm")).preprocessing
    args = (tmp_path / "parquet", "valid", inputs, 256, 0, 3, 300)
    want = list(make_dataset(*args, encode=encode))
    kept = make_dataset(*args, encode=encode, keep_encoded=True)
    for attempt in range(2):
        got = list(kept)
        if attempt == 0:
            for path in root.iterdir():
                path.unlink()
        assert [len(b[1]) for b in got] == [256, 256, 256, 232]
        ids = np.concatenate([np.rint((f["rating__numeric"].numpy()[:, 0] * 2 + 3) * 1000) for f, _, _ in got])
        np.testing.assert_array_equal(ids, np.arange(1000))  # file order, every row once
        for (f, label, _), (g, want_label, _) in zip(got, want):
            for key in f:
                np.testing.assert_array_equal(f[key].numpy(), g[key].numpy())
            np.testing.assert_array_equal(label.numpy(), want_label.numpy())
    with pytest.raises(Exception):  # streaming needs the deleted shards
        list(make_dataset(*args, encode=encode))


@pytest.mark.parametrize("name", ["lr", "wide_deep", "deepfm"])
def test_encoded_row_bytes_is_what_a_kept_row_takes(name):
    """training.keep_encoded_max_mb compares rows x encoded_row_bytes with its budget: the bytes per row
    are those of real encoded tensors (every output of the preprocessing, on ROWS) plus a float32 label
    and weight and the byte that marks a row written, and what the kept split's variables take."""
    from training.dataset import _Packing

    encode = build_split(name, SPEC, TRANSFORMS, _params(name)).preprocessing
    encoded = encode(_raw_tensors(), training=False)
    tensors = list(encoded.values()) if isinstance(encoded, dict) else list(encoded)
    assert len(tensors) > 3
    measured = sum(np.asarray(t).nbytes for t in tensors) / ROWS.num_rows
    assert encoded_row_bytes(encode) == measured + 8 + 1
    held = sum(v.numpy().nbytes for v in _Packing(encode).variables(10).values()) / 10
    assert encoded_row_bytes(encode) == held + 8 + 1  # and the kept label and weight, the written byte


def _deepfm_without_deep_numerics(numeric_fm: bool) -> keras.Model:
    """A DeepFM whose only path from the numeric field `rating` to the logit is its FM vector, if it has one:
    its first-order weights and the MLP are zeroed, the other fields' vectors are random."""
    keras.utils.set_random_seed(3)
    model = build_model("deepfm", FeatureEncoders(SPEC, TRANSFORMS), _params("deepfm", numeric_fm=numeric_fm))
    for layer in model.layers:
        if layer.name.startswith(("first_order_", "deep_")):
            for w in layer.weights:
                w.assign(np.zeros(w.shape, "float32"))
        elif layer.name.startswith("field_"):
            for w in layer.weights:
                w.assign(np.random.default_rng(len(layer.name)).normal(0, 0.5, w.shape).astype("float32"))
    return model


def test_deepfm_numerics_join_the_fm_only_with_numeric_fm():
    fm_fields = ["device", "age", "rating", "top_categories"]  # SPEC's `fm` role; rating is the numeric one
    k = _params("deepfm").embedding_dim
    for numeric_fm in (True, False):
        model = _deepfm_without_deep_numerics(numeric_fm)
        names = {layer.name for layer in model.layers}
        assert ("field_rating" in names) is numeric_fm
        # the MLP reads every field's vector, plus the numeric's [value, missing] when it has no vector
        width = len(fm_fields) * k if numeric_fm else (len(fm_fields) - 1) * k + 2
        assert model.get_layer("deep_dense_0").kernel.shape[0] == width
        rows = ROWS.slice(0, 1)
        low = np.asarray(model(_raw_tensors(rows)))
        high = np.asarray(model(_raw_tensors(rows.set_column(4, "rating", pa.array([1.0])))))
        assert bool(np.abs(high - low).max() > 1e-3) == numeric_fm  # only the FM vector carries the rating


@pytest.mark.parametrize("name, table", [("deepfm", "field_embedding"), ("wide_deep", "deep_embedding")])
def test_embedding_tables_start_at_the_configured_scale_each_from_its_own_draw(name, table):
    """Each field's table starts at the configured scale, and from its own random draw: one unseeded
    Keras 3 initializer shared by the tables gave every table the same first rows (a prefix of one draw).
    The fields' tables are blocks of one FieldEmbeddings table now; each block is checked."""
    for stddev, low, high in ((None, 1e-3, 0.05), (1e-4, 1e-6, 6e-4)):
        keras.utils.set_random_seed(4)
        update = {"numeric_fm": True} if name == "deepfm" else {}
        model = build_model(
            name, FeatureEncoders(SPEC, TRANSFORMS), _params(name, embedding_init_stddev=stddev, **update)
        )
        fused = model.get_layer(table)
        weights = fused.get_weights()[0]
        blocks = {
            field: weights[fused.field_rows(field), : fused.dims[field]].reshape(-1)
            for field in range(len(fused.cardinalities))
        }
        assert len(blocks) >= 2, blocks.keys()
        for field, block in blocks.items():
            assert low < np.abs(block).max() <= high, (field, stddev)
        firsts = [block[:4] for block in blocks.values()]
        for i, first in enumerate(firsts):
            for other in firsts[i + 1 :]:
                assert not np.allclose(first, other), (name, stddev)


@pytest.mark.parametrize(
    "name, linear", [("lr", "wide_logit"), ("wide_deep", "wide_logit"), ("deepfm", "first_order_logit")]
)
def test_the_linear_part_starts_at_zero_so_a_model_starts_at_its_global_bias(name, linear):
    """Every weight of the linear part (one-hots, crosses, numeric kernel, constant) starts at 0, so
    before any step LR predicts the train rate the global bias starts at on every row: a Glorot-started
    constant (up to ±1.7 in logit) and numeric kernel moved that start by a random amount."""
    keras.utils.set_random_seed(3)
    update = {} if name == "deepfm" else {"numeric_buckets": True}
    model = build_model(name, FeatureEncoders(SPEC, TRANSFORMS), _params(name, initial_bias=-3.2, **update))
    probe = keras.Model(model.input, model.get_layer(linear).output)
    rows = _raw_tensors()
    np.testing.assert_array_equal(np.asarray(probe(rows)), np.zeros((ROWS.num_rows, 1), "float32"))
    if name == "lr":
        np.testing.assert_allclose(np.asarray(model(rows)), 1 / (1 + math.exp(3.2)), rtol=1e-6)


def test_early_stopping_keeps_a_meaningful_start_no_epoch_beat(tmp_path):
    """A model that starts right (valid AUC 1) and is trained towards the opposite labels: with the start
    as a candidate (warm start, GBDT+LR from the trees) its weights come back; without, the trained ones stay."""
    from jobs.settings import as_settings
    from training.train import compile_model, fit
    from training.tuning import BudgetClock, keras_fit_valid_auc

    x = np.random.default_rng(0).normal(size=(2048, 1)).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] < 0).astype("float32"))).batch(256)
    valid = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("float32"))).batch(1024)
    training = as_settings({}).training.model_copy(update={"max_epochs": 3, "early_stopping_patience": 2, "verbose": 0})
    params = as_settings({}).models.lr.model_copy(update={"learning_rate": 0.5})

    def started_right():
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, activation="sigmoid")])
        model.layers[0].set_weights([np.array([[2.0]], "float32"), np.zeros(1, "float32")])
        return compile_model(model, params)

    for candidate in (True, False):
        model = started_right()
        result = fit(model, train, valid, tmp_path / str(candidate), training, start_is_a_candidate=candidate)
        weight = float(model.layers[0].get_weights()[0][0, 0])
        assert max(result["history"]["val_auc"]) < 0.1  # every trained epoch ranks valid backwards
        assert result["kept_start"] is candidate and (weight == 2.0) is candidate
        assert result["best_epoch"] == (0 if candidate else 1)
        assert result["best_val_auc"] == (
            pytest.approx(1.0, abs=1e-3) if candidate else result["history"]["val_auc"][0]
        )
    outcome = keras_fit_valid_auc(started_right(), train, valid, 3, 2, BudgetClock(600), start_is_a_candidate=True)
    assert outcome["best_epoch"] == 0 and outcome["valid_auc"] == pytest.approx(1.0, abs=1e-3)


def test_embedding_rows_no_train_row_reaches_are_zero_from_the_first_validation(tmp_path):
    """Train ids 1, 3, 5 of a 10-row table: after a cold fit (recpipe train, recpipe tune) rows 0, 2, 4
    and 6-9 are exactly zero, so an id first seen in valid (7) adds nothing, and the epoch-1 checkpoint
    (saved after its validation) has them at zero too; the trained rows moved. After a warm start
    (zero_unreached_rows=False) an unreached row keeps its value: it may hold an older model's learning."""
    from jobs.settings import as_settings
    from training.train import compile_model, fit
    from training.tuning import BudgetClock, keras_fit_valid_auc

    ids = np.tile(np.array([1, 3, 5], "int32"), 400)
    train = tf.data.Dataset.from_tensor_slices((ids[:, None], (ids == 3).astype("float32"))).batch(100)
    valid_ids = np.array([1, 3, 7, 5] * 50, "int32")
    valid = tf.data.Dataset.from_tensor_slices((valid_ids[:, None], (valid_ids == 3).astype("float32"))).batch(64)
    training = as_settings({}).training.model_copy(update={"max_epochs": 2, "early_stopping_patience": 2, "verbose": 0})
    params = as_settings({}).models.wide_deep

    def model():
        keras.utils.set_random_seed(5)
        table = keras.layers.Embedding(10, 4, embeddings_initializer="uniform", name="vectors")
        one_hot = keras.layers.Embedding(10, 1, embeddings_initializer="uniform", name="weights")  # not a vector table
        inputs = keras.Input((1,), dtype="int32")
        x = keras.layers.Concatenate()([keras.layers.Flatten()(table(inputs)), keras.layers.Flatten()(one_hot(inputs))])
        return compile_model(keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)), params)

    unreached, reached = [0, 2, 4, 6, 7, 8, 9], [1, 3, 5]
    start = model()
    vectors, weights = (start.get_layer(n).get_weights()[0].copy() for n in ("vectors", "weights"))
    assert np.all(np.abs(vectors[unreached]) > 0)
    cold = model()
    fit(cold, train, valid, tmp_path / "cold", training)
    trained = cold.get_layer("vectors").get_weights()[0]
    np.testing.assert_array_equal(trained[unreached], 0.0)
    assert np.all(np.any(trained[reached] != vectors[reached], axis=1)) and np.all(trained[reached] != 0)
    np.testing.assert_array_equal(cold.get_layer("weights").get_weights()[0][unreached], weights[unreached])
    checkpoint = keras.saving.load_model(tmp_path / "cold" / "checkpoints" / "best.keras", compile=False)
    np.testing.assert_array_equal(checkpoint.get_layer("vectors").get_weights()[0][unreached], 0.0)

    warm = model()
    fit(warm, train, valid, tmp_path / "warm", training, zero_unreached_rows=False)
    np.testing.assert_array_equal(warm.get_layer("vectors").get_weights()[0][unreached], vectors[unreached])

    tuned = model()
    keras_fit_valid_auc(tuned, train, valid, 2, 2, BudgetClock(600))
    np.testing.assert_array_equal(tuned.get_layer("vectors").get_weights()[0][unreached], 0.0)


def test_steps_per_execution_trains_every_batch_to_the_same_weights(tmp_path):
    """10 batches of unknown count (a generator, as make_dataset's) in calls of 4 steps: 4 + 4 + 2 per
    epoch. Every batch trains once, in order: the weights equal those of train_on_batch over the batches."""
    from jobs.settings import as_settings
    from training.train import compile_model, fit

    rng = np.random.default_rng(5)
    x = rng.normal(size=(10 * 64, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5], "float32") + rng.normal(size=len(x)) > 0).astype("float32")
    batches = [(x[start : start + 64], y[start : start + 64]) for start in range(0, len(x), 64)]
    signature = (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.float32))
    data = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature)
    training = as_settings({}).training.model_copy(
        update={"max_epochs": 2, "early_stopping_patience": 2, "verbose": 0, "batch_size": 64}
    )
    params = as_settings({}).models.lr.model_copy(update={"learning_rate": 0.05})

    def model(steps: int) -> keras.Model:
        keras.utils.set_random_seed(2)
        layers = [keras.Input((3,)), keras.layers.Dense(4, "relu"), keras.layers.Dense(1, "sigmoid")]
        return compile_model(keras.Sequential(layers), params, steps_per_execution=steps)

    by_hand = model(1)
    for _ in range(2):
        for features, label in batches:
            by_hand.train_on_batch(features, label)
    fitted = model(4)
    result = fit(fitted, data, data, tmp_path, training, rows_per_epoch=len(x))
    assert int(fitted.optimizer.iterations) == int(by_hand.optimizer.iterations) == 20  # the short calls included
    assert result["epochs"] == 2 and result["steady_examples_per_second"] > 0
    for trained, expected in zip(fitted.get_weights(), by_hand.get_weights()):
        np.testing.assert_allclose(trained, expected, atol=1e-6)
    assert np.abs(by_hand.get_weights()[0] - model(1).get_weights()[0]).max() > 1e-3  # the batches moved it


def test_steps_per_execution_auto_runs_8_per_call_from_1000_batches_per_epoch():
    from jobs.config import ConfigError
    from jobs.settings import as_settings
    from training.train import steps_per_execution

    assert steps_per_execution("auto", 999 * 1024, 1024) == 1  # 999 batches: the longer first trace does not pay
    assert steps_per_execution("auto", 999 * 1024 + 1, 1024) == 8  # a short 1,000th batch counts
    assert steps_per_execution("auto", 79_171, 1024) == 1  # ml-100k's train split
    assert steps_per_execution("auto", 1_146_564, 1024) == 8  # the 200-day synthetic samples
    assert steps_per_execution("auto", None, 1024) == 1 and steps_per_execution(4, 10, 1024) == 4
    assert as_settings({}).training.steps_per_execution == "auto"
    assert as_settings({"training": {"steps_per_execution": 16}}).training.steps_per_execution == 16
    for wrong in (0, "fast"):
        with pytest.raises(ConfigError, match="training.steps_per_execution"):
            as_settings({"training": {"steps_per_execution": wrong}})


@pytest.mark.parametrize("steps", [1, 4])
def test_train_steps_track_the_loss_only_unless_train_metrics_is_set(tmp_path, steps):
    """By default a train step updates the loss only: the compiled AUCs are left alone in fit's train
    steps (their state stays empty), history.json has no train AUC, and the training and the valid
    metrics are those of a model that also updates the AUCs on every train batch (train_metrics)."""
    from sklearn.metrics import roc_auc_score

    from jobs.settings import as_settings
    from training.train import compile_model, fit, valid_auc

    rng = np.random.default_rng(11)
    x = rng.normal(size=(3000, 3)).astype("float32")
    y = (x @ np.array([1.0, -1.5, 0.5], "float32") + rng.normal(size=len(x)) > 0).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x[:2000], y[:2000])).batch(128)
    valid = tf.data.Dataset.from_tensor_slices((x[2000:], y[2000:])).batch(256)
    training = as_settings({}).training
    assert training.train_metrics is False
    training = training.model_copy(update={"max_epochs": 2, "early_stopping_patience": 2, "verbose": 0})
    params = as_settings({}).models.lr.model_copy(update={"learning_rate": 0.05})

    def model(train_metrics: bool) -> keras.Model:
        keras.utils.set_random_seed(4)
        layers = [keras.Input((3,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1, "sigmoid")]
        return compile_model(keras.Sequential(layers), params, steps, train_metrics)

    loss_only, every_metric = model(False), model(True)
    results = {
        flag: fit(m, train, valid, tmp_path / str(flag), training)
        for flag, m in ((False, loss_only), (True, every_metric))
    }
    assert set(results[False]["history"]) == {"loss", "val_loss", "val_auc", "val_pr_auc"}
    assert set(results[True]["history"]) == {"loss", "auc", "pr_auc", "val_loss", "val_auc", "val_pr_auc"}
    for key in results[False]["history"]:
        np.testing.assert_allclose(results[False]["history"][key], results[True]["history"][key], rtol=1e-6)
    for trained, expected in zip(loss_only.get_weights(), every_metric.get_weights()):
        np.testing.assert_allclose(trained, expected, atol=1e-6)
    # evaluate still measures the AUC: Keras's 200-threshold AUC against the exact one
    exact = roc_auc_score(y[2000:], loss_only.predict(x[2000:], verbose=0)[:, 0])
    assert valid_auc(loss_only, valid) == pytest.approx(exact, abs=5e-3) and exact > 0.7
    # a fit with no validation: the AUC state after the train steps alone
    for m in (loss_only, every_metric):
        m.fit(train, epochs=1, verbose=0)
    assert loss_only.get_metrics_result()["auc"] == 0.0  # never updated by a train step
    assert every_metric.get_metrics_result()["auc"] > 0.7
