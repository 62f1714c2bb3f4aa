"""Replay evaluation: for each day D of S..E, train on the samples of the N days before D and test on D.

    recpipe replay --config C --start S --end E --train-days N [--models lr,deepfm] [--warm-start]

The samples of S-N..E are built once (one `recpipe samples` run; its time split is not used here) and
written beside the run as Parquet partitioned by event_date; each day then reads only its own files.

- cold (always): day D's models are fitted from scratch on the window D-N..D-1, with transforms
  (quantiles, vocabularies, normalization) fitted on that window: they train on D-N..D-2 and stop early
  on D-1 (valid AUC, `training.early_stopping_patience`, at most `replay.max_epochs` epochs, the best
  epoch's weights kept), as the XGBoost baseline does. A fixed small number of epochs is not enough: a
  14-day ml-100k window is ~5 batches, and 2 epochs left an LR at its random initialisation (per-day
  AUC below 0.5 with the same seed every day). Fits use batches of replay.batch_size rows (default
  training.batch_size; ml-100k's 14-day windows train better at 128 than at the full history's 1,024).
- warm (--warm-start): the first day's model is the cold one; day D's model starts from day D-1's
  weights and trains `replay.warm_epochs` epochs on the newest `replay.warm_days` days only. Its
  preprocessing is the first window's fit, kept for the whole replay: ids first seen later map to the
  out-of-vocabulary index of their lookup (one shared embedding/weight per feature, learned from every
  new id), hashed features hash as before, and quantile boundaries and normalization stay as fitted.
- baselines: item popularity (the item's positives in the window, rank-scaled) and XGBoost alone (a
  Spark XGBoost fit on the window, early stopping on its last day), both cold.

Writes one row per day, model and mode to the Delta table `replay_metrics` (partition replay_date, with
the replay's run_id) and <paths.artifacts or the warehouse>/_artifacts/replay/<run_id>/: metrics.json, report.md and
per_day_auc.png. The report compares warm with cold: the mean per-day AUC difference (warm - cold) with
its standard error over days, and the mean training seconds per day.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # started as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from features.errors import PipelineInputError
from features.feature_spec import load_spec
from jobs import artifacts
from jobs.run_info import new_run
from jobs.settings import Settings, as_settings
from training.baselines import item_popularity

REPLAY_TABLE = "replay_metrics"
POPULARITY = "baseline: item popularity"
XGBOOST = "baseline: xgboost"


def replay_dir(home: str | Path, run_id: str) -> Path:
    return artifacts.artifacts_root(home) / "replay" / run_id


def day_files(shards: Path, days: list[dt.date]) -> list[Path]:
    return sorted(f for d in days for f in (shards / f"event_date={d.isoformat()}").glob("*.parquet"))


def paired_difference(warm: list[float], cold: list[float]) -> dict:
    """Mean of the per-day differences warm - cold and its standard error (sample sd / sqrt(days))."""
    pairs = [(w, c) for w, c in zip(warm, cold) if w is not None and c is not None]
    differences = np.array([w - c for w, c in pairs], dtype=float)
    if len(differences) == 0:
        return {"days": 0, "mean": None, "standard_error": None}
    error = float(differences.std(ddof=1) / math.sqrt(len(differences))) if len(differences) > 1 else None
    return {"days": int(len(differences)), "mean": float(differences.mean()), "standard_error": error}


def _score(model, files: list[Path], inputs, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels of every row of `files`."""
    from training.dataset import make_dataset

    labels, predictions = [], []
    for features, label, _ in make_dataset(None, "test", inputs, batch_size, files=files):
        labels.append(label.numpy())
        predictions.append(np.asarray(model(features, training=False)).reshape(-1))
    return np.concatenate(predictions), np.concatenate(labels)


def _labels_and_items(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.dataset as ds

    table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["label", "item_id"])
    return np.asarray(table.column("label"), dtype=float), np.asarray(table.column("item_id"))


def check_window(train_days: int) -> None:
    """A window has a day to fit on and a last day to stop early on."""
    if train_days < 2:
        raise PipelineInputError(
            f"--train-days {train_days}: a replay window needs at least 2 days (the models stop early on its last)"
        )


