"""Seeded hyperparameter search on the valid split (Optuna, TPE): search spaces, the study driver and the
two kinds of objective (a Keras model fitted on train and scored on valid; XGBoost's own parameters with a
local `xgboost.train` on the GBDT's dense inputs).

The caller (jobs/tune.py) reads the files and writes the result; nothing here opens the test split: the
objectives only get the train and valid data they are handed.

    trials, stopped_by = run_study(objective, space, defaults, seed=7, trials=20, budget_seconds=900)

Every study starts with the configured defaults as its trial 0 (so the chosen parameters are never worse
than the defaults on valid and the report compares them), then TPE proposals seeded with `seed`. No trial
starts after the budget; a trial running when the budget ends stops at its next epoch or boosting round
and is marked `cut_by_budget`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

XGBOOST = "xgboost"  # the name `recpipe tune --model` gives XGBoost's own parameters (the gbdt stage)
XGBOOST_MAX_ROUNDS = 1000  # the cap of the rounds search; early stopping on valid logloss picks the rounds
HIDDEN_UNITS = {"64": [64], "128-64": [128, 64], "256-128-64": [256, 128, 64], "512-256-128": [512, 256, 128]}
L2_CHOICES = (0.0, 1e-7, 1e-6, 1e-5, 1e-4)


@dataclass(frozen=True)
class Choice:
    """One searched parameter: a float or int range (log scale when `log`), or categorical `values`."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    values: tuple | None = None

    def suggest(self, trial):
        if self.values is not None:
            return trial.suggest_categorical(self.name, list(self.values))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def keras_space(model: str) -> list[Choice]:
    """What is searched for a Keras model (jobs/settings.py models.<model>); epochs come from early stopping."""
    space = [Choice("learning_rate", 3e-4, 1e-2, log=True), Choice("l2", values=L2_CHOICES)]
    if model in ("lr", "gbdt_lr", "wide_deep"):  # the wide part: numerics as values only or also buckets;
        # none or all of the spec's crosses (a configured list of crosses is a third choice)
        space += [Choice("numeric_buckets", values=(False, True)), Choice("crosses", values=(False, True))]
    if model in ("wide_deep", "deepfm"):
        space += [
            Choice("embedding_dim", values=(4, 8, 16, 32)),
            Choice("dropout", 0.0, 0.6),
            Choice("hidden_units", values=tuple(HIDDEN_UNITS)),
            Choice("embedding_init_stddev", values=(None, 1e-4, 1e-2)),
        ]
    if model == "deepfm":  # DeepCTR's choice among them (bench/model_variants.py)
        space += [Choice("numeric_fm", values=(True, False))]
    if model == "gbdt_lr":  # init_from_gbdt: start at XGBoost's own prediction (strong trees, e.g. the demo)
        space += [Choice("leaf_l2", values=(0.0, 0.001, 0.01, 0.1)), Choice("init_from_gbdt", values=(False, True))]
    return space


def xgboost_space() -> list[Choice]:
    """XGBoost's own parameters (the gbdt stage's booster); rounds come from early stopping."""
    return [
        Choice("max_depth", 2, 8, integer=True),
        Choice("min_child_weight", 0.5, 50.0, log=True),
        Choice("subsample", 0.5, 1.0),
        Choice("colsample_bytree", 0.3, 1.0),
        Choice("reg_lambda", 0.1, 100.0, log=True),
        Choice("learning_rate", 0.01, 0.3, log=True),
    ]


def search_values(space: list[Choice], params: dict) -> dict:
    """The searched keys of a model's parameters, as the space spells them (hidden units as their name)."""
    values = {}
    for choice in space:
        value = params[choice.name]
        if choice.name == "hidden_units":
            value = "-".join(str(u) for u in value)
        elif choice.name == "crosses" and not isinstance(value, bool):  # a list of cross names
            value = ",".join(value)
        values[choice.name] = value
    return values


def as_params(values: dict) -> dict:
    """A trial's values as model parameters (hidden units back to a list, named crosses to a tuple)."""
    params = {k: (HIDDEN_UNITS[v] if k == "hidden_units" else v) for k, v in values.items()}
    crosses = values.get("crosses")
    if isinstance(crosses, str):
        params["crosses"] = tuple(crosses.split(","))
    return params


class BudgetClock:
    def __init__(self, budget_seconds: float):
        self.deadline = time.monotonic() + budget_seconds

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


