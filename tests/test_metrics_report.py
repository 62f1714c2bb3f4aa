"""training.metrics (AUC, NE, GAUC, calibration, curve helpers) and training.report (report.md, PNGs, table)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.metrics import binary_metrics, calibration_curve, gauc, pr_points, roc_points
from training.report import format_table, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ["roc.png", "pr.png", "calibration.png", "learning_curves.png"]


def _informative_sample(rng: np.random.Generator, rows: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the predictions themselves: a calibrated, informative predictor."""
    predictions = rng.beta(1, 6, size=rows)
    labels = (rng.random(rows) < predictions).astype(int)
    return labels, predictions


def _grouped_sample(rng: np.random.Generator, rows: int = 3000, users: int = 60):
    """Random users (some with one class only), predictions with many ties, integer weights."""
    user_ids = np.array([f"u{i}" for i in rng.integers(0, users, size=rows)])
    labels = (rng.random(rows) < 0.3).astype(int)
    labels[user_ids == "u0"] = 1  # one-class users: excluded from GAUC
    labels[user_ids == "u1"] = 0
    predictions = np.round(0.5 * rng.random(rows) + 0.3 * labels, 1)  # 1 decimal: lots of ties
    weights = rng.integers(1, 5, size=rows).astype(float)
    return labels, predictions, user_ids, weights


def _brute_force_gauc(labels, predictions, user_ids, weights=None) -> tuple[float, int]:
    weights = np.ones(len(labels)) if weights is None else weights
    aucs, user_weights = [], []
    for user in np.unique(user_ids):
        rows = user_ids == user
        if len(np.unique(labels[rows])) < 2:
            continue
        aucs.append(roc_auc_score(labels[rows], predictions[rows], sample_weight=weights[rows]))
        user_weights.append(weights[rows].sum())
    return float(np.average(aucs, weights=user_weights)), len(aucs)


# ----- normalized entropy, logloss, calibration


def test_ne_is_one_for_the_background_rate_and_below_one_for_an_informative_model():
    labels, predictions = _informative_sample(np.random.default_rng(0))
    train_rate = 0.2  # deliberately not the observed rate: NE must still be exactly 1
    constant = binary_metrics(labels, np.full(len(labels), train_rate), train_rate)
    informative = binary_metrics(labels, predictions, train_rate)
    assert constant["normalized_entropy"] == pytest.approx(1.0, abs=1e-12)
    assert informative["normalized_entropy"] < 0.95


def test_ne_and_logloss_match_a_hand_computed_example():
    labels = np.array([1, 0, 0, 1])
    predictions = np.array([0.8, 0.2, 0.4, 0.6])
    metrics = binary_metrics(labels, predictions, train_positive_rate=0.25)
    logloss = -(math.log(0.8) + math.log(0.8) + math.log(0.6) + math.log(0.6)) / 4
    background_logloss = -(2 * math.log(0.25) + 2 * math.log(0.75)) / 4  # p=0.25 against the observed labels
    assert metrics["logloss"] == pytest.approx(logloss, rel=1e-12)
    assert metrics["normalized_entropy"] == pytest.approx(logloss / background_logloss, rel=1e-12)
    assert metrics["positive_rate"] == 0.5
    assert metrics["mean_prediction"] == pytest.approx(0.5)
    assert metrics["calibration"] == pytest.approx(1.0)
    assert metrics["auc"] == 1.0
    assert metrics["rows"] == 4
    assert "gauc" not in metrics and "gauc_users" not in metrics


def test_logloss_clips_certain_wrong_predictions():
    metrics = binary_metrics(np.array([1, 0]), np.array([0.0, 0.5]), train_positive_rate=0.5)
    assert metrics["logloss"] == pytest.approx((-math.log(1e-7) - math.log(0.5)) / 2, rel=1e-9)


def test_calibration_of_a_scaled_predictor():
    labels, predictions = _informative_sample(np.random.default_rng(1))
    base = binary_metrics(labels, predictions, 0.15)
    doubled = binary_metrics(labels, 2 * predictions, 0.15)
    halved = binary_metrics(labels, 0.5 * predictions, 0.15)
    assert base["calibration"] == pytest.approx(1.0, abs=0.05)  # labels drawn from the predictions
    assert doubled["calibration"] == pytest.approx(2 * base["calibration"])
    assert halved["calibration"] == pytest.approx(0.5 * base["calibration"])
    assert doubled["auc"] == pytest.approx(base["auc"])  # AUC ignores scale, logloss does not
    assert doubled["logloss"] > base["logloss"]


