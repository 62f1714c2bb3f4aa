"""Export a trained model as a SavedModel for TF Serving and publish it behind a quality gate.

    recpipe export --config conf/demo.yaml --model deepfm [--samples-version N] [--force]
    python jobs/export_model.py --config conf/demo.yaml --model all

Writes <export.root>/<model>/<version>/ (version: an integer, one more than the newest published):
the SavedModel (`serving_default`: raw features in, `probability` [None, 1] out; see training.export),
assets.extra/tf_serving_warmup_requests and assets.extra/model_card.json.

Order of work: gate (test AUC >= export.auc_floor and not below the published version's by more than
export.max_auc_drop, unless --force) → write into <model>/.staging-* (TF Serving ignores names that
are not integers) → warmup requests and model card → parity: the SavedModel reloaded in a separate
process with only TensorFlow must match the trained model on >= 1000 test rows within
export.parity_tolerance → rename into <model>/<version> (atomic) → keep the newest
export.keep_versions versions. A refusal (gate or parity) publishes nothing and exits with code 3.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # started as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.errors import PipelineInputError, PublishRefused
from features.feature_spec import load_spec
from features.storage import resolve
from jobs import artifacts
from jobs.export_store import StoreExport
from jobs.run_info import code_version
from jobs.settings import ExportSettings, Settings, as_settings
from jobs.train_models import load_training_inputs


def published_versions(model_root: Path) -> list[int]:
    return sorted(int(p.name) for p in model_root.iterdir() if p.name.isdigit()) if model_root.exists() else []


def next_version(model_root: Path) -> int:
    """One more than the newest published version (staging dirs of a killed export do not count)."""
    return (published_versions(model_root) or [0])[-1] + 1


def published_card(model_root: Path) -> dict | None:
    versions = published_versions(model_root)
    if not versions:
        return None
    card = model_root / str(versions[-1]) / "assets.extra" / "model_card.json"
    return json.loads(card.read_text()) if card.exists() else None


def gate(test_auc: float, current: dict | None, settings: ExportSettings) -> tuple[bool, str]:
    floor, drop = settings.auc_floor, settings.max_auc_drop
    if test_auc < floor:
        return False, f"test AUC {test_auc:.4f} is below the floor {floor}"
    if current is not None:
        previous = current["metrics"]["test"]["auc"]
        if test_auc < previous - drop:
            return False, (f"test AUC {test_auc:.4f} is more than {drop} below the published version "
                           f"{current['version']} ({previous:.4f})")
        return True, f"test AUC {test_auc:.4f} vs published version {current['version']} ({previous:.4f}), floor {floor}"
    return True, f"test AUC {test_auc:.4f} >= floor {floor}; nothing published yet"


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


def model_card(name: str, version: int, inputs: dict, summary: dict, evaluation: dict, parity: dict,
               gate_reason: str, forced: bool) -> dict:
    from training.export import OUTPUT, SIGNATURE
    from training.inputs import model_inputs

    spec = load_spec()
    manifest = inputs["manifest"]
    return {
        "model": name, "version": version, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "code_version": code_version(),  # package version + git commit
        "signature": {"name": SIGNATURE, "outputs": [{"name": OUTPUT, "dtype": "float32", "shape": [None, 1]}]},
        "features": [{"name": i.name, "dtype": i.dtype, "shape": [None, *i.shape],
                      "missing": None if i.dtype == "float32" else i.missing, "missing_encoding": {
                          "float32": "NaN", "int64": "-1", "string": "empty string"}[i.dtype],
                      "entity": spec.feature(i.name).entity, "description": spec.feature(i.name).description}
                     for i in model_inputs(spec)],
        "training_data": {"samples_version": inputs["version"], "delta_versions": manifest.get("input_versions", {}),
                          "range": manifest["range"], "cut_points": manifest["cut_points"],
                          "split_quantiles": manifest["split_quantiles"], "splits": manifest["splits"],
                          "labels": manifest["labels"]},
        "training": {"params": summary["params"], "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
                     "best_valid_auc": summary["best_val_auc"], "run_id": summary.get("run_id")},
        "metrics": {"test": evaluation["results"][name],
                    "baselines": {k: v for k, v in evaluation["results"].items() if k.startswith("baseline")},
                    "quality_bars": evaluation["quality_bars"]},
        "parity": parity, "gate": {"reason": gate_reason, "forced": forced},
    }


def export_model(config: Settings | dict, name: str, samples_version: int | None = None, force: bool = False) -> dict:
    import keras
    import numpy as np

    import training.leaf_encoder  # noqa: F401  (registers the GBDT layer for loading)
    from training import export
    from training.inputs import model_inputs

    config = as_settings(config)
    settings, warehouse = config.export, config.paths.warehouse
    inputs = load_training_inputs(warehouse, samples_version, needs_gbdt=False)
    version = inputs["version"]
    trained = artifacts.model_dir(warehouse, name, version)
    summary = artifacts.read_json(trained / "summary.json", f"run recpipe train --model {name} first")
    evaluation = artifacts.read_json(artifacts.evaluation_dir(warehouse, version) / "metrics.json",
                                     "run recpipe evaluate first")
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
        return {"model": name, "version": current["version"], "path": version_path(current["version"]),
                "test_auc": test_auc, "gate": "already published", "forced": False,
                "parity": current["parity"], "removed_versions": [], "unchanged": True}
    passed, reason = gate(test_auc if test_auc is not None else 0.0, current, settings)
    if not passed and not force:
        raise PublishRefused(f"{name} not published: {reason} (use --force to publish anyway)")

    model = keras.saving.load_model(trained / "model.keras")
    spec_inputs = model_inputs(load_spec())
    rows = test_rows(inputs["source"] / "parquet", settings.parity_rows)
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
            raise PublishRefused(f"{name} not published: the reloaded SavedModel differs from the trained model by "
                                 f"{difference:.3g} > {parity['tolerance']} on {len(expected)} test rows")
        new_version = store.next_version(name) if store else next_version(model_root)
        artifacts.write_json_atomically(saved_model / "assets.extra" / "model_card.json", model_card(
            name, new_version, inputs, summary, evaluation, parity, reason, forced=not passed))
        if store:  # upload, then list it in published.json and models.config (see jobs.export_store)
            removed = store.publish(saved_model, name, new_version, settings.keep_versions)
        else:
            os.rename(saved_model, model_root / str(new_version))  # the one step TF Serving can observe
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    if store is None:
        removed = published_versions(model_root)[:-settings.keep_versions]
        for old in removed:
            shutil.rmtree(model_root / str(old), ignore_errors=True)
    return {"model": name, "version": new_version, "path": version_path(new_version), "test_auc": test_auc,
            "gate": reason, "forced": not passed, "parity": parity, "removed_versions": removed}


def export_models(config: Settings | dict, models: list[str], samples_version: int | None = None,
                  force: bool = False) -> dict:
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
            lines.append(f"{name:<10} v{r['version']:<4} {r['path']}  test AUC {r['test_auc']:.4f}, parity max diff "
                         f"{r['parity']['max_abs_difference']:.2g} on {r['parity']['rows']} rows"
                         + (" (forced)" if r["forced"] else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["export", *sys.argv[1:]]))
