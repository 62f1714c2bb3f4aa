"""Export a trained model as a SavedModel for TF Serving and publish it behind a quality gate.

    recpipe export --config conf/demo.yaml --model deepfm [--samples-version N] [--force]
    python jobs/export_model.py --config conf/demo.yaml --model all

Writes <export.root>/<model>/<version>/ (version: an integer, one more than the newest published):
the SavedModel (`serving_default`: raw features in, `probability` [None, 1] out; see training.export),
assets.extra/tf_serving_warmup_requests and assets.extra/model_card.json.

Order of work: gate → write into <model>/.staging-* (TF Serving ignores names that are not integers) →
warmup requests and model card → parity: the SavedModel reloaded in a separate process with only
TensorFlow must match the trained model on >= 1000 test rows within export.parity_tolerance → rename
into <model>/<version> (atomic) → keep the newest export.keep_versions versions. A refusal (gate or
parity) publishes nothing and exits with code 3.

The gate (champion/challenger on the same rows): the newest published SavedModel (the champion) and the
candidate both score every row of the candidate's test split; the candidate is published iff its AUC
there >= export.auc_floor and >= the champion's AUC on those same rows - export.max_auc_drop (--force
overrides). A champion whose `serving_default` does not fit the new samples (an input the samples lack,
another dtype or shape, or no loadable signature) is reported as incompatible and the candidate is
refused: a changed signature breaks the serving team's requests, so its first publication is a
deliberate --force. Every decision (both AUCs, the row count, the champion's status, the reason) goes
into the model card and is appended to the Delta table `promotions` of the warehouse.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # started as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.errors import PipelineInputError, PublishRefused
from features.feature_spec import load_spec
from features.storage import resolve
from jobs import artifacts
from jobs.export_store import StoreExport
from jobs.run_info import code_version
from jobs.settings import Settings, as_settings
from jobs.train_models import load_training_inputs
from training.publish_gate import gate, judge_champion, model_card, next_version, published_card, published_versions

PROMOTIONS_TABLE = "promotions"  # one row per publish decision; see record_promotion


def _promotions_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("decision_date", pa.date32()),
            ("decided_at", pa.timestamp("us", tz="UTC")),
            ("model", pa.string()),
            ("decision", pa.string()),  # published, forced (published against the gate) or refused
            ("reason", pa.string()),
            ("samples_version", pa.int64()),
            ("run_id", pa.string()),
            ("candidate_auc", pa.float64()),  # on the candidate's test split
            ("champion_version", pa.int64()),
            ("champion_status", pa.string()),  # none, compared, incompatible
            ("champion_auc", pa.float64()),  # on the same rows as candidate_auc
            ("rows", pa.int64()),
            ("auc_floor", pa.float64()),
            ("max_auc_drop", pa.float64()),
            ("published_version", pa.int64()),
            ("export_root", pa.string()),
            ("code_version", pa.string()),
        ]
    )


def record_promotion(warehouse: str, row: dict) -> None:
    """Append one decision to the Delta table `promotions` (partitioned by decision_date). A single small
    row from a job without Spark: delta-rs writes and commits it (a blind append never conflicts)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    root = warehouse if "://" in warehouse else os.path.abspath(warehouse)
    table = pa.Table.from_pylist([row], schema=_promotions_schema())
    write_deltalake(f"{root.rstrip('/')}/{PROMOTIONS_TABLE}", table, mode="append", partition_by=["decision_date"])


