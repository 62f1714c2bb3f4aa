"""The publish decision of `recpipe export` (jobs/export_model.py does the I/O): the export root's
version layout, the champion/challenger gate on the same test rows, the champion's signature check, and
the model card a published version carries.

    <export root>/<model>/<version>/   integers only: TF Serving ignores other names (.staging-*)
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from features.feature_spec import load_spec


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


def gate(candidate_auc: float, champion: dict | None, settings) -> tuple[bool, str]:
    """candidate_auc: on the candidate's test split; champion: see judge_champion (None: nothing published);
    settings: the `export` settings (jobs/settings.py ExportSettings: auc_floor, max_auc_drop)."""
    floor, drop = settings.auc_floor, settings.max_auc_drop
    if candidate_auc < floor:
        return False, f"test AUC {candidate_auc:.4f} is below the floor {floor}"
    if champion is None or champion["status"] == "none":
        return True, f"test AUC {candidate_auc:.4f} >= floor {floor}; nothing published yet"
    if champion["status"] == "incompatible":
        return False, (
            f"the published version {champion['version']} is incompatible with the new samples "
            f"({champion['problem']}); a new signature breaks serving requests: publish it with --force"
        )
    on_rows = f"on the same {champion['rows']} test rows"
    if candidate_auc < champion["auc"] - drop:
        return False, (
            f"test AUC {candidate_auc:.4f} is more than {drop} below the published version "
            f"{champion['version']} ({champion['auc']:.4f}) {on_rows}"
        )
    return True, (
        f"test AUC {candidate_auc:.4f} vs published version {champion['version']} ({champion['auc']:.4f}) "
        f"{on_rows}, floor {floor}"
    )


def signature_problem(serve, inputs) -> str | None:
    """Why a champion's serving signature cannot score rows of the new samples, or None if it can: every
    input it takes must be a model input of the samples with the same dtype and a compatible shape."""
    from training.export import input_specs

    offered = input_specs(inputs)
    for name, spec in sorted(serve.structured_input_signature[1].items()):
        if name not in offered:
            return f"it takes input '{name}', which the samples do not have"
        if spec.dtype != offered[name].dtype:
            return f"its input '{name}' is {spec.dtype.name}, the samples give {offered[name].dtype.name}"
        if not spec.shape.is_compatible_with(offered[name].shape):
            return f"its input '{name}' has shape {spec.shape}, the samples give {offered[name].shape}"
    return None


def judge_champion(model_root: Path, candidate, shards: Path, train_rate: float) -> dict:
    """The newest published version (the champion) and the candidate, scored on every row of the
    candidate's test split: {status: none|compared|incompatible, version, auc, candidate_auc, rows, problem}.

    The champion is scored in this process with TensorFlow (tf.saved_model.load + `serving_default`), not
    in the parity subprocess: TensorFlow is already loaded for the candidate, the rows stream through
    once for both models (no copy of the test split to disk), and the champion is the very SavedModel
    TF Serving loads, which passed the fresh-process parity check when it was published."""
    import tensorflow as tf

    from training.dataset import make_dataset
    from training.inputs import model_inputs
    from training.metrics import binary_metrics

    versions = published_versions(model_root)
    if not versions:
        return {"status": "none", "version": None, "auc": None, "candidate_auc": None, "rows": 0, "problem": None}
    version, inputs = versions[-1], model_inputs(load_spec())
    verdict = {"status": "incompatible", "version": version, "auc": None, "candidate_auc": None, "rows": 0}
    try:
        serve = tf.saved_model.load(str(model_root / str(version))).signatures["serving_default"]
    except (KeyError, OSError, ValueError, tf.errors.OpError) as error:
        return {
            **verdict,
            "problem": f"its serving_default cannot be loaded: {str(error).strip().splitlines()[0][:200]}",
        }
    problem = signature_problem(serve, inputs)
    if problem:
        return {**verdict, "problem": problem}
    names = sorted(serve.structured_input_signature[1])
    label_parts: list[np.ndarray] = []
    scores: dict[str, list[np.ndarray]] = {"candidate": [], "champion": []}
    for features, label, _ in make_dataset(shards, "test", inputs, 4096):
        label_parts.append(label.numpy())
        scores["candidate"].append(np.asarray(candidate(features, training=False)).reshape(-1))
        scores["champion"].append(serve(**{n: features[n] for n in names})["probability"].numpy().reshape(-1))
    labels = np.concatenate(label_parts)
    auc = {who: binary_metrics(labels, np.concatenate(p), train_rate)["auc"] for who, p in scores.items()}
    return {
        "status": "compared",
        "version": version,
        "auc": auc["champion"],
        "candidate_auc": auc["candidate"],
        "rows": int(len(labels)),
        "problem": None,
    }


def model_card(
    name: str,
    version: int,
    inputs: dict,
    summary: dict,
    evaluation: dict,
    parity: dict,
    gate_reason: str,
    forced: bool,
    champion: dict | None = None,
    code: str = "unknown",
) -> dict:
    """What a published version says of itself (assets.extra/model_card.json); `code`: the code version."""
    from training.export import OUTPUT, SIGNATURE
    from training.inputs import model_inputs

    spec = load_spec()
    manifest = inputs["manifest"]
    return {
        "model": name,
        "version": version,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "code_version": code,  # package version + git commit
        "signature": {"name": SIGNATURE, "outputs": [{"name": OUTPUT, "dtype": "float32", "shape": [None, 1]}]},
        "features": [
            {
                "name": i.name,
                "dtype": i.dtype,
                "shape": [None, *i.shape],
                "missing": None if i.dtype == "float32" else i.missing,
                "missing_encoding": {"float32": "NaN", "int64": "-1", "string": "empty string"}[i.dtype],
                "entity": spec.feature(i.name).entity,
                "description": spec.feature(i.name).description,
            }
            for i in model_inputs(spec)
        ],
        "training_data": {
            "samples_version": inputs["version"],
            "delta_versions": manifest.get("input_versions", {}),
            "range": manifest["range"],
            "cut_points": manifest["cut_points"],
            "split_quantiles": manifest["split_quantiles"],
            "splits": manifest["splits"],
            "labels": manifest["labels"],
        },
        "training": {
            "params": summary["params"],
            "epochs": summary["epochs"],
            "best_epoch": summary["best_epoch"],
            "best_valid_auc": summary["best_val_auc"],
            "run_id": summary.get("run_id"),
        },
        "metrics": {
            "test": evaluation["results"][name],
            "baselines": {k: v for k, v in evaluation["results"].items() if k.startswith("baseline")},
            "quality_bars": evaluation["quality_bars"],
        },
        "parity": parity,
        "gate": {"reason": gate_reason, "forced": forced},
        "champion": champion,  # the published version it was compared with on the same test rows
    }