def test_one_class_gives_none_instead_of_raising():
    labels = np.zeros(10, dtype=int)
    metrics = binary_metrics(labels, np.linspace(0.1, 0.9, 10), 0.1, user_ids=np.arange(10) % 3)
    assert metrics["auc"] is None and metrics["pr_auc"] is None
    assert metrics["gauc"] is None and metrics["gauc_users"] == 0
    assert metrics["calibration"] is None  # no positives to compare with
    assert metrics["logloss"] > 0
    with pytest.raises(ValueError):
        roc_points(labels, np.linspace(0.1, 0.9, 10))


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="train_positive_rate"):
        binary_metrics(np.array([0, 1]), np.array([0.1, 0.9]), train_positive_rate=0.0)
    with pytest.raises(ValueError, match="length"):
        binary_metrics(np.array([0, 1]), np.array([0.1]), 0.5)
    with pytest.raises(ValueError, match="0/1"):
        binary_metrics(np.array([0, 2]), np.array([0.1, 0.9]), 0.5)


def test_weights_act_like_repeated_rows():
    labels, predictions, user_ids, weights = _grouped_sample(np.random.default_rng(2))
    weighted = binary_metrics(labels, predictions, 0.3, user_ids=user_ids, weights=weights)
    repeats = weights.astype(int)
    repeated = binary_metrics(
        np.repeat(labels, repeats), np.repeat(predictions, repeats), 0.3, user_ids=np.repeat(user_ids, repeats)
    )
    for key in ["positive_rate", "mean_prediction", "auc", "pr_auc", "logloss", "normalized_entropy", "gauc"]:
        assert weighted[key] == pytest.approx(repeated[key], rel=1e-9), key
    assert weighted["gauc_users"] == repeated["gauc_users"]
    assert weighted["rows"] == len(labels)


# ----- GAUC


@pytest.mark.parametrize("weighted", [False, True])
def test_gauc_equals_a_per_user_sklearn_loop(weighted):
    labels, predictions, user_ids, weights = _grouped_sample(np.random.default_rng(3))
    weights = weights if weighted else None
    expected, expected_users = _brute_force_gauc(labels, predictions, user_ids, weights)
    value, users = gauc(labels, predictions, user_ids, weights)
    assert users == expected_users == len(np.unique(user_ids)) - 2  # u0 and u1 have one class
    assert value == pytest.approx(expected, rel=1e-12)
    assert binary_metrics(labels, predictions, 0.3, user_ids=user_ids, weights=weights)["gauc"] == value


def test_gauc_with_integer_ids_and_unsorted_rows():
    rng = np.random.default_rng(4)
    user_ids = rng.integers(-5, 5, size=500) * 1000  # negative, sparse ids
    labels = rng.integers(0, 2, size=500)
    predictions = rng.integers(0, 4, size=500) / 4
    assert gauc(labels, predictions, user_ids)[0] == pytest.approx(_brute_force_gauc(labels, predictions, user_ids)[0])


def test_gauc_weights_users_by_row_count():
    labels = np.array([1, 0, 1, 0, 0, 0])
    predictions = np.array([0.9, 0.1, 0.1, 0.9, 0.8, 0.5])  # user a: AUC 1 on 2 rows; user b: AUC 0 on 4 rows
    user_ids = np.array(["a", "a", "b", "b", "b", "b"])
    assert gauc(labels, predictions, user_ids) == (pytest.approx(2 / 6), 2)


def test_gauc_none_when_no_user_has_both_classes():
    assert gauc(np.array([1, 0, 1]), np.array([0.2, 0.4, 0.6]), np.array([1, 2, 3])) == (None, 0)


# ----- curve helpers


def test_calibration_curve_equal_frequency_bins():
    predictions = np.arange(100)[::-1] / 100  # unsorted input
    labels = (np.arange(100)[::-1] % 10 < 3).astype(int)  # 30% positives in every bin of 10 consecutive
    mean_prediction, observed_rate, counts = calibration_curve(labels, predictions, bins=10)
    assert counts.tolist() == [10] * 10
    assert mean_prediction == pytest.approx(np.arange(10) / 10 + 0.045)
    assert observed_rate == pytest.approx(np.full(10, 0.3))


