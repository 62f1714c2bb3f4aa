"""recpipe replay on tiny synthetic logs: one samples build, per-day windows, cold and warm models and the
baselines in the Delta table `replay_metrics`, checked against counts and AUCs computed here from the
samples table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from features.tables import open_tables
from jobs.cli import main
from jobs.replay import paired_difference

REPO = Path(__file__).resolve().parents[1]


def test_paired_difference_by_hand():
    # differences 0.1, 0.1, -0.05: mean 0.05; sample sd sqrt((0.05² + 0.05² + 0.1²) / 2) = sqrt(0.0075); SE = sd / sqrt(3)
    result = paired_difference([0.7, 0.8, 0.75], [0.6, 0.7, 0.8])
    assert result["days"] == 3
    assert result["mean"] == pytest.approx(0.05)
    assert result["standard_error"] == pytest.approx(np.sqrt(0.0075) / np.sqrt(3))
    assert paired_difference([0.7], [0.6]) == {"days": 1, "mean": pytest.approx(0.1), "standard_error": None}


def _auc_by_pairs(labels: np.ndarray, scores: np.ndarray) -> float:
    positives, negatives = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    below = np.searchsorted(negatives, positives, side="left")
    ties = np.searchsorted(negatives, positives, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(positives) * len(negatives)))


def test_replay_batch_size_replaces_the_training_one_for_fits_and_stopping(monkeypatch):
    """replay.batch_size (default: training.batch_size) is the batch of a day's fit and of its stopping day."""
    import training.dataset
    from jobs import replay
    from jobs.settings import as_settings

    seen: list[int] = []
    monkeypatch.setattr(training.dataset, "make_dataset", lambda *args, **kwargs: seen.append(args[3]) or [])

    class Model:
        def fit(self, dataset, epochs, verbose, **options):
            return type("History", (), {"epoch": [0]})()

    for section, expected in (({}, 1024), ({"batch_size": 128}, 128)):
        settings = as_settings({"training": {"batch_size": 1024}, "replay": section})
        replay._fit(Model(), [], settings, 1, [], stop_on=[Path("day.parquet")])
        assert seen == [expected, expected]
        seen.clear()