def _fit(
    model,
    files: list[Path],
    settings: Settings,
    epochs: int,
    inputs,
    stop_on: list[Path] | None = None,
    cold: bool = False,
):
    """Trains `model` on `files` for `epochs` epochs, or, with `stop_on` (the files of a later day), until
    its AUC there stops improving (best epoch's weights kept); returns the seconds and the epochs run.
    cold: a fresh model, whose unreached embedding rows are zeroed (training.train.ZeroUnreachedRows)."""
    from training.dataset import make_dataset
    from training.train import ZeroUnreachedRows, early_stopping

    training = settings.training
    batch_size = settings.replay.batch_size or training.batch_size
    dataset = make_dataset(
        None,
        "train",
        inputs,
        batch_size,
        training.shuffle_buffer,
        training.seed,
        training.chunk_rows,
        files=files,
    )
    options: dict = {"callbacks": []}
    if stop_on:
        options["validation_data"] = make_dataset(None, "valid", inputs, batch_size, files=stop_on)
        options["callbacks"].append(early_stopping(training.early_stopping_patience))
    if cold:  # last: its on_train_end sees the weights early stopping restored
        options["callbacks"].append(ZeroUnreachedRows())
    started = time.perf_counter()
    history = model.fit(dataset, epochs=epochs, verbose=0, **options)
    return time.perf_counter() - started, len(history.epoch)


def _window_rate(files: list[Path]) -> tuple[int, int]:
    import pyarrow.dataset as ds

    table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["label"])
    return table.num_rows, int(np.asarray(table.column("label")).sum())


def _metrics(labels: np.ndarray, predictions: np.ndarray, train_rate: float, calibrated: bool = True) -> dict:
    from training.baselines import rank_scaled
    from training.metrics import binary_metrics

    if len(labels) == 0:
        return {"auc": None, "logloss": None, "calibration": None, "positive_rate": None}
    result = binary_metrics(labels, predictions if calibrated else rank_scaled(predictions), train_rate)
    if not calibrated:  # a count, not a probability
        result.update(logloss=None, calibration=None)
    return result


def _xgboost(samples, spec, transforms: dict, window: list[dt.date], settings: Settings):
    """Spark XGBoost fitted on the window (early stopping on its last day); the test day's probabilities."""
    import keras
    import xgboost as xgb
    from pyspark.sql import functions as F

    from features import gbdt

    features = gbdt.dense_features(spec, transforms)
    rows = samples.where(F.col("event_date").isin([d.isoformat() for d in window]))
    dense = gbdt.dense_frame(
        rows.withColumn("is_valid", F.col("event_date") == F.lit(window[-1].isoformat())),
        features,
        ["label", "weight", "is_valid"],
    )
    started = time.perf_counter()
    booster = gbdt.train_booster(dense, features, settings.gbdt)
    seconds = time.perf_counter() - started
    from training.feature_layers import FeatureEncoders

    encoders = FeatureEncoders(spec, transforms)
    matrix = keras.Model(
        encoders.inputs,
        encoders.gbdt_matrix(
            [{"name": f.name, "vocabulary": list(f.vocabulary) if f.vocabulary is not None else None} for f in features]
        ),
    )
    return (lambda f, training=False: booster.predict(xgb.DMatrix(np.asarray(matrix(f)), missing=np.nan))), seconds


