"""`recpipe tune`: a seeded hyperparameter search on the valid split; `recpipe train/gbdt --tuned` use it.

    recpipe tune --config conf/movielens.yaml --model deepfm --budget-minutes 15 [--trials 20] [--seed 7]
    recpipe tune --config C --model all --budget-minutes 15      (training.models and xgboost; budget split evenly)

Reads the samples' Parquet shards of the train and valid splits only (<home>/_artifacts/samples/v<N>/
parquet/split=train|valid; the test split is never opened) and, for gbdt_lr, the gbdt artefact. Writes
<home>/_artifacts/tuning/v<N>/<model>.json atomically: every trial's parameters and valid AUC, the
chosen parameters, the defaults' valid AUC, the samples version, seed, trials and budget.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # started as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.errors import PipelineInputError
from jobs import artifacts
from jobs.run_info import new_run
from jobs.settings import MODEL_NAMES, GbdtSettings, Settings, as_settings
from training import tuning
from training.tuning import XGBOOST

TUNABLE = (*MODEL_NAMES, XGBOOST)


def tuning_file(home: str | Path, samples_version: int, model: str) -> Path:
    return artifacts.artifacts_root(home) / "tuning" / f"v{samples_version}" / f"{model}.json"


def resolve_tunable(config: Settings, requested: str) -> list[str]:
    """'all' (training.models, then xgboost), one name or a comma-separated list; unknown names exit 2."""
    if requested == "all":
        return [*config.training.models, XGBOOST]
    names = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if n not in TUNABLE]
    if unknown or not names:
        raise PipelineInputError(
            f"unknown model '{(unknown or [requested])[0]}': choose one of {', '.join(TUNABLE)} or all"
        )
    return list(dict.fromkeys(names))


def _covering(space: list, defaults: dict) -> list:
    """The space widened to include the configured defaults (trial 0 must be a point of it)."""
    widened = []
    for choice in space:
        value = defaults[choice.name]
        if choice.values is not None and value not in choice.values:
            choice = tuning.Choice(choice.name, values=(*choice.values, value))
        elif choice.values is None and not choice.low <= value <= choice.high:
            choice = tuning.Choice(
                choice.name, min(choice.low, value), max(choice.high, value), choice.log, choice.integer
            )
        widened.append(choice)
    return widened


def keras_objective(name: str, settings: Settings, inputs: dict):
    """objective(values, clock): models.<name> with `values` replacing its keys, trained on train and scored
    on valid (training/tuning.py keras_fit_valid_auc); also bench/model_variants.py's runs. A trial builds
    its model and datasets as recpipe train does (jobs/train_models.build_for_training: the core trained on
    encoded batches, a train split kept by its first epoch), so `recpipe train --tuned` reproduces its valid AUC."""
    import keras

    from features.feature_spec import load_spec
    from jobs.train_models import build_for_training, with_initial_bias
    from training.dataset import split_files
    from training.train import start_counts

    spec, training = load_spec(), settings.training
    shards = inputs["source"] / "parquet"
    inputs["files_read"] = sorted(str(f) for split in ("train", "valid") for f in split_files(shards, split))
    base = with_initial_bias(settings.models.params(name), inputs["manifest"])

    def objective(values: dict, clock) -> dict:
        params = type(base).model_validate({**base.model_dump(), **tuning.as_params(values)})
        keras.utils.set_random_seed(training.seed)
        keras.backend.clear_session()
        _, trained, train, valid, _ = build_for_training(name, spec, inputs, params, training)
        return tuning.keras_fit_valid_auc(
            trained,
            train,
            valid,
            training.max_epochs,
            training.early_stopping_patience,
            clock,
            start_is_a_candidate=start_counts(params),  # as recpipe train
        )

    return objective


def _xgboost_objective(settings: Settings, inputs: dict, seed: int):
    from features.feature_spec import load_spec
    from features.gbdt import dense_features
    from training.inputs import split_files

    features = dense_features(load_spec(), inputs["transforms"])
    shards = inputs["source"] / "parquet"
    files = {split: split_files(shards, split) for split in ("train", "valid")}
    inputs["files_read"] = sorted({str(f) for split in files.values() for f in split})
    train, valid = (tuning.dense_matrix(files[s], features) for s in ("train", "valid"))
    names = [f.name for f in features]
    return tuning.xgboost_objective(train, valid, names, seed, settings.gbdt.early_stopping_rounds)


def tune_one(
    model: str, settings: Settings, version: int, budget_minutes: float, trials: int | None, seed: int
) -> dict:
    from jobs.train_models import load_training_inputs

    run = new_run("tune", model=model, samples_version=version, input_versions={"samples": version})
    inputs = load_training_inputs(settings.paths.artifacts_home(), version, needs_gbdt=model == "gbdt_lr")
    if model == XGBOOST:
        space = tuning.xgboost_space()
        configured = settings.gbdt.model_dump()
        objective = _xgboost_objective(settings, inputs, seed)
    else:
        space = tuning.keras_space(model)
        configured = settings.models.params(model).model_dump()
        objective = keras_objective(model, settings, inputs)
    defaults = tuning.search_values(space, configured)
    space = _covering(space, defaults)
    started = time.perf_counter()
    done, stopped_by = tuning.run_study(objective, space, defaults, seed, trials, budget_minutes * 60)
    best = tuning.best_trial(done)
    chosen = tuning.as_params(best["params"])
    if model == XGBOOST:
        chosen["n_estimators"] = best["rounds"]  # the rounds early stopping found (the stage still stops early)
    document = {
        **run,
        "model": model,
        "samples_version": version,
        "seed": seed,
        "trials_requested": trials,
        "budget_minutes": budget_minutes,
        "stopped_by": stopped_by,
        "seconds": round(time.perf_counter() - started, 3),
        "metric": "valid_auc",
        "splits_read": ["train", "valid"],
        "files_read": inputs["files_read"],
        "default": {"params": tuning.as_params(defaults), "valid_auc": done[0]["valid_auc"]},
        "chosen": {"params": chosen, "valid_auc": best["valid_auc"], "trial": best["number"]},
        "trials": done,
    }
    if model != XGBOOST:
        document["training"] = settings.training.model_dump(include={"batch_size", "max_epochs", "seed"})
    artifacts.write_json_atomically(tuning_file(settings.paths.artifacts_home(), version, model), document)
    return document


def tune(
    config: Settings | dict,
    models: list[str],
    budget_minutes: float,
    trials: int | None = None,
    samples_version: int | None = None,
    seed: int | None = None,
) -> dict:
    settings = as_settings(config)
    if not (math.isfinite(budget_minutes) and budget_minutes > 0):
        raise PipelineInputError(f"--budget-minutes must be a positive number, not {budget_minutes}")
    home = settings.paths.artifacts_home()
    version = artifacts.latest_samples_version(home) if samples_version is None else samples_version
    if not (artifacts.samples_dir(home, version) / "manifest.json").exists():
        raise PipelineInputError(f"no samples version {version} under {artifacts.samples_dir(home, version)}")
    if "gbdt_lr" in models and not (artifacts.gbdt_dir(home, version) / "trees.json").exists():
        raise PipelineInputError(f"gbdt_lr needs the gbdt stage: run recpipe gbdt --samples-version {version} first")
    seed = settings.training.seed if seed is None else seed
    share = budget_minutes / len(models)
    return {
        "samples_version": version,
        "models": {m: tune_one(m, settings, version, share, trials, seed) for m in models},
        "files": {m: str(tuning_file(home, version, m)) for m in models},
    }


def tuned_params(home: str | Path, samples_version: int, model: str, flag: str) -> tuple[dict, Path]:
    """The parameters `recpipe tune` chose for `model` on these samples; absent: a one-line error (exit 2)."""
    path = tuning_file(home, samples_version, model)
    if not path.exists():
        raise PipelineInputError(
            f"{flag}: no tuned parameters for {model} on samples v{samples_version} ({path} missing): run "
            f"recpipe tune --model {model} --samples-version {samples_version} first, or train without {flag}"
        )
    document = artifacts.read_json(path, "run recpipe tune first")
    if document.get("samples_version") != samples_version:
        raise PipelineInputError(
            f"{path} was tuned on samples v{document.get('samples_version')}, not v{samples_version}"
        )
    return document["chosen"]["params"], path


def with_tuned_models(settings: Settings, models: list[str], samples_version: int) -> tuple[Settings, dict]:
    """settings with models.<m> replaced by the tuned parameters of every model in `models`, and the files."""
    sections, used = {}, {}
    for model in models:
        chosen, path = tuned_params(
            settings.paths.artifacts_home(), samples_version, model, "training.use_tuned/--tuned"
        )
        params = settings.models.params(model)
        sections[model] = type(params).model_validate({**params.model_dump(), **chosen})
        used[model] = str(path)
    models_section = settings.models.model_copy(update=sections)
    return settings.model_copy(update={"models": models_section}), used


def with_tuned_gbdt(settings: Settings, samples_version: int) -> tuple[Settings, str]:
    chosen, path = tuned_params(settings.paths.artifacts_home(), samples_version, XGBOOST, "gbdt.use_tuned/--tuned")
    gbdt = GbdtSettings.model_validate({**settings.gbdt.model_dump(), **chosen})
    return settings.model_copy(update={"gbdt": gbdt}), str(path)


def format_summary(result: dict) -> str:
    lines = [f"tuning on samples v{result['samples_version']} (valid split only; test never read)"]
    for model, doc in result["models"].items():
        lines.append(
            f"{model}: {len(doc['trials'])} trials in {doc['seconds']:.0f}s (stopped by {doc['stopped_by']}), "
            f"seed {doc['seed']}, budget {doc['budget_minutes']:.2f} min"
        )
        keys = list(doc["trials"][0]["params"])
        lines.append(f"  {'trial':>5} {'valid auc':>9}  " + "  ".join(keys))
        for trial in doc["trials"]:
            mark = "*" if trial["number"] == doc["chosen"]["trial"] else " "
            label = "default" if trial["default"] else str(trial["number"])
            values = "  ".join(_short(trial["params"][k]) for k in keys)
            lines.append(f" {mark}{label:>5} {trial['valid_auc']:>9.4f}  {values}")
        gain = doc["chosen"]["valid_auc"] - doc["default"]["valid_auc"]
        lines.append(
            f"  chosen: trial {doc['chosen']['trial']}, valid AUC {doc['chosen']['valid_auc']:.4f} "
            f"(default {doc['default']['valid_auc']:.4f}, {gain:+.4f})"
        )
        lines.append(f"  wrote {result['files'][model]}")
    return "\n".join(lines)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["tune", *sys.argv[1:]]))
