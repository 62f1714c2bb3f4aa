"""GBDT leaf features: XGBoost trained on Spark, leaves computed on the executors.

Dense inputs are the spec's features with the `gbdt` role: numerics as float, string categoricals as
codes of their fitted vocabulary (unseen → len(vocabulary), missing → NaN). Leaf node ids returned by
`predict(pred_leaf=True)` are mapped to compact per-tree indices with vocabularies built from the model
(features.gbdt_trees), the same tables the in-graph TensorFlow encoder evaluates.

Two ways to train, one booster: samples that fit the driver (gbdt.local_max_rows) are coded from their
Parquet shards with pyarrow (`dense_matrix`, the same codes as `DenseFeature.column`), trained with
xgboost on the driver (`fit_booster_locally`) and scored in the same process (`score_locally`); larger
ones train with SparkXGBClassifier (`train_booster`) and are scored on the executors
(`leaves_and_scores`). Both call XGBoost with the same parameters (`xgboost_params`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from features.feature_spec import FeatureSpec


@dataclass(frozen=True)
class DenseFeature:
    name: str
    vocabulary: tuple[str, ...] | None = None  # string features: code = index in it, unseen = its length

    def column(self) -> Column:
        value = F.col(self.name)
        if self.vocabulary is None:
            code = value.cast("double")
        else:
            position = F.array_position(F.array(*[F.lit(v) for v in self.vocabulary]), value.cast("string"))
            code = F.when(position == 0, F.lit(float(len(self.vocabulary)))).otherwise((position - 1).cast("double"))
        return F.coalesce(code, F.lit(float("nan"))).alias(self.name)


def dense_features(spec: FeatureSpec, transforms: dict) -> list[DenseFeature]:
    """The GBDT's inputs, in order: every `gbdt`-role scalar feature; strings coded by their vocabulary."""
    dense = []
    for feature in spec.model_features():
        if "gbdt" not in feature.roles or feature.dtype.startswith("array"):
            continue
        if feature.dtype == "string":
            fitted = transforms.get(feature.name, {})
            if fitted.get("transform") != "vocabulary":
                raise ValueError(f"gbdt feature {feature.name} is a string without a fitted vocabulary")
            dense.append(DenseFeature(feature.name, tuple(str(v) for v in fitted["values"])))
        else:
            dense.append(DenseFeature(feature.name))
    return dense


def dense_frame(samples: DataFrame, features: list[DenseFeature], keep: list[str]) -> DataFrame:
    return samples.select(*keep, *[f.column() for f in features])


def train_booster(train_and_valid: DataFrame, features: list[DenseFeature], params):
    """SparkXGBClassifier on the train rows, early stopping on the valid rows (column `is_valid`);
    `params`: the `gbdt` settings (jobs/settings.py GbdtSettings: num_workers, n_estimators, ...).
    The inputs travel as one array<double> column (xgboost 3.2's list-of-columns path fails with a
    validation indicator)."""
    from xgboost.spark import SparkXGBClassifier

    assembled = train_and_valid.withColumn("features", F.array(*[F.col(f.name) for f in features]))
    estimator = SparkXGBClassifier(
        features_col="features",
        label_col="label",
        weight_col="weight",
        validation_indicator_col="is_valid",
        num_workers=params.num_workers,
        **xgboost_params(params),
    )
    return _best_rounds(estimator.fit(assembled).get_booster())


def xgboost_params(params) -> dict:
    """The booster's parameters from the `gbdt` settings, the same for Spark and for the driver."""
    return {
        "missing": float("nan"),
        "n_estimators": params.n_estimators,
        "max_depth": params.max_depth,
        "learning_rate": params.learning_rate,
        "min_child_weight": params.min_child_weight,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "reg_lambda": params.reg_lambda,
        "early_stopping_rounds": params.early_stopping_rounds,
        "eval_metric": "logloss",
        "tree_method": "hist",
        "random_state": params.seed,
    }


def _best_rounds(booster):
    best = booster.best_iteration if booster.attr("best_iteration") is not None else None
    return booster[: best + 1] if best is not None else booster


def dense_matrix(table: pa.Table, features: list[DenseFeature]) -> np.ndarray:
    """float32 rows x features with the codes of `DenseFeature.column`: numerics as they are, strings as
    their index in the vocabulary (unseen = its length), missing = NaN."""
    matrix = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, feature in enumerate(features):
        values = table.column(feature.name)
        if feature.vocabulary is None:
            code = values.cast(pa.float64())
        else:
            text = values.cast(pa.string())
            position = pc.index_in(text, value_set=pa.array(feature.vocabulary, pa.string())).cast(pa.float64())
            code = pc.if_else(pc.is_null(text), None, pc.fill_null(position, float(len(feature.vocabulary))))
        matrix[:, j] = pc.fill_null(code, float("nan")).to_numpy(zero_copy_only=False)
    return matrix