def replay(
    spark,
    tables,
    config: Settings | dict,
    days: list[dt.date],
    train_days: int,
    models: list[str] | None = None,
    warm_start: bool = False,
) -> dict:
    import keras
    from pyspark.sql import functions as F

    from features.transforms import fit_transforms
    from jobs.build_samples import build_samples
    from training.feature_layers import FeatureEncoders
    from training.inputs import model_inputs
    from training.models import build_model
    from training.train import compile_model, steps_per_execution

    settings = as_settings(config)
    home = settings.paths.artifacts_home(tables.root)
    models = list(models or settings.replay.models)
    check_window(train_days)
    if "gbdt_lr" in models:
        raise PipelineInputError(
            "gbdt_lr is not replayed (it needs a booster per day): choose among lr, wide_deep, deepfm"
        )
    spec, inputs = load_spec(), model_inputs(load_spec())
    first = days[0] - dt.timedelta(days=train_days)
    sample_days = [first + dt.timedelta(days=i) for i in range((days[-1] - first).days + 1)]
    manifest = build_samples(spark, tables, settings, sample_days)  # once for the whole replay
    version = manifest["samples_version"]
    run = new_run(
        "replay",
        samples_version=version,
        input_versions={"samples": version},
        train_days=train_days,
        warm_start=warm_start,
        models=models,
    )
    target = replay_dir(home, run["run_id"])
    shards = target / "parquet"
    samples = tables.read("samples", version=version, partitions=sample_days).withColumn(
        "event_date", F.col("event_date").cast("string")
    )
    samples.write.mode("overwrite").partitionBy("event_date").parquet(artifacts.spark_uri(shards))

    rows: list[dict] = []
    warm_models: dict[str, Any] = {}  # model name -> the Keras model carried to the next day
    for index, day in enumerate(days):
        window = [day - dt.timedelta(days=n) for n in range(train_days, 0, -1)]
        train_files, test_files = day_files(shards, window), day_files(shards, [day])
        train_rows, train_positives = _window_rate(train_files) if train_files else (0, 0)
        if not train_files or not test_files or train_positives in (0, train_rows):
            print(
                f"[replay] {day}: skipped ({train_rows} train rows, {train_positives} positives, "
                f"{len(test_files)} test files)"
            )
            continue
        train_rate = train_positives / train_rows
        window_frame = samples.where(F.col("event_date").isin([d.isoformat() for d in window]))
        transforms = fit_transforms(window_frame, spec, settings.samples.quantile_relative_error)
        base = {
            "run_id": run["run_id"],
            "replay_date": day,
            "samples_version": version,
            "train_days": train_days,
            "train_rows": train_rows,
            "train_positives": train_positives,
        }

        def record(model: str, mode: str, predictions, labels, seconds, calibrated=True):
            m = _metrics(labels, predictions, train_rate, calibrated)
            rows.append(
                {
                    **base,
                    "model": model,
                    "mode": mode,
                    "test_rows": int(len(labels)),
                    "test_positives": int(labels.sum()),
                    "auc": m["auc"],
                    "logloss": m["logloss"],
                    "calibration": m["calibration"],
                    "train_seconds": seconds,
                }
            )

        for name in models:
            params = settings.models.params(name)
            if params.initial_bias is None:
                params = params.model_copy(update={"initial_bias": math.log(train_rate / (1 - train_rate))})
            keras.utils.set_random_seed(settings.training.seed)
            cold = compile_model(
                build_model(name, FeatureEncoders(spec, transforms), params, None),
                params,
                steps_per_execution(settings.training.steps_per_execution, None, settings.training.batch_size),
                settings.training.train_metrics,
            )
            fit_files, stop_files = day_files(shards, window[:-1]), day_files(shards, window[-1:])
            seconds, epochs = _fit(
                cold,
                fit_files or stop_files,
                settings,
                settings.replay.max_epochs,
                inputs,
                fit_files and stop_files,
                cold=True,
            )
            predictions, labels = _score(cold, test_files, inputs)
            record(name, "cold", predictions, labels, seconds)
            print(f"[replay] {day}: {name}/cold {epochs} epochs")
            if warm_start:
                if name not in warm_models:  # the first day: the cold model is the starting point
                    warm, seconds = cold, seconds
                else:
                    warm = warm_models[name]
                    newest = day_files(shards, window[-settings.replay.warm_days :])
                    seconds = _fit(warm, newest, settings, settings.replay.warm_epochs, inputs)[0] if newest else 0.0
                warm_models[name] = warm
                predictions, labels = _score(warm, test_files, inputs)
                record(name, "warm", predictions, labels, seconds)
        popularity, (labels, items) = item_popularity(train_files), _labels_and_items(test_files)
        record(
            POPULARITY,
            "cold",
            np.array([popularity.get(int(i), 0.0) for i in items], float),
            labels,
            0.0,
            calibrated=False,
        )
        if settings.replay.xgboost:
            scorer, seconds = _xgboost(samples, spec, transforms, window, settings)
            predictions, labels = _score(scorer, test_files, inputs)
            record(XGBOOST, "cold", predictions, labels, seconds)
        print(
            f"[replay] {day}: "
            + ", ".join(
                f"{r['model']}/{r['mode']} {r['auc']:.4f}"
                for r in rows
                if r["replay_date"] == day and r["auc"] is not None
            )
        )
    if not rows:
        raise PipelineInputError(f"no day of {days[0]}..{days[-1]} had samples to test and a window with both labels")
    summary = summarize(rows, models, warm_start)
    table_version = write_metrics(spark, tables, rows, run)
    write_report(target, rows, summary, run)
    artifacts.write_json_atomically(
        target / "metrics.json", {**run, "replay_metrics_version": table_version, "summary": summary, "rows": rows}
    )
    return {
        **run,
        "rows": rows,
        "summary": summary,
        "report": str(target / "report.md"),
        "replay_metrics_version": table_version,
    }