def test_calibration_curve_uneven_and_tiny_inputs():
    _, _, counts = calibration_curve(np.array([0, 1] * 11), np.linspace(0, 1, 22), bins=5)
    assert counts.tolist() == [5, 5, 4, 4, 4]
    mean_prediction, observed_rate, counts = calibration_curve(np.array([0, 1, 1]), np.array([0.3, 0.1, 0.2]))
    assert counts.tolist() == [1, 1, 1]
    assert mean_prediction.tolist() == [0.1, 0.2, 0.3]
    assert observed_rate.tolist() == [1.0, 1.0, 0.0]


def test_roc_and_pr_points():
    labels = np.array([0, 0, 1, 1])
    fpr, tpr = roc_points(labels, np.array([0.1, 0.4, 0.35, 0.8]))
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)
    recall, precision = pr_points(labels, np.array([0.1, 0.2, 0.8, 0.9]))
    assert recall.max() == 1 and precision[recall == 1].max() == 1


# ----- report


def _report_inputs(rng: np.random.Generator):
    labels, predictions = _informative_sample(rng, rows=2000)
    user_ids = rng.integers(0, 50, size=len(labels))
    rate = float(labels.mean())
    results = {  # a baseline first on purpose: the report puts models first
        "baseline: global rate": binary_metrics(labels, np.full(len(labels), rate), rate),
        "lr": binary_metrics(labels, predictions, rate, user_ids=user_ids),
        "deepfm": binary_metrics(labels, np.clip(predictions * 1.2, 0, 1), rate, user_ids=user_ids),
        "baseline: item popularity": binary_metrics(np.zeros(5), np.full(5, 0.1), rate),  # one class: None values
    }
    curves = {
        "lr": {"labels": labels, "predictions": predictions},
        "deepfm": {"labels": labels, "predictions": np.clip(predictions * 1.2, 0, 1)},
        "one class": {"labels": np.zeros(5), "predictions": np.full(5, 0.1)},  # not drawable: skipped
    }
    histories = {
        "deepfm": {"loss": [0.5, 0.4, 0.35], "val_loss": [0.52, 0.45, 0.44], "auc": [0.7, 0.75, 0.78]},
        "wide_deep": {"val_auc": [0.7, 0.72]},
    }
    return results, curves, histories


def test_write_report_writes_plots_and_markdown(tmp_path):
    results, curves, histories = _report_inputs(np.random.default_rng(5))
    notes = ["quality bar: deepfm AUC >= lr AUC: passed", "NE below 1 for every model"]
    report_path = write_report(tmp_path / "eval", results, curves, histories, notes, title="Ranking evaluation")

    assert report_path == tmp_path / "eval" / "report.md"
    for name in PLOTS:
        data = (tmp_path / "eval" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == sorted(PLOTS + ["report.md"])  # no temp files

    text = report_path.read_text()
    assert text.startswith("# Ranking evaluation\n")
    assert "| model | test AUC | PR-AUC | logloss | NE | calibration | GAUC | rows |" in text
    lr = results["lr"]
    lr_row = (
        f"| lr | {lr['auc']:.4f} | {lr['pr_auc']:.4f} | {lr['logloss']:.4f} | {lr['normalized_entropy']:.4f} | "
        f"{lr['calibration']:.4f} | {lr['gauc']:.4f} | 2000 |"
    )
    assert lr_row in text
    assert "| baseline: global rate | 0.5000 |" in text and "| 1.0000 | 1.0000 | - | 2000 |" in text
    assert "| baseline: item popularity | - | - |" in text
    names_in_report_order = ["lr", "deepfm", "baseline: global rate", "baseline: item popularity"]
    row_order = [text.index(f"| {name} |") for name in names_in_report_order]
    assert row_order == sorted(row_order)
    for note in notes:
        assert f"- {note}\n" in text
    for image in PLOTS:
        assert f"]({image})" in text
    assert "![ROC](roc.png)" in text


def test_write_report_with_nothing_to_plot(tmp_path):
    report_path = write_report(tmp_path, {}, {}, {}, [], title="Empty")
    assert all((tmp_path / name).read_bytes().startswith(PNG_SIGNATURE) for name in PLOTS)
    assert "## Notes" not in report_path.read_text()


def test_format_table_lists_every_name_aligned():
    results, _, _ = _report_inputs(np.random.default_rng(6))
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["model", "test", "AUC", "PR-AUC", "logloss", "NE", "calibration", "GAUC", "rows"]
    assert len({len(line) for line in lines}) == 1  # fixed width
    for name in results:
        assert sum(line.startswith(name + " ") for line in lines) == 1, name
    assert [line.split("  ")[0].strip() for line in lines[2:]] == [
        "lr",
        "deepfm",
        "baseline: global rate",
        "baseline: item popularity",
    ]
    item_line = next(line for line in lines if line.startswith("baseline: item"))
    assert item_line.split()[3:5] == ["-", "-"]  # auc and pr_auc None
    assert f"{results['lr']['auc']:.4f}" in table


def test_spark_gbdt_metrics_agree_with_the_numpy_ones_and_sklearn(spark):
    """One logloss and one AUC: the GBDT job's distributed metrics (Spark aggregation + pyspark.ml's
    evaluator) equal training.metrics' and sklearn's on the same rows."""
    from sklearn.metrics import log_loss, roc_auc_score

    from features.gbdt import binary_metrics as spark_metrics

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 2000)
    predictions = np.clip(0.3 * labels + rng.uniform(0, 0.7, 2000), 0.001, 0.999).round(3)  # ties included
    frame = spark.createDataFrame(
        [(int(y), float(p)) for y, p in zip(labels, predictions)], "label int, gbdt_probability double"
    )
    distributed = spark_metrics(frame)
    local = binary_metrics(labels, predictions, 0.5)
    assert distributed["rows"] == 2000 and distributed["positive_rate"] == pytest.approx(labels.mean())
    assert distributed["logloss"] == pytest.approx(log_loss(labels, predictions), rel=1e-12)
    assert local["logloss"] == pytest.approx(log_loss(labels, predictions), rel=1e-12)
    assert distributed["auc"] == pytest.approx(roc_auc_score(labels, predictions), abs=1e-9)
    assert local["auc"] == pytest.approx(roc_auc_score(labels, predictions), abs=1e-9)


