"""What `training.recalibrate: valid` does to the test split of trained models, without retraining (issue 17).

    .venv/bin/python bench/recalibration_bench.py --config conf/movielens.yaml [--models lr,deepfm]

Needs trained models in the config's warehouse, trained with `training.recalibrate: none` (the default
is valid; models trained with it are refused). For each model on the newest samples version: its
predictions on valid and test; the logit shift that `training/calibration.py` fits on valid (the one
`recalibrate: valid` adds to the global bias); test logloss, normalized entropy and calibration (mean
prediction / positive rate) as trained and with the shift added to every test logit, which is what the
recalibrated model predicts. Test AUC is the same either way (one shift of every logit keeps the
ranking); it is printed as a check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/movielens.yaml")
    parser.add_argument("--models", default="lr,gbdt_lr,wide_deep,deepfm")
    args = parser.parse_args()

    import json

    from features.feature_spec import load_spec
    from jobs import artifacts
    from jobs.config import load_config
    from jobs.train_models import load_training_inputs
    from training.baselines import score_test
    from training.calibration import intercept_shift, predict_split, shifted
    from training.dataset import make_dataset
    from training.inputs import model_inputs
    from training.metrics import binary_metrics
    from training.saved_models import load_trained

    config = load_config(args.config)
    home = config.paths.artifacts_home()
    inputs = load_training_inputs(home, None, needs_gbdt=False)
    version, shards, manifest = inputs["version"], inputs["source"] / "parquet", inputs["manifest"]
    rates = {s: manifest["splits"][s]["positives"] / manifest["splits"][s]["rows"] for s in ("train", "valid", "test")}
    print(
        f"samples v{version}: positive rate train {rates['train']:.4f}, valid {rates['valid']:.4f}, "
        f"test {rates['test']:.4f} (test / train {rates['test'] / rates['train']:.2f})"
    )
    print(
        f"{'model':<10} {'shift':>7} {'test AUC':>8} {'logloss none':>12} {'valid':>8} "
        f"{'NE none':>8} {'valid':>7} {'calibration none':>16} {'valid':>7}"
    )
    for name in args.models.split(","):
        directory = artifacts.model_dir(home, name, version)
        summary = json.loads((directory / "summary.json").read_text())
        if summary.get("recalibration"):
            print(f"{name}: trained with recalibrate: valid; train it with none to compare", file=sys.stderr)
            return 2
        model = load_trained(directory / "model.keras")
        valid = make_dataset(shards, "valid", model_inputs(load_spec()), 4096)
        shift = intercept_shift(*predict_split(model, valid))
        assert shift is not None, f"{name}: valid holds one class only"
        test = score_test(model, shards)
        before = binary_metrics(test["label"], test["prediction"], rates["train"])
        after = binary_metrics(test["label"], shifted(test["prediction"], shift), rates["train"])
        assert abs(before["auc"] - after["auc"]) < 1e-6, (before["auc"], after["auc"])
        print(
            f"{name:<10} {shift:>+7.3f} {before['auc']:>8.4f} {before['logloss']:>12.4f} {after['logloss']:>8.4f} "
            f"{before['normalized_entropy']:>8.4f} {after['normalized_entropy']:>7.4f} "
            f"{before['calibration']:>16.3f} {after['calibration']:>7.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
