"""Export for TF Serving: signature contract, warmup requests, model card, parity, gate, atomic publish,
and `recpipe predict` with TF Serving's REST request formats. Uses the models `recpipe run` trained on
MovieLens 100K (tests/conftest.py: ml100k_warehouse)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml

from features.errors import PublishRefused
from features.feature_spec import load_spec
from jobs import artifacts
from jobs import export_model as exporting
from jobs.cli import main
from jobs.run_info import code_version
from training import publish_gate
from training.export import to_tensors
from training.inputs import model_inputs
from training.saved_models import load_trained

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export_config(ml100k_warehouse, tmp_path_factory):
    config = yaml.safe_load((REPO / "conf" / "movielens.yaml").read_text())
    config["paths"]["warehouse"] = ml100k_warehouse.root
    root = tmp_path_factory.mktemp("export")
    config["export"] = {**config.get("export", {}), "root": str(root / "serving"), "keep_versions": 2}
    path = root / "movielens.yaml"
    path.write_text(yaml.safe_dump(config))
    return config, path


@pytest.fixture(scope="module")
def exported(export_config):
    config, _ = export_config
    return {name: exporting.export_model(config, name) for name in ("gbdt_lr", "deepfm")}


def test_saved_model_signature_is_the_contract(exported):
    loaded = tf.saved_model.load(exported["deepfm"]["path"])
    serve = loaded.signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    expected = {i.name: i for i in model_inputs(load_spec())}
    assert set(specs) == set(expected)
    for name, spec in specs.items():
        assert spec.dtype.name == {"float32": "float32", "int64": "int64", "string": "string"}[expected[name].dtype]
        assert spec.shape.as_list() == [None, *expected[name].shape]
    assert {k: v.shape.as_list() for k, v in serve.structured_outputs.items()} == {"probability": [None, 1]}
    assert Path(exported["deepfm"]["path"]).name == "1"


def test_warmup_requests_are_prediction_logs_of_real_rows(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(exported["gbdt_lr"]["path"]) / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert 0 < len(records) <= 100
    log = prediction_log_pb2.PredictionLog.FromString(records[1])
    request = log.predict_log.request
    assert request.model_spec.name == "gbdt_lr" and request.model_spec.signature_name == "serving_default"
    assert set(request.inputs) == {i.name for i in model_inputs(load_spec())}
    serve = tf.saved_model.load(exported["gbdt_lr"]["path"]).signatures["serving_default"]
    outputs = serve(**{k: tf.make_ndarray(v) for k, v in request.inputs.items()})  # a warmup request runs
    assert outputs["probability"].shape[1] == 1


def test_model_card_records_data_versions_metrics_and_parity(exported, ml100k_warehouse):
    card = json.loads((Path(exported["deepfm"]["path"]) / "assets.extra" / "model_card.json").read_text())
    assert card["model"] == "deepfm" and card["version"] == 1 and card["code_version"] == code_version()
    assert {"events", "user_snapshot"} <= set(card["training_data"]["delta_versions"])
    assert len(card["training_data"]["cut_points"]) == 2
    assert 0.6 < card["metrics"]["test"]["auc"] < 0.8 and "baseline: xgboost" in card["metrics"]["baselines"]
    assert card["parity"]["rows"] >= 1000 and card["parity"]["max_abs_difference"] <= 1e-6
    assert {f["name"]: f["dtype"] for f in card["features"]}["user_gender"] == "string"


def test_reloaded_saved_model_matches_the_trained_model(exported, ml100k_warehouse):
    version = artifacts.latest_samples_version(ml100k_warehouse.root)
    model = load_trained(artifacts.model_dir(ml100k_warehouse.root, "gbdt_lr", version) / "model.keras")
    rows = exporting.test_rows(artifacts.samples_dir(ml100k_warehouse.root, version) / "parquet", 1500)
    inputs = model_inputs(load_spec())
    serve = tf.saved_model.load(exported["gbdt_lr"]["path"]).signatures["serving_default"]
    served = serve(**to_tensors(rows, inputs))["probability"].numpy()
    np.testing.assert_allclose(served, np.asarray(model(to_tensors(rows, inputs))), atol=1e-6)


def test_predict_answers_row_and_columnar_requests_like_tf_serving(exported, ml100k_warehouse, tmp_path, capsys):
    version = artifacts.latest_samples_version(ml100k_warehouse.root)
    rows = exporting.test_rows(artifacts.samples_dir(ml100k_warehouse.root, version) / "parquet", 5)
    plain = {k: v.tolist() for k, v in rows.items()}
    instances = [{k: plain[k][i] for k in plain} for i in range(5)]
    serve = tf.saved_model.load(exported["deepfm"]["path"]).signatures["serving_default"]
    direct = serve(**to_tensors(rows, model_inputs(load_spec())))["probability"].numpy()
    answers = {}
    for fmt, body in (("row", {"instances": instances}), ("columnar", {"inputs": plain})):
        request = tmp_path / f"{fmt}.json"
        request.write_text(json.dumps(body))
        assert main(["predict", "--model-dir", exported["deepfm"]["path"], "--request", str(request)]) == 0
        answers[fmt] = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(answers["row"]["predictions"], direct, atol=1e-7)
    np.testing.assert_allclose(answers["columnar"]["outputs"], direct, atol=1e-7)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instances": [{"user_age": 30.0}]}))
    assert main(["predict", "--model-dir", exported["deepfm"]["path"], "--request", str(bad)]) == 2
    assert capsys.readouterr().err.strip().startswith("recpipe predict: error: bad request")


def _pretend_published_by_an_older_run(version_dir: Path) -> None:
    card_path = version_dir / "assets.extra" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["training"]["run_id"] = "an-older-run"
    card_path.write_text(json.dumps(card))


def test_gate_refuses_below_the_floor_and_force_publishes(export_config, exported, capsys):
    config, path = export_config
    _pretend_published_by_an_older_run(Path(config["export"]["root"]) / "deepfm" / "1")
    strict = {**config, "export": {**config["export"], "auc_floor": 0.99}}
    with pytest.raises(PublishRefused, match="below the floor 0.99"):
        exporting.export_model(strict, "deepfm")
    model_root = Path(config["export"]["root"]) / "deepfm"
    assert publish_gate.published_versions(model_root) == [1]
    strict_path = path.with_name("strict.yaml")
    strict_path.write_text(yaml.safe_dump(strict))
    assert main(["export", "--config", str(strict_path), "--model", "deepfm"]) == 3
    assert "refused" in capsys.readouterr().err
    forced = exporting.export_model(strict, "deepfm", force=True)
    assert forced["version"] == 2 and forced["forced"]


def test_gate_compares_with_the_published_version_and_keeps_the_newest(export_config, exported, tmp_path):
    """In an export root of its own (a copy of the published version 1): the versions it publishes and
    removes must not pull version 1 from under the other tests of the module, in any order."""
    import shutil

    shared, _ = export_config
    config = {**shared, "export": {**shared["export"], "root": str(tmp_path / "serving")}}
    model_root = tmp_path / "serving" / "gbdt_lr"
    shutil.copytree(Path(exported["gbdt_lr"]["path"]), model_root / "1")
    again = exporting.export_model(config, "gbdt_lr")  # a rerun of the same training run changes nothing
    assert again["unchanged"] and again["version"] == 1
    card_path = model_root / "1" / "assets.extra" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["metrics"]["test"]["auc"] += 0.05  # the card's own number no longer counts: the champion is scored
    card["training"]["run_id"] = "an-older-run"
    card_path.write_text(json.dumps(card))
    published = exporting.export_model(config, "gbdt_lr")  # the same model: equal AUC on the same rows
    champion = published["champion"]
    assert published["version"] == 2 and not published["forced"]
    assert champion["status"] == "compared" and champion["version"] == 1
    assert champion["auc"] == pytest.approx(champion["candidate_auc"], abs=1e-6)
    assert champion["candidate_auc"] == pytest.approx(published["test_auc"], abs=1e-6)  # evaluate's test split
    assert exporting.export_model(config, "gbdt_lr", force=True)["version"] == 3
    assert publish_gate.published_versions(model_root) == [2, 3]  # keep_versions: 2
    assert not [p for p in model_root.iterdir() if not p.name.isdigit()]  # no staging leftovers


def _auc_by_pairs(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC from its definition: the share of (positive, negative) pairs ranked right, ties counting half."""
    positives, negatives = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    below = np.searchsorted(negatives, positives, side="left")
    ties = np.searchsorted(negatives, positives, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(positives) * len(negatives)))