def run_study(
    objective: Callable[[dict, BudgetClock], dict],
    space: list[Choice],
    defaults: dict,
    seed: int,
    trials: int | None,
    budget_seconds: float,
) -> tuple[list[dict], str]:
    """Trial 0 is `defaults` (the searched keys' configured values), then seeded TPE proposals until
    `trials` are done or the budget is spent. objective(values, clock) -> {"valid_auc": ..., ...} (more keys
    are kept); returns the trials in order ({number, params, valid_auc, seconds, ...}) and what stopped it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    clock = BudgetClock(budget_seconds)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(defaults, skip_if_exists=False)
    done: list[dict] = []

    def run(trial) -> float:
        values = {c.name: c.suggest(trial) for c in space}
        started = time.perf_counter()
        outcome = objective(values, clock)
        done.append(
            {
                "number": trial.number,
                "default": trial.number == 0,
                "params": values,
                **outcome,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        return outcome["valid_auc"]

    def stop_at_budget(study, trial):
        if clock.expired():
            study.stop()

    study.optimize(run, n_trials=trials, callbacks=[stop_at_budget])
    stopped_by = "trials" if trials is not None and len(done) >= trials else "budget"
    return done, stopped_by


def best_trial(trials: list[dict]) -> dict:
    """The highest valid AUC (the earliest on ties: the defaults win a tie)."""
    return max(trials, key=lambda t: (t["valid_auc"], -t["number"]))


# --- XGBoost on the dense GBDT inputs, read from the samples' Parquet shards ---


def dense_matrix(files: list, features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs float32 [rows, features], label, weight) of Parquet `files`, coded as the gbdt stage codes
    them (features.gbdt.dense_matrix: numerics as floats, strings as the index in their fitted vocabulary,
    unseen: its length, missing: NaN)."""
    from features.gbdt import training_arrays
    from training.inputs import read_shards

    return training_arrays(read_shards(files, [*[f.name for f in features], "label", "weight"]), features)


def xgboost_objective(train: tuple, valid: tuple, names: list[str], seed: int, early_stopping_rounds: int):
    """objective(values, clock) for run_study: xgboost.train (hist, one thread: deterministic) on `train`,
    early stopping on valid logloss (as the gbdt stage), scored by valid AUC at the best round."""
    import xgboost as xgb

    train_matrix = xgb.DMatrix(train[0], label=train[1], weight=train[2], missing=np.nan, feature_names=names)
    valid_matrix = xgb.DMatrix(valid[0], label=valid[1], weight=valid[2], missing=np.nan, feature_names=names)

    class StopAtBudget(xgb.callback.TrainingCallback):
        def __init__(self, clock: BudgetClock):
            super().__init__()
            self.clock, self.cut = clock, False

        def after_iteration(self, model, epoch, evals_log) -> bool:
            self.cut = self.clock.expired()
            return self.cut

    def objective(values: dict, clock: BudgetClock) -> dict:
        params = {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "nthread": 1,
            "seed": seed,
            **{k: v for k, v in values.items()},
        }
        budget = StopAtBudget(clock)
        booster = xgb.train(
            params,
            train_matrix,
            num_boost_round=XGBOOST_MAX_ROUNDS,
            evals=[(valid_matrix, "valid")],
            early_stopping_rounds=early_stopping_rounds,
            callbacks=[budget],
            verbose_eval=False,
        )
        rounds = (
            booster.best_iteration + 1 if booster.attr("best_iteration") is not None else booster.num_boosted_rounds()
        )
        predicted = booster.predict(valid_matrix, iteration_range=(0, rounds))
        return {"valid_auc": auc(valid[1], predicted), "rounds": rounds, "cut_by_budget": budget.cut}

    return objective


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC with ties counted half (the rank statistic, as pyspark.ml's evaluator)."""
    from scipy.stats import rankdata

    label = np.asarray(label) > 0.5
    positives, negatives = int(label.sum()), int((~label).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[label].sum() - positives * (positives + 1) / 2) / (positives * negatives))


# --- Keras models ---


def keras_fit_valid_auc(
    model, train, valid, max_epochs: int, patience: int, clock: BudgetClock, start_is_a_candidate: bool = False
) -> dict:
    """Fit until valid AUC stops improving (patience epochs), `max_epochs` or the budget; the best epoch's
    valid AUC (the Keras AUC metric `recpipe train` stops on). start_is_a_candidate: as in
    training.train.fit, the starting weights' valid AUC counts as epoch 0. A cold start, as `recpipe
    train`'s: unreached embedding rows are zeroed before each validation (training.train.ZeroUnreachedRows)."""
    import warnings

    import keras

    from training.train import ZeroUnreachedRows, start_wins, valid_auc

    start = valid_auc(model, valid) if start_is_a_candidate else None

    class StopAtBudget(keras.callbacks.Callback):
        cut = False

        def on_epoch_end(self, epoch, logs=None):
            if clock.expired():
                self.cut = self.model.stop_training = True

    budget = StopAtBudget()
    warnings.filterwarnings("ignore", message=".*(shuffle=True. was passed|input ran out of data)")
    history = model.fit(
        train,
        validation_data=valid,
        epochs=max_epochs,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience),
            budget,
            ZeroUnreachedRows(),
        ],
        verbose=0,
    )
    scores = [float(v) for v in history.history["val_auc"]]
    best = max(range(len(scores)), key=lambda i: scores[i])
    kept_start = start_wins(start, scores[best])
    return {
        "valid_auc": start if kept_start else scores[best],
        "best_epoch": 0 if kept_start else best + 1,
        "start_valid_auc": start,
        "epochs": len(scores),
        "cut_by_budget": budget.cut,
        "valid_auc_per_epoch": scores,
    }
