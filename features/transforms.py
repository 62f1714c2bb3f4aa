"""Transforms fitted on the train split only (Estimator.fit → a JSON model), in the spirit of pyspark.ml.

Each model feature with a `transform` in schemas/features.yaml gets fitted parameters:
    quantile_buckets  boundaries at equal-frequency quantiles (deduplicated)  → Discretization
    vocabulary        values seen at least min_count times, most frequent first (at most max_size),
                      everything else maps to one OOV bucket                    → StringLookup/IntegerLookup
    hashing           number of bins                                            → Hashing
    normalize         mean and standard deviation                               → Normalization
    log1p             log1p, then mean and standard deviation of log1p(x)       → log1p + Normalization
                      both also get `boundaries` (the raw value's equal-frequency quantiles, as for
                      quantile_buckets): the wide part's bucketized view (`numeric_buckets`)
The artifact is saved beside the samples and baked into the TensorFlow graph later, so training and
serving use the same numbers.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from features.feature_spec import Feature, FeatureSpec

NUMERIC = {"long", "int", "double"}


def _is_array(feature: Feature) -> bool:
    return feature.dtype.startswith("array<")


def fit_transforms(train: DataFrame, spec: FeatureSpec, relative_error: float = 0.001) -> dict:
    """Fit every transformed model feature on `train` (already restricted to the train split)."""
    features = [f for f in spec.model_features() if f.transform]
    fitted: dict[str, dict] = {}

    # equal-frequency boundaries in one approxQuantile pass: the buckets of quantile_buckets features
    # and the bucketized view of normalize / log1p ones (training/feature_layers.py bucketized)
    quantiled = [f for f in features if f.transform in ("quantile_buckets", "normalize", "log1p")]
    if quantiled:
        buckets = int(spec.transforms["quantile_buckets"]["num_buckets"])
        probabilities = [i / buckets for i in range(1, buckets)]
        columns = [F.col(f.name).cast("double").alias(f.name) for f in quantiled]
        quantiles = train.select(*columns).approxQuantile([f.name for f in quantiled], probabilities, relative_error)
        for feature, values in zip(quantiled, quantiles):
            fitted[feature.name] = {"transform": feature.transform, "boundaries": sorted(set(values))}

    scaled = [f for f in features if f.transform in ("normalize", "log1p")]
    if scaled:
        stats = []
        for f in scaled:
            value = F.col(f.name).cast("double")
            value = F.log1p(F.greatest(value, F.lit(0.0))) if f.transform == "log1p" else value
            stats += [
                F.mean(value).alias(f"{f.name}__mean"),
                F.stddev_pop(value).alias(f"{f.name}__std"),
                F.count(value).alias(f"{f.name}__count"),
            ]
        aggregated = train.agg(*stats).first()
        assert aggregated is not None  # an aggregate without groupBy has one row
        row = aggregated.asDict()
        for f in scaled:
            fitted[f.name] |= {
                "mean": row[f"{f.name}__mean"] or 0.0,
                "std": row[f"{f.name}__std"] or 0.0,
                "count": row[f"{f.name}__count"],
            }

    vocabulary = spec.transforms["vocabulary"]
    lookups = [f for f in features if f.transform == "vocabulary"]
    if lookups:  # one pass over train for all vocabularies: (feature, value) pairs counted together
        pairs = [
            train.select(
                F.lit(f.name).alias("feature"),
                (F.explode_outer(f.name) if _is_array(f) else F.col(f.name)).alias("value"),
            ).select("feature", F.col("value").cast("string").alias("value"))
            for f in lookups
        ]
        ranked = (
            reduce(DataFrame.unionByName, pairs)
            .where(F.col("value").isNotNull())
            .groupBy("feature", "value")
            .count()
            .where(F.col("count") >= int(vocabulary["min_count"]))
            .withColumn("rank", F.row_number().over(Window.partitionBy("feature").orderBy(F.desc("count"), "value")))
            .where(F.col("rank") <= int(vocabulary["max_size"]))
            .collect()
        )
        for f in lookups:
            kept = sorted((r for r in ranked if r["feature"] == f.name), key=lambda r: r["rank"])
            typed = int if f.dtype.replace("array<", "").rstrip(">") in ("int", "long") else str
            fitted[f.name] = {
                "transform": "vocabulary",
                "dtype": f.dtype,
                "values": [typed(r["value"]) for r in kept],
                "num_oov_buckets": 1,
            }

    for f in (f for f in features if f.transform == "hashing"):
        fitted[f.name] = {
            "transform": "hashing",
            "dtype": f.dtype,
            "num_bins": int(spec.transforms["hashing"]["num_bins"]),
        }
    return fitted