def _promotions(warehouse: str) -> list[dict]:
    from deltalake import DeltaTable

    return sorted(DeltaTable(f"{warehouse}/promotions").to_pyarrow_table().to_pylist(), key=lambda r: r["decided_at"])


def test_champion_and_challenger_are_scored_on_the_same_rows(
    export_config, exported, ml100k_warehouse, tmp_path, capsys
):
    """gbdt_lr and deepfm trade places as champion: each one's published SavedModel becomes the champion
    of the other model's name in a fresh export root; the worse candidate is refused (exit 3), the better
    one published, both with the AUCs of the evaluation's per-row predictions, computed here by pairs."""
    import shutil

    config, path = export_config
    version = artifacts.latest_samples_version(ml100k_warehouse.root)
    predictions = pd.read_parquet(artifacts.evaluation_dir(ml100k_warehouse.root, version) / "predictions.parquet")
    labels = predictions["label"].to_numpy()
    auc = {m: _auc_by_pairs(labels, predictions[m].to_numpy()) for m in ("gbdt_lr", "deepfm")}
    better, worse = sorted(auc, key=auc.get, reverse=True)
    assert auc[better] > auc[worse]
    root = tmp_path / "serving"
    published = Path(config["export"]["root"])
    versions = {m: publish_gate.published_versions(published / m)[-1] for m in auc}
    shutil.copytree(published / better / str(versions[better]), root / worse / "1")  # champion of the worse name
    shutil.copytree(published / worse / str(versions[worse]), root / better / "1")
    strict = path.with_name("same-rows.yaml")
    strict.write_text(yaml.safe_dump({**config, "export": {**config["export"], "max_auc_drop": 0.0, "auc_floor": 0.5}}))
    before = len(_promotions(ml100k_warehouse.root))

    assert main(["export", "--config", str(strict), "--model", worse, "--export-root", str(root)]) == 3
    error = capsys.readouterr().err
    assert f"{worse} not published: test AUC " in error and "is more than 0.0 below the published version 1" in error
    assert f"on the same {len(labels)} test rows" in error
    assert publish_gate.published_versions(root / worse) == [1]
    assert main(["export", "--config", str(strict), "--model", better, "--export-root", str(root)]) == 0
    assert publish_gate.published_versions(root / better) == [1, 2]
    card = json.loads((root / better / "2" / "assets.extra" / "model_card.json").read_text())
    assert card["champion"]["status"] == "compared" and card["champion"]["decision"] == "published"
    assert card["champion"]["auc"] == pytest.approx(auc[worse], abs=1e-5)
    assert card["champion"]["candidate_auc"] == pytest.approx(auc[better], abs=1e-5)
    assert card["champion"]["rows"] == len(labels)

    refused, accepted = _promotions(ml100k_warehouse.root)[before:]
    assert (
        refused["model"],
        refused["decision"],
        refused["champion_status"],
        refused["champion_version"],
        refused["rows"],
        refused["published_version"],
    ) == (worse, "refused", "compared", 1, len(labels), None)
    assert refused["candidate_auc"] == pytest.approx(auc[worse], abs=1e-5)
    assert refused["champion_auc"] == pytest.approx(auc[better], abs=1e-5)
    assert "more than 0.0 below the published version 1" in refused["reason"]
    assert refused["export_root"] == str(root) and refused["samples_version"] == version
    assert (accepted["model"], accepted["decision"], accepted["published_version"]) == (better, "published", 2)
    assert accepted["champion_auc"] == pytest.approx(auc[worse], abs=1e-5)