def test_drift_note_gives_each_splits_positive_rate_and_the_recalibrated_models():
    from jobs.evaluate_models import drift_note

    splits = {"train": {"rows": 1000, "positives": 40}, "valid": {"rows": 200, "positives": 5}}
    summaries = {"lr": {"recalibration": {"logit_shift": -0.4}}, "deepfm": {}}
    assert drift_note(splits, 0.02, summaries) == (
        "positive rate by split: train 0.0400, valid 0.0250, test 0.0200 (test / train 0.50); "
        "recalibrated on valid (training.recalibrate): lr"
    )
    assert drift_note(splits, 0.04, {"deepfm": {}}).endswith(
        "(test / train 1.00); recalibrated on valid (training.recalibrate): none"
    )


def test_tuning_note_says_default_or_tuned_with_the_searchs_valid_aucs(tmp_path):
    from jobs import artifacts
    from jobs.evaluate_models import tuning_note, tuning_status
    from jobs.tune import tuning_file

    def search(model: str, default: float, chosen: float, trials: int) -> str:
        path = tuning_file(str(tmp_path), 3, model)
        document = {
            "trials": [{}] * trials,
            "default": {"valid_auc": default, "params": {"l2": 0.0}},
            "chosen": {"valid_auc": chosen, "params": {"l2": 1e-5}},
        }
        artifacts.write_json_atomically(path, document)
        return str(path)

    summaries = {
        "lr": {"tuned_from": search("lr", 0.6453, 0.6643, 10)},  # trained with the choice
        "deepfm": {"tuned_from": None},  # a search exists, train ran without --tuned
        "wide_deep": {},  # no search
        "xgboost": {"tuned_from": None},
    }
    search("deepfm", 0.6744, 0.6880, 10)
    status = tuning_status(str(tmp_path), 3, summaries)
    assert [(s["model"], s["trained_with_tuned"]) for s in status] == [
        ("lr", True),
        ("deepfm", False),
        ("wide_deep", False),
        ("xgboost", False),
    ]
    assert status[0]["search"]["chosen_params"] == {"l2": 1e-5}
    assert tuning_note(status) == (
        "hyperparameters (recpipe tune, valid AUC defaults -> chosen): lr tuned (0.6453 -> 0.6643 in 10 trials); "
        "deepfm configured (a search found 0.6744 -> 0.6880 in 10 trials; not used); "
        "wide_deep configured (no search); xgboost configured (no search)"
    )