def summarize(rows: list[dict], models: list[str], warm_start: bool) -> dict:
    by: dict[tuple[str, str], dict[dt.date, dict]] = {}  # (model, mode) -> replay day -> row
    for r in rows:
        by.setdefault((r["model"], r["mode"]), {})[r["replay_date"]] = r
    summary: dict[str, dict[str, Any]] = {
        "mean_auc": {f"{m}/{mode}": _mean([r["auc"] for r in days.values()]) for (m, mode), days in by.items()},
        "mean_train_seconds": {
            f"{m}/{mode}": _mean([r["train_seconds"] for r in days.values()]) for (m, mode), days in by.items()
        },
    }
    if warm_start:
        summary["warm_minus_cold_auc"] = {}
        for m in models:
            cold, warm = by.get((m, "cold"), {}), by.get((m, "warm"), {})
            shared = sorted(set(cold) & set(warm))[1:]  # the first day's warm model is the cold one
            summary["warm_minus_cold_auc"][m] = {
                **paired_difference([warm[d]["auc"] for d in shared], [cold[d]["auc"] for d in shared]),
                "warm_train_seconds": _mean([warm[d]["train_seconds"] for d in shared]),  # same days as the AUCs
                "cold_train_seconds": _mean([cold[d]["train_seconds"] for d in shared]),
            }
    return summary


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def write_metrics(spark, tables, rows: list[dict], run: dict) -> int:
    from pyspark.sql import types as T

    schema = T.StructType(
        [
            T.StructField("run_id", T.StringType()),
            T.StructField("replay_date", T.DateType()),
            T.StructField("model", T.StringType()),
            T.StructField("mode", T.StringType()),
            T.StructField("samples_version", T.LongType()),
            T.StructField("train_days", T.IntegerType()),
            T.StructField("train_rows", T.LongType()),
            T.StructField("train_positives", T.LongType()),
            T.StructField("test_rows", T.LongType()),
            T.StructField("test_positives", T.LongType()),
            T.StructField("auc", T.DoubleType()),
            T.StructField("logloss", T.DoubleType()),
            T.StructField("calibration", T.DoubleType()),
            T.StructField("train_seconds", T.DoubleType()),
        ]
    )
    frame = spark.createDataFrame([tuple(r[f.name] for f in schema.fields) for r in rows], schema)
    return tables.append(
        REPLAY_TABLE, frame, "replay_date", {k: run[k] for k in ("job", "run_id", "code_version", "input_versions")}
    )


def write_report(target: Path, rows: list[dict], summary: dict, run: dict) -> None:
    from training.report import plt

    series: dict[str, list[tuple]] = {}
    for r in rows:
        series.setdefault(f"{r['model']}/{r['mode']}", []).append((r["replay_date"], r["auc"]))
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for label, points in sorted(series.items()):
        points = sorted(p for p in points if p[1] is not None)
        axis.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            markersize=3,
            label=label,
            linestyle="--" if label.endswith("/warm") else "-",
        )
    axis.set_xlabel("test day")
    axis.set_ylabel("AUC")
    axis.set_title(f"Replay: train on the {run['train_days']} days before, test on the day")
    axis.legend(fontsize=7)
    figure.autofmt_xdate()
    target.mkdir(parents=True, exist_ok=True)
    figure.savefig(target / "per_day_auc.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    lines = [
        f"# Replay {run['run_id']} (samples v{run['samples_version']}, {run['train_days']}-day windows)",
        "",
        "| model/mode | mean AUC | mean train s/day |",
        "|---|---|---|",
    ]
    for key, auc in summary["mean_auc"].items():
        lines.append(f"| {key} | {_fmt(auc)} | {_fmt(summary['mean_train_seconds'][key], 1)} |")
    for model, d in summary.get("warm_minus_cold_auc", {}).items():
        lines.append(
            f"\n- {model}: warm - cold AUC {_fmt(d['mean'])} ± {_fmt(d['standard_error'])} (standard "
            f"error over {d['days']} days; the first day's warm model is the cold one and is left out); "
            f"training {_fmt(d['warm_train_seconds'], 1)} s/day warm vs {_fmt(d['cold_train_seconds'], 1)} "
            f"s/day cold on those days"
        )
    lines += [
        "",
        "| day | model/mode | train rows | test rows | AUC | logloss | calibration | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["replay_date"], r["model"], r["mode"])):
        lines.append(
            f"| {r['replay_date']} | {r['model']}/{r['mode']} | {r['train_rows']} | {r['test_rows']} | "
            f"{_fmt(r['auc'])} | {_fmt(r['logloss'])} | {_fmt(r['calibration'])} | "
            f"{_fmt(r['train_seconds'], 1)} |"
        )
    lines += ["", "![per-day AUC](per_day_auc.png)", ""]
    (target / "report.md").write_text("\n".join(lines))


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_summary(result: dict) -> str:
    lines = [
        f"replay {result['run_id']} on samples v{result['samples_version']}: {len(result['rows'])} rows in "
        f"{REPLAY_TABLE} (version {result['replay_metrics_version']}), report {result['report']}"
    ]
    for key, auc in result["summary"]["mean_auc"].items():
        lines.append(
            f"{key:<36} mean AUC {_fmt(auc)}, train {_fmt(result['summary']['mean_train_seconds'][key], 1)} s/day"
        )
    for model, d in result["summary"].get("warm_minus_cold_auc", {}).items():
        lines.append(
            f"{model}: warm - cold AUC {_fmt(d['mean'])} ± {_fmt(d['standard_error'])} over {d['days']} days; "
            f"training {_fmt(d['warm_train_seconds'], 1)} s/day warm vs {_fmt(d['cold_train_seconds'], 1)} cold"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["replay", "--spark-submit", *sys.argv[1:]]))