def test_rows(shards: Path, rows: int) -> dict:
    """The first `rows` test rows as model-input arrays (the same rows for parity and warmup)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.dataset import split_files
    from training.inputs import arrow_to_arrays, model_inputs

    inputs, batches, held = model_inputs(load_spec()), [], 0
    for path in split_files(shards, "test"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=[i.name for i in inputs]):
            batches.append(batch)
            held += batch.num_rows
            if held >= rows:
                break
        if held >= rows:
            break
    return arrow_to_arrays(pa.Table.from_batches(batches).slice(0, rows), inputs)


def export_model(config: Settings | dict, name: str, samples_version: int | None = None, force: bool = False) -> dict:
    from training import export
    from training.inputs import model_inputs
    from training.saved_models import load_trained

    config = as_settings(config)
    settings, warehouse = config.export, config.paths.required("warehouse")
    home = config.paths.artifacts_home()
    inputs = load_training_inputs(home, samples_version, needs_gbdt=False)
    version = inputs["version"]
    trained = artifacts.model_dir(home, name, version)
    summary = artifacts.read_json(trained / "summary.json", f"run recpipe train --model {name} first")
    evaluation = artifacts.read_json(
        artifacts.evaluation_dir(home, version) / "metrics.json", "run recpipe evaluate first"
    )
    if name not in evaluation["results"]:
        raise PipelineInputError(f"the evaluation of samples v{version} has no {name}: run recpipe evaluate again")
    store = None if resolve(settings.root, config.storage).is_local else StoreExport(settings.root, config.storage)
    model_root = Path(settings.root) / name  # a local export root (store: an object store, jobs.export_store)

    def version_path(number: int) -> str:
        return store.location.child(name, str(number)).arrow_uri if store else str(model_root / str(number))

    test_auc = evaluation["results"][name]["auc"]
    current = store.published_card(name) if store else published_card(model_root)
    if current is not None and current["training"].get("run_id") == summary.get("run_id") and not force:
        # a rerun for the same logical date: this training run is already the published version
        return {
            "model": name,
            "version": current["version"],
            "path": version_path(current["version"]),
            "test_auc": test_auc,
            "gate": "already published",
            "forced": False,
            "parity": current["parity"],
            "removed_versions": [],
            "unchanged": True,
        }

    model = load_trained(trained / "model.keras")
    shards = inputs["source"] / "parquet"
    train_split = inputs["manifest"]["splits"]["train"]
    train_rate = train_split["positives"] / max(train_split["rows"], 1)
    if store:  # the champion comes down from the object store into a local copy laid out like an export root
        with tempfile.TemporaryDirectory(prefix="recpipe-champion-") as local_root:
            published = store.published(name)
            if published:
                store.download(name, published[-1], Path(local_root) / str(published[-1]))
            champion = judge_champion(Path(local_root), model, shards, train_rate)
    else:
        champion = judge_champion(model_root, model, shards, train_rate)
    candidate_auc = champion["candidate_auc"] if champion["candidate_auc"] is not None else test_auc
    passed, reason = gate(candidate_auc if candidate_auc is not None else 0.0, champion, settings)
    decision = {
        "decided_at": dt.datetime.now(dt.timezone.utc),
        "model": name,
        "samples_version": version,
        "run_id": summary.get("run_id"),
        "candidate_auc": candidate_auc,
        "champion_version": champion["version"],
        "champion_status": champion["status"],
        "champion_auc": champion["auc"],
        "rows": champion["rows"],
        "auc_floor": settings.auc_floor,
        "max_auc_drop": settings.max_auc_drop,
        "export_root": str(Path(settings.root)),
        "code_version": code_version(),
    }
    decision["decision_date"] = decision["decided_at"].date()

    def refuse(why: str):
        record_promotion(warehouse, {**decision, "decision": "refused", "reason": why, "published_version": None})
        return PublishRefused(f"{name} not published: {why}")

    if not passed and not force:
        raise refuse(f"{reason} (use --force to publish anyway)")

    spec_inputs = model_inputs(load_spec())
    rows = test_rows(shards, settings.parity_rows)
    expected = np.asarray(model(export.to_tensors(rows, spec_inputs), training=False))
    if store is None:
        model_root.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=None if store else model_root, prefix=".staging-"))
    try:
        saved_model = staged / "model"
        export.write_saved_model(model, spec_inputs, saved_model)
        export.write_warmup(saved_model, export.warmup_records(rows, spec_inputs, name, settings.warmup_requests))
        served = export.parity_in_fresh_process(saved_model, rows, staged)
        difference = float(np.max(np.abs(served - expected)))
        parity = {"rows": len(expected), "max_abs_difference": difference, "tolerance": settings.parity_tolerance}
        if not difference <= parity["tolerance"]:
            raise refuse(
                f"the reloaded SavedModel differs from the trained model by {difference:.3g} > "
                f"{parity['tolerance']} on {len(expected)} test rows"
            )
        new_version = store.next_version(name) if store else next_version(model_root)
        card_champion = {
            **champion,
            "candidate_auc": candidate_auc,
            "decision": "forced" if not passed else "published",
        }
        artifacts.write_json_atomically(
            saved_model / "assets.extra" / "model_card.json",
            model_card(
                name,
                new_version,
                inputs,
                summary,
                evaluation,
                parity,
                reason,
                forced=not passed,
                champion=card_champion,
                code=code_version(),
            ),
        )
        if store:  # upload, then list it in published.json and models.config (see jobs.export_store)
            removed = store.publish(saved_model, name, new_version, settings.keep_versions)
        else:
            os.rename(saved_model, model_root / str(new_version))  # the one step TF Serving can observe
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    record_promotion(
        warehouse,
        {**decision, "decision": card_champion["decision"], "reason": reason, "published_version": new_version},
    )
    if store is None:
        removed = published_versions(model_root)[: -settings.keep_versions]
        for old in removed:
            shutil.rmtree(model_root / str(old), ignore_errors=True)
    return {
        "model": name,
        "version": new_version,
        "path": version_path(new_version),
        "test_auc": test_auc,
        "gate": reason,
        "forced": not passed,
        "parity": parity,
        "removed_versions": removed,
        "champion": champion,
    }


def export_models(
    config: Settings | dict, models: list[str], samples_version: int | None = None, force: bool = False
) -> dict:
    """Every model in turn; a refusal of one does not stop the others (the CLI exits 3 if any was refused)."""
    config, results, refused = as_settings(config), {}, []
    for name in models:
        try:
            results[name] = export_model(config, name, samples_version, force)
        except PublishRefused as refusal:
            results[name] = {"model": name, "refused": str(refusal)}
            refused.append(str(refusal))
    return {"models": results, "refused": refused}


def format_summary(result: dict) -> str:
    lines = []
    for name, r in result["models"].items():
        if "refused" in r:
            lines.append(f"{name:<10} REFUSED  {r['refused']}")
        elif r.get("unchanged"):
            lines.append(f"{name:<10} v{r['version']:<4} {r['path']}  already published (same training run)")
        else:
            champion = r["champion"]
            versus = (
                f", champion v{champion['version']} {champion['auc']:.4f} vs {champion['candidate_auc']:.4f} "
                f"on {champion['rows']} test rows"
                if champion["status"] == "compared"
                else f", champion v{champion['version']} incompatible"
                if champion["status"] == "incompatible"
                else ""
            )
            lines.append(
                f"{name:<10} v{r['version']:<4} {r['path']}  test AUC {r['test_auc']:.4f}, parity max diff "
                f"{r['parity']['max_abs_difference']:.2g} on {r['parity']['rows']} rows{versus}"
                + (" (forced)" if r["forced"] else "")
            )
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["export", *sys.argv[1:]]))
