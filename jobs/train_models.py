"""Train the TensorFlow ranking models on the samples' Parquet shards (no Spark needed).

    recpipe train --config conf/demo.yaml --model deepfm      (or lr, gbdt_lr, wide_deep, all)
    python jobs/train_models.py --config conf/demo.yaml --model all

Reads <home>/_artifacts/samples/v<N>/ (shards, transforms.json, manifest.json) and, for gbdt_lr,
<home>/_artifacts/gbdt/v<N>/; writes <home>/_artifacts/models/<model>/v<N>/:
    model.keras      the trained model (raw features in, probability out; preprocessing in the graph)
    summary.json     parameters, data versions, epochs, best valid AUC, examples/s
    history.json     per-epoch loss on train and loss/AUC/PR AUC on valid (learning curves; train AUC too
                     with training.train_metrics)
    checkpoints/     best model so far (the core on encoded views when training.encode_in_input_pipeline)
    tensorboard/     logs for `tensorboard --logdir`
The directory is built beside its final place and renamed in: a rerun replaces it whole.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # started as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.errors import PipelineInputError
from features.feature_spec import load_spec
from jobs import artifacts
from jobs.run_info import new_run, new_run_id
from jobs.settings import Settings, as_settings

_log = logging.getLogger(__name__)


def load_training_inputs(home: str, samples_version: int | None, needs_gbdt: bool) -> dict:
    version = artifacts.latest_samples_version(home) if samples_version is None else samples_version
    source = artifacts.samples_dir(home, version)
    hint = "run recpipe samples first"
    loaded = {
        "version": version,
        "source": source,
        "manifest": artifacts.read_json(source / "manifest.json", hint),
        "transforms": artifacts.read_json(source / "transforms.json", hint)["features"],
        "gbdt": None,
    }
    if needs_gbdt:
        trees = artifacts.gbdt_dir(home, version)
        hint = f"run recpipe gbdt --samples-version {version} first"
        loaded["gbdt"] = {
            "trees": artifacts.read_json(trees / "trees.json", hint),
            "features": artifacts.read_json(trees / "features.json", hint),
            "metrics": artifacts.read_json(trees / "metrics.json", hint),
        }
        loaded["gbdt"]["leaf_values"], loaded["gbdt"]["base_margin"] = _leaf_values(trees / "booster.json")
    return loaded


def _leaf_values(path: Path) -> tuple[list[list[float]], float]:
    import xgboost as xgb

    from features.gbdt_trees import leaf_values_from_booster

    booster = xgb.Booster()
    booster.load_model(str(path))
    return leaf_values_from_booster(booster)


def with_initial_bias(params, manifest: dict):
    """`params` with the global bias's start: as configured, or (none configured) the logit of the train
    split's positive rate, so a model starts at the base rate (recpipe train and recpipe tune's trials)."""
    if params.initial_bias is not None:
        return params
    train_split = manifest["splits"]["train"]
    rate = min(max(train_split["positives"] / max(train_split["rows"], 1), 1e-4), 1 - 1e-4)
    return params.model_copy(update={"initial_bias": math.log(rate / (1 - rate))})


def build_for_training(name: str, spec, inputs: dict, params, training) -> tuple:
    """(raw-feature model to save, compiled model to fit, train dataset, valid dataset, seconds the train
    dataset took to build). With `training.encode_in_input_pipeline` the fitted model is the core of
    `training.models.build_split`, the datasets carry encoded features and the raw-feature model wraps the
    same weights; within `training.keep_encoded_max_mb` the train split is kept encoded by its first epoch
    (when more than one epoch will run) and the valid split cached."""
    from training.dataset import encoded_row_bytes, make_dataset
    from training.feature_layers import FeatureEncoders
    from training.inputs import model_inputs
    from training.models import build_model, build_split
    from training.train import compile_model, steps_per_execution

    rows = inputs["manifest"]["splits"]["train"]["rows"]
    encode, steps = None, steps_per_execution(training.steps_per_execution, rows, training.batch_size)
    if training.encode_in_input_pipeline:
        split = build_split(name, spec, inputs["transforms"], params, inputs["gbdt"])
        trained = compile_model(split.core, params, steps, training.train_metrics)
        model, encode = split.full, split.preprocessing
    else:
        model = trained = compile_model(
            build_model(name, FeatureEncoders(spec, inputs["transforms"]), params, inputs["gbdt"]),
            params,
            steps,
            training.train_metrics,
        )
    shards, batch = inputs["source"] / "parquet", training.batch_size
    keep = keep_valid = False
    if encode is not None:  # within the budget: the train split kept (if it is read twice), then valid
        row_mib = encoded_row_bytes(encode) / 2**20
        size, valid_rows = rows * row_mib, inputs["manifest"]["splits"]["valid"]["rows"]
        keep = training.max_epochs > 1 and size <= training.keep_encoded_max_mb  # one epoch: nothing to replay
        keep_valid = (size if keep else 0.0) + valid_rows * row_mib <= training.keep_encoded_max_mb
        _log.info(
            "%s: train split %s: %s rows, %.0f MiB encoded; valid split %s (training.keep_encoded_max_mb %s)",
            name,
            "kept in memory by its first epoch" if keep else "streamed every epoch",
            f"{rows:,}",
            size,
            "kept after its first pass" if keep_valid else "streamed every epoch",
            f"{training.keep_encoded_max_mb:g}",
        )
    started = time.perf_counter()
    train = make_dataset(
        shards,
        "train",
        model_inputs(spec),
        batch,
        training.shuffle_buffer,
        training.seed,
        training.chunk_rows,
        encode=encode,
        keep_encoded=keep,
    )
    train_ready = time.perf_counter() - started  # counted in the first epoch (and its start-up)
    valid = make_dataset(
        shards,
        "valid",
        model_inputs(spec),
        4 * batch,
        chunk_rows=training.chunk_rows,
        encode=encode,
        keep_encoded=keep_valid,
    )
    return model, trained, train, valid, train_ready


def previous_model(home: str, name: str, samples_version: int) -> int | None:
    """The newest samples version below `samples_version` on which `name` was trained, or None."""
    root = artifacts.model_dir(home, name, 0).parent
    versions = [int(p.name[1:]) for p in root.glob("v*") if p.name[1:].isdigit() and (p / "model.keras").exists()]
    older = [v for v in versions if v < samples_version]
    return max(older) if older else None


def warm_start(name: str, model, home: str, start: int) -> None:
    """Sets `model` (built on the inputs of samples version `start`) to the weights of the model trained
    on that version; a model built with other parameters than the saved one is refused in one line."""
    from training.saved_models import load_trained

    saved = artifacts.model_dir(home, name, start) / "model.keras"
    try:
        model.set_weights(load_trained(saved).get_weights())  # checks count and shapes
    except ValueError as error:
        raise PipelineInputError(
            f"{name}: the model trained on samples v{start} ({saved}) does not fit what models.{name} builds now "
            f"(changed parameters?): train without warm start ({str(error).strip().splitlines()[0][:160]})"
        ) from None


def train_one(name: str, config: Settings | dict, inputs: dict) -> dict:
    import keras

    from training.train import fit, start_counts

    settings = as_settings(config)
    run_id = new_run_id()
    spec, training = load_spec(), settings.training
    home = settings.paths.artifacts_home()
    params = with_initial_bias(settings.models.params(name), inputs["manifest"])
    keras.utils.set_random_seed(training.seed)
    start = previous_model(home, name, inputs["version"]) if training.warm_start else None
    built = inputs
    if start is not None:  # the older model's preprocessing (and trees, for gbdt_lr) with the new rows
        before = load_training_inputs(home, start, needs_gbdt=name == "gbdt_lr")
        built = {**inputs, "transforms": before["transforms"], "gbdt": before["gbdt"]}
    model, trained, train, valid, train_ready = build_for_training(name, spec, built, params, training)
    if start is not None:
        warm_start(name, model, home, start)
        _log.info("%s: warm start from the model trained on samples v%s", name, start)
    elif training.warm_start:
        _log.info("%s: no model on a samples version before v%s: trained cold", name, inputs["version"])

    target = artifacts.model_dir(home, name, inputs["version"])
    staged = artifacts.staging_dir(target)
    _log.info("%s: samples v%s, %s parameters", name, inputs["version"], f"{model.count_params():,}")
    rows = inputs["manifest"]["splits"]["train"]["rows"]
    warm = start is not None
    result = fit(
        trained,
        train,
        valid,
        staged,
        training,
        rows,
        start_counts(params, warm),
        zero_unreached_rows=not warm,
        input_seconds=train_ready,
    )
    if result["kept_start"]:
        _log.info(
            "%s: no epoch beat the start's valid AUC %.4f: the starting weights are kept", name, result["start_val_auc"]
        )
    if training.recalibrate == "valid":  # the global bias is shared by the core and the saved model
        from training.calibration import recalibrate

        result["recalibration"] = recalibrate(trained, valid)
        _log.info("%s: recalibrated on valid: %s", name, result["recalibration"])
    model.save(staged / "model.keras")
    manifest = inputs["manifest"]
    run = new_run(
        "train",
        run_id,
        model=name,
        samples_version=inputs["version"],
        input_versions={"samples": inputs["version"], **manifest.get("input_versions", {})},
    )
    summary = {
        **run,
        "params": params.model_dump(mode="json"),
        "training": training.model_dump(exclude={"models"}),
        "parameters": model.count_params(),
        "cut_points": manifest["cut_points"],
        "splits": manifest["splits"],
        **{k: v for k, v in result.items() if k != "history"},
    }
    if inputs.get("tuned"):
        summary["tuned_from"] = inputs["tuned"][name]
    if training.warm_start:  # the samples version whose model and preprocessing it started from (None: cold)
        summary["warm_started_from"] = start
        summary["input_versions"]["preprocessing_samples"] = start if start is not None else inputs["version"]
    if inputs["gbdt"] is not None:
        summary["gbdt_run"] = inputs["gbdt"]["metrics"].get("run_id")
    artifacts.write_json_atomically(staged / "summary.json", summary)
    artifacts.write_json_atomically(staged / "history.json", result["history"])
    artifacts.replace_dir(staged, target)
    return summary


def train_models(config: Settings | dict, models: list[str], samples_version: int | None = None) -> dict:
    settings = as_settings(config)
    inputs = load_training_inputs(settings.paths.artifacts_home(), samples_version, needs_gbdt="gbdt_lr" in models)
    if settings.training.use_tuned:  # models.<m> replaced by what recpipe tune chose for these samples
        from jobs.tune import with_tuned_models

        settings, inputs["tuned"] = with_tuned_models(settings, models, inputs["version"])
    started = time.time()
    trained = {name: train_one(name, settings, inputs) for name in models}
    return {"samples_version": inputs["version"], "seconds": time.time() - started, "models": trained}


def format_summary(result: dict) -> str:
    lines = [
        f"models on samples v{result['samples_version']}",
        f"{'model':<10} {'params':>10} {'epochs':>6} {'best':>4} {'valid auc':>9} {'examples/s':>10}",
    ]
    for name, s in result["models"].items():
        rate = f"{s['train_examples_per_second']:.0f}" if s["train_examples_per_second"] else "-"
        lines.append(
            f"{name:<10} {s['parameters']:>10,} {s['epochs']:>6} {s['best_epoch']:>4} "
            f"{s['best_val_auc']:>9.4f} {rate:>10}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