def training_arrays(table: pa.Table, features: list[DenseFeature]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dense_matrix, label float32, weight float32 with missing = 1) of rows held in this process."""
    label = table.column("label").to_numpy(zero_copy_only=False).astype(np.float32)
    weight = pc.fill_null(table.column("weight").cast(pa.float32()), 1.0).to_numpy(zero_copy_only=False)
    return dense_matrix(table, features), label, weight


def fit_booster_locally(train: tuple, valid: tuple, params, threads: int):
    """xgboost on the driver: `train` and `valid` are (matrix, label, weight); early stopping on valid's
    logloss, as SparkXGBClassifier does with its validation indicator."""
    import xgboost as xgb

    model = xgb.XGBClassifier(n_jobs=threads, **xgboost_params(params))
    model.fit(
        train[0],
        train[1],
        sample_weight=train[2],
        eval_set=[(valid[0], valid[1])],
        sample_weight_eval_set=[valid[2]],
        verbose=False,
    )
    return _best_rounds(model.get_booster())


def score_locally(booster, trees_json: dict, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compact leaf indices (int32, rows x trees) and probabilities (float64) of `matrix`, in one process."""
    import xgboost as xgb

    from features.gbdt_trees import from_json, leaf_indices_from_pred_leaf

    rows = xgb.DMatrix(matrix, missing=np.nan)
    leaves = leaf_indices_from_pred_leaf(booster.predict(rows, pred_leaf=True), from_json(trees_json))
    return leaves.astype(np.int32), booster.predict(rows).astype(np.float64)


def leaves_and_scores(
    spark: SparkSession, frame: DataFrame, features: list[DenseFeature], booster, trees_json: dict, keep: list[str]
) -> DataFrame:
    """Executors score every row: compact leaf indices (array<int>) and the booster's probability."""
    import xgboost as xgb

    from features.gbdt_trees import from_json, leaf_indices_from_pred_leaf

    shared = spark.sparkContext.broadcast((bytes(booster.save_raw("ubj")), trees_json))
    names = [f.name for f in features]
    key_types = {field.name: field.dataType.simpleString() for field in frame.schema.fields if field.name in keep}

    def score(batches):
        raw, tables_json = shared.value
        model = xgb.Booster()
        model.load_model(bytearray(raw))
        tables = from_json(tables_json)
        for batch in batches:
            matrix = xgb.DMatrix(batch[names].to_numpy(dtype=np.float32), missing=np.nan)
            leaves = leaf_indices_from_pred_leaf(model.predict(matrix, pred_leaf=True), tables)
            out = batch[keep].copy()
            out["gbdt_leaves"] = list(leaves.astype(np.int32))
            out["gbdt_probability"] = model.predict(matrix).astype(float)
            yield out

    schema = ", ".join([f"{k} {key_types[k]}" for k in keep] + ["gbdt_leaves array<int>", "gbdt_probability double"])
    return frame.mapInPandas(score, schema)


def binary_metrics(scored: DataFrame, probability: str = "gbdt_probability") -> dict:
    """AUC and logloss of a probability column against `label` (one pass + the pyspark.ml evaluator)."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    clipped = F.least(F.greatest(F.col(probability), F.lit(1e-15)), F.lit(1 - 1e-15))
    row = scored.agg(
        F.count(F.lit(1)).alias("rows"),
        F.avg("label").alias("rate"),
        F.avg(-(F.col("label") * F.log(clipped) + (1 - F.col("label")) * F.log(1 - clipped))).alias("logloss"),
        F.avg(probability).alias("mean_prediction"),
    ).first()
    assert row is not None  # an aggregate without groupBy has one row
    auc = BinaryClassificationEvaluator(rawPredictionCol=probability, labelCol="label").evaluate(
        scored.select(F.col(probability).cast("double"), F.col("label").cast("double"))
    )
    return {
        "rows": row["rows"],
        "positive_rate": row["rate"],
        "auc": auc,
        "logloss": row["logloss"],
        "mean_prediction": row["mean_prediction"],
    }


def local_binary_metrics(label: np.ndarray, probability: np.ndarray) -> dict:
    """`binary_metrics` of rows held in this process (sklearn's exact ROC AUC and logloss)."""
    from sklearn.metrics import log_loss, roc_auc_score

    both = len(np.unique(label)) == 2
    return {
        "rows": int(len(label)),
        "positive_rate": float(label.mean()) if len(label) else None,
        "auc": float(roc_auc_score(label, probability)) if both else None,
        "logloss": float(log_loss(label, np.clip(probability, 1e-15, 1 - 1e-15), labels=[0, 1]))
        if len(label)
        else None,
        "mean_prediction": float(probability.mean()) if len(label) else None,
    }


def importance(booster, features: list[DenseFeature]) -> pd.DataFrame:
    gain = booster.get_score(importance_type="gain")
    return pd.DataFrame(
        {
            "feature": [f.name for f in features],
            "gain": [float(gain.get(f.name, gain.get(f"f{i}", 0.0))) for i, f in enumerate(features)],
        }
    ).sort_values("gain", ascending=False, ignore_index=True)