class _OtherSignature(tf.Module):
    """A champion from before a schema change: it takes user_age as a string."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_age")])
    def serve(self, user_age):
        return {"probability": tf.fill([tf.shape(user_age)[0], 1], 0.5)}


def test_a_champion_with_an_incompatible_signature_is_reported(export_config, exported, ml100k_warehouse, tmp_path):
    config, _ = export_config
    root = tmp_path / "serving"
    champion = _OtherSignature()
    tf.saved_model.save(champion, str(root / "deepfm" / "1"), signatures={"serving_default": champion.serve})
    local = {**config, "export": {**config["export"], "root": str(root)}}
    with pytest.raises(
        PublishRefused,
        match=r"the published version 1 is incompatible with the new samples \(its "
        r"input 'user_age' is string, the samples give float32\).*--force",
    ):
        exporting.export_model(local, "deepfm")
    row = _promotions(ml100k_warehouse.root)[-1]
    assert (row["decision"], row["champion_status"], row["champion_auc"], row["published_version"]) == (
        "refused",
        "incompatible",
        None,
        None,
    )
    forced = exporting.export_model(local, "deepfm", force=True)
    assert forced["version"] == 2 and forced["forced"]
    card = json.loads((root / "deepfm" / "2" / "assets.extra" / "model_card.json").read_text())
    assert card["champion"]["status"] == "incompatible" and card["champion"]["decision"] == "forced"
    assert "its input 'user_age' is string" in card["champion"]["problem"]
    assert _promotions(ml100k_warehouse.root)[-1]["decision"] == "forced"


def test_failed_parity_publishes_nothing(export_config, exported, monkeypatch):
    config, _ = export_config
    model_root = Path(config["export"]["root"]) / "deepfm"
    before = publish_gate.published_versions(model_root)
    monkeypatch.setattr(
        "training.export.parity_in_fresh_process", lambda saved, rows, work: np.zeros((len(rows["user_age"]), 1))
    )
    with pytest.raises(PublishRefused, match="differs from the trained model"):
        exporting.export_model(config, "deepfm", force=True)
    assert publish_gate.published_versions(model_root) == before
    assert not [p for p in model_root.iterdir() if not p.name.isdigit()]