def test_replay_trains_on_the_days_before_and_tests_on_the_day(spark, tmp_path, capsys):
    config = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    # file artefacts in their own directory (paths.artifacts, as a cluster's mounted volume would be)
    config["paths"] = {
        "raw": str(tmp_path / "raw"),
        "warehouse": str(tmp_path / "warehouse"),
        "artifacts": str(tmp_path / "shared"),
    }
    config["dates"] = {"start": "2026-03-01", "end": "2026-03-06"}
    config["training"] = {"verbose": 0}
    config["gbdt"] = {"n_estimators": 5}
    config["replay"] = {"max_epochs": 3, "warm_epochs": 1, "warm_days": 1}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert (
        main(
            [
                "generate-logs",
                "--out",
                str(tmp_path / "raw"),
                "--start-date",
                "2026-03-01",
                "--days",
                "6",
                "--users",
                "300",
                "--items",
                "60",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    assert main(["ingest", "--config", str(path)]) == 0
    assert main(["snapshot", "--config", str(path)]) == 0
    capsys.readouterr()

    assert (
        main(
            [
                "replay",
                "--config",
                str(path),
                "--start",
                "2026-03-04",
                "--end",
                "2026-03-05",
                "--train-days",
                "2",
                "--models",
                "lr",
                "--warm-start",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "lr: warm - cold AUC" in out
    # cold: fitted on the window's first day, stopped on its second, within replay.max_epochs (3)
    cold_epochs = [int(n) for n in re.findall(r"lr/cold (\d+) epochs", out)]
    assert len(cold_epochs) == 2 and all(1 <= n <= 3 for n in cold_epochs)

    tables = open_tables(spark, str(tmp_path / "warehouse"), "delta-rs")
    assert "replay_metrics" in tables.names()  # recpipe tables and sql see it
    metrics = tables.read("replay_metrics").toPandas()
    assert sorted(zip(metrics["replay_date"].astype(str), metrics["model"], metrics["mode"])) == sorted(
        (day, model, mode)
        for day in ("2026-03-04", "2026-03-05")
        for model, mode in (
            ("lr", "cold"),
            ("lr", "warm"),
            ("baseline: item popularity", "cold"),
            ("baseline: xgboost", "cold"),
        )
    )
    assert metrics["run_id"].nunique() == 1
    version = int(metrics["samples_version"].iloc[0])
    samples = tables.read("samples", version=version).select("event_date", "item_id", "label").toPandas()
    samples["event_date"] = samples["event_date"].astype(str)
    assert sorted(samples["event_date"].unique()) == ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
    for day, window in (("2026-03-04", ["2026-03-02", "2026-03-03"]), ("2026-03-05", ["2026-03-03", "2026-03-04"])):
        rows = metrics[metrics["replay_date"].astype(str) == day]
        test, train = samples[samples["event_date"] == day], samples[samples["event_date"].isin(window)]
        assert set(rows["test_rows"]) == {len(test)} and set(rows["train_rows"]) == {len(train)}
        assert set(rows["test_positives"]) == {int(test["label"].sum())}
        popularity = train.groupby("item_id")["label"].sum()
        expected = _auc_by_pairs(test["label"].to_numpy(), test["item_id"].map(popularity).fillna(0).to_numpy(float))
        recorded = rows[rows["model"] == "baseline: item popularity"]["auc"].iloc[0]
        assert recorded == pytest.approx(expected, abs=1e-9)
        assert rows["auc"].between(0, 1).all()
        assert rows[rows["model"] == "lr"]["logloss"].notna().all()
    first = metrics[(metrics["replay_date"].astype(str) == "2026-03-04") & (metrics["model"] == "lr")]
    assert first["auc"].nunique() == 1  # the first day's warm model is the cold one
    second = metrics[(metrics["replay_date"].astype(str) == "2026-03-05") & (metrics["model"] == "lr")]
    assert second["auc"].nunique() == 2  # then it trains on 03-04 only, from 03-04's weights

    run_dir = tmp_path / "shared" / "_artifacts" / "replay" / metrics["run_id"].iloc[0]
    report = json.loads((run_dir / "metrics.json").read_text())
    difference = report["summary"]["warm_minus_cold_auc"]["lr"]
    warm, cold = (second[second["mode"] == m]["auc"].iloc[0] for m in ("warm", "cold"))
    assert difference["days"] == 1 and difference["mean"] == pytest.approx(warm - cold)
    assert (run_dir / "per_day_auc.png").stat().st_size > 0 and "warm - cold AUC" in (run_dir / "report.md").read_text()
    # the samples' shards and manifest went to paths.artifacts too, and the gbdt stage finds them there
    assert list((tmp_path / "shared" / "_artifacts" / "samples" / f"v{version}" / "parquet").rglob("*.parquet"))
    assert main(["gbdt", "--config", str(path), "--samples-version", str(version)]) == 0
    assert (tmp_path / "shared" / "_artifacts" / "gbdt" / f"v{version}" / "booster.json").is_file()
    assert not (tmp_path / "warehouse" / "_artifacts").exists()


@pytest.mark.parametrize(
    "train_days, models, message",
    [
        ("2", "gbdt_lr", "gbdt_lr needs a booster per day"),
        ("1", "lr", "a replay window needs at least 2 days (the models stop early on its last)"),
    ],
)
def test_replay_refuses_what_it_cannot_replay(tmp_path, capsys, train_days, models, message):
    argv = ["replay", "--config", str(REPO / "conf" / "demo.yaml"), "--start", "2026-01-05", "--end", "2026-01-06"]
    assert main([*argv, "--train-days", train_days, "--models", models]) == 2
    assert message in capsys.readouterr().err  # checked before any session starts
