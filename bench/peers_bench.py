"""Benchmark: recpipe's DeepFM and Wide&Deep vs DeepCTR's on the same rows and fields (issue 17).

    make bench-peers            # creates .venv-deepctr (tensorflow + tf_keras + deepctr 0.9.4), then:
    .venv/bin/python bench/peers_bench.py --config conf/movielens.yaml [--epochs 2] [--repeats 3]

Needs samples in the config's warehouse (`recpipe run --config conf/movielens.yaml`). The config's
warehouse gets the models this bench trains (point --config at a copy if that matters).

Same rows (the samples version's train split; valid and test for AUC), same fields (every model input
of schemas/features.yaml), same embedding size, MLP, dropout and Adam learning rate (the config's
`models.<name>`), same batch size and epochs, no early stopping on either side. DeepCTR gets what its
users feed it: fields pre-encoded once to integer codes (categoricals, ids, quantile buckets, padded
lists) and floats (log1p / normalized numerics), held in memory; recpipe trains from the samples'
Parquet shards with its preprocessing inside the model, as `recpipe train` does. Each run is a fresh
process; the sides are interleaved; one warm-up round (page cache, pyc), then the median of --repeats.
Prints whole-epoch examples/s (first batch included), steady state, start-up of epoch 1, test AUC,
and the ratios recpipe / DeepCTR. One seed's test AUC moves by up to 0.02 on either side, so
`--seeds 1,2,3,4,5` runs one timed round per seed (the same seed on both sides) and prints the mean AUC
and the paired recpipe - DeepCTR difference with its standard error over the seeds. `--deepctr-hashing`
gives DeepCTR recpipe's hash bins for the spec's hashed fields (ids) instead of its train vocabulary;
`--deepctr-like-recpipe uniform_start,wide_linear` gives it recpipe's embedding start and Wide&Deep's
linear part over the `wide` fields only (what the two sides still do differently).
Start-up is the time from the epoch's start to the end of its first `training.steps_per_execution`
batches (as `recpipe train` resolves it for these samples) on both sides: recpipe's first call of its
train function runs that many; the steady state is the rest of the epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEEPCTR_PYTHON = REPO / ".venv-deepctr" / "bin" / "python"
LIKE_RECPIPE = ("uniform_start", "wide_linear")  # --deepctr-like-recpipe: recpipe choices DeepCTR can take


def encode_fields(warehouse: str, out: Path, hashed_as_recpipe: bool = False) -> None:
    """The samples' raw model inputs -> DeepCTR fields (see bench/peers/deepctr_side.py), codes fitted
    on train only (0 = missing or unseen). hashed_as_recpipe: the spec's `hashing` fields get recpipe's
    own bins instead (keras Hashing with the fitted num_bins, +1; 0 = missing or list padding), so an id
    first seen after the split shares a row with whatever hashes there, as in recpipe's models."""
    import pyarrow.parquet as pq

    from features.feature_spec import load_spec
    from jobs import artifacts
    from training.inputs import arrow_to_arrays, model_inputs

    version = artifacts.latest_samples_version(warehouse)
    source = artifacts.samples_dir(warehouse, version)
    transforms = json.loads((source / "transforms.json").read_text())["features"]
    inputs = model_inputs(load_spec())
    raw = {}
    for split in ("train", "valid", "test"):
        files = sorted((source / "parquet" / f"split={split}").glob("*.parquet"))
        table = pq.ParquetDataset(files).read(columns=[i.name for i in inputs] + ["label"])
        raw[split] = (arrow_to_arrays(table, inputs), table.column("label").to_numpy().astype(np.float32))
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs:
        fitted = transforms.get(spec.name, {})
        kind = fitted.get("transform")
        if spec.dtype == "float32" and kind in ("normalize", "log1p"):
            train = raw["train"][0][spec.name]
            shift = np.log1p(np.maximum(train, 0)) if kind == "log1p" else train
            known = shift[~np.isnan(shift)]  # a field missing on every train row is all zeros
            mean, sd = (float(known.mean()), float(known.std()) or 1.0) if len(known) else (0.0, 1.0)
            for split, (features, _) in raw.items():
                x = features[spec.name]
                x = np.log1p(np.maximum(x, 0)) if kind == "log1p" else x
                arrays[f"{split}/dense:{spec.name}"] = np.nan_to_num((x - mean) / sd).astype(np.float32)
            continue
        if spec.dtype == "float32":  # quantile buckets: 1..len(boundaries)+1, 0 = missing
            boundaries = np.asarray(fitted["boundaries"], dtype=np.float64)
            for split, (features, _) in raw.items():
                x = features[spec.name]
                codes = np.searchsorted(boundaries, x, side="right") + 1
                arrays[f"{split}/sparse:{spec.name}"] = np.where(np.isnan(x), 0, codes).astype(np.int32)
            arrays[f"vocab:{spec.name}"] = np.array(len(boundaries) + 2)
            continue
        missing = spec.missing
        prefix = "sparse" if spec.length is None else "varlen"
        if kind == "hashing" and hashed_as_recpipe:
            import keras

            bins = int(fitted["num_bins"])
            hashing = keras.layers.Hashing(num_bins=bins)
            for split, (features, _) in raw.items():
                x = features[spec.name]
                codes = np.asarray(hashing(x)).astype(np.int32) + 1
                arrays[f"{split}/{prefix}:{spec.name}"] = np.where(x == missing, 0, codes)
            arrays[f"vocab:{spec.name}"] = np.array(bins + 1)
            continue
        train = raw["train"][0][spec.name].ravel()
        values = np.unique(train[train != missing])
        lookup = {v: i + 1 for i, v in enumerate(values.tolist())}
        for split, (features, _) in raw.items():
            x = features[spec.name]
            codes = np.fromiter((lookup.get(v, 0) for v in x.ravel().tolist()), dtype=np.int32, count=x.size)
            arrays[f"{split}/{prefix}:{spec.name}"] = codes.reshape(x.shape)
        arrays[f"vocab:{spec.name}"] = np.array(len(values) + 1)
    for split, (_, label) in raw.items():
        arrays[f"{split}/label"] = label
    np.savez(out, **arrays)


def recpipe_side(config_path: str, model: str, epochs: int, seed: int) -> dict:
    """`recpipe train`'s own code path for one model, EPOCHS epochs from SEED, then test AUC (sklearn)."""
    from sklearn.metrics import roc_auc_score

    from jobs import artifacts
    from jobs.config import load_config
    from jobs.train_models import load_training_inputs, train_one
    from training.baselines import score_test
    from training.saved_models import load_trained

    config = load_config(config_path)
    update = {"max_epochs": epochs, "early_stopping_patience": epochs, "seed": seed}
    training = config.training.model_copy(update=update)
    config = config.model_copy(update={"training": training})
    inputs = load_training_inputs(config.paths.warehouse, None, needs_gbdt=False)
    summary = train_one(model, config, inputs)
    trained = load_trained(artifacts.model_dir(config.paths.warehouse, model, inputs["version"]) / "model.keras")
    scored = score_test(trained, inputs["source"] / "parquet")
    return {
        "examples_per_second": summary["train_examples_per_second"],
        "steady_examples_per_second": summary["steady_examples_per_second"],
        "first_batch_seconds": summary["first_batch_seconds"],
        "valid_auc": summary["best_val_auc"],
        "test_auc": float(roc_auc_score(scored["label"], scored["prediction"])),
    }


def recpipe_steps_per_execution(config) -> int:
    """What `recpipe train` resolves `training.steps_per_execution` to on these samples."""
    from jobs.train_models import load_training_inputs
    from training.train import steps_per_execution

    manifest = load_training_inputs(config.paths.artifacts_home(), None, needs_gbdt=False)["manifest"]
    return steps_per_execution(
        config.training.steps_per_execution, manifest["splits"]["train"]["rows"], config.training.batch_size
    )


def auc_difference(results: dict[tuple, list[dict]], model: str) -> str:
    """recpipe - DeepCTR test AUC, paired by seed (round): the mean, its standard error over the seeds,
    and in how many seeds recpipe was at least as high."""
    pairs = [
        ours["test_auc"] - peer["test_auc"]
        for ours, peer in zip(results[(model, "recpipe")], results[(model, "DeepCTR")])
    ]
    text = f"{statistics.fmean(pairs):+.4f}"
    if len(pairs) > 1:
        text += f" (paired over {len(pairs)} seeds: SE {statistics.stdev(pairs) / len(pairs) ** 0.5:.4f}, "
        text += f"recpipe >= DeepCTR in {sum(d >= 0 for d in pairs)}; per seed {' '.join(f'{d:+.4f}' for d in pairs)})"
    return text


def run_json(command: list[str], env: dict | None = None) -> dict:
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/movielens.yaml")
    parser.add_argument("--models", default="deepfm,wide_deep")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--seeds",
        help="comma-separated training seeds, one per timed round (replaces --repeats); default: "
        "training.seed in every round",
    )
    parser.add_argument(
        "--deepctr-hashing",
        action="store_true",
        help="DeepCTR gets recpipe's hash bins for the spec's hashing fields (ids), not a train vocabulary",
    )
    parser.add_argument(
        "--deepctr-like-recpipe",
        default="",
        help="comma-separated recpipe choices DeepCTR takes instead of its own: uniform_start (embeddings "
        "start at uniform(-0.05, 0.05), each table its own draw, not N(0, 1e-4)), wide_linear (WDL's linear "
        "part over the spec's `wide` fields only, not every field)",
    )
    parser.add_argument("--recpipe-side", nargs=3, metavar=("MODEL", "EPOCHS", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recpipe_side:
        model, epochs, seed = args.recpipe_side
        print(json.dumps(recpipe_side(args.config, model, int(epochs), int(seed))))
        return 0
    if not DEEPCTR_PYTHON.exists():
        print(f"{DEEPCTR_PYTHON} is missing: run make bench-peers", file=sys.stderr)
        return 2

    from jobs.config import load_config

    config = load_config(args.config)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    like = [c for c in args.deepctr_like_recpipe.split(",") if c]
    unknown = sorted(set(like) - set(LIKE_RECPIPE))
    if unknown:
        parser.error(f"--deepctr-like-recpipe: unknown choice {unknown[0]!r} ({', '.join(LIKE_RECPIPE)})")
    if "uniform_start" in like:
        env["DEEPCTR_EMBEDDINGS_UNIFORM"] = "0.05"
    if "wide_linear" in like:
        from features.feature_spec import load_spec

        env["DEEPCTR_LINEAR_FIELDS"] = ",".join(f.name for f in load_spec().model_features() if "wide" in f.roles)
    results: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        fields = Path(scratch) / "fields.npz"
        encode_fields(config.paths.warehouse, fields, args.deepctr_hashing)
        steps = recpipe_steps_per_execution(config)
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [config.training.seed] * args.repeats
        for round_, seed in enumerate([seeds[0], *seeds]):  # round 0 warms up (page cache, pyc), not counted
            for model in args.models.split(","):
                params = config.models.params(model)
                peer = [str(DEEPCTR_PYTHON), str(REPO / "bench" / "peers" / "deepctr_side.py"), str(fields)]
                peer += [model, str(params.embedding_dim), ",".join(str(u) for u in params.hidden_units)]
                peer += [str(params.dropout), str(params.learning_rate), str(args.epochs)]
                peer += [str(config.training.batch_size), str(seed)]
                peer += [str(steps)]  # start-up timed over as many batches as recpipe's first call trains
                ours = [sys.executable, __file__, "--config", args.config, "--recpipe-side", model, str(args.epochs)]
                ours += [str(seed)]
                for side, command in (("recpipe", ours), ("DeepCTR", peer)):
                    result = run_json(command, env if side == "DeepCTR" else None)
                    if round_:
                        results.setdefault((model, side), []).append(result)
    print(f"{args.epochs} epochs, batch {config.training.batch_size}; median of {len(seeds)} after a warm-up round")
    print(f"seeds {','.join(map(str, seeds))}; test AUC: the mean over them")
    if args.deepctr_hashing:
        print("DeepCTR's hashed fields: recpipe's hash bins (--deepctr-hashing)")
    if like:
        print(f"DeepCTR with recpipe's {', '.join(like)} (--deepctr-like-recpipe)")
    print(f"start-up: epoch 1 to the end of its first {steps} batch(es) (training.steps_per_execution)")
    print(f"{'model':<10} {'side':<8} {'ex/s':>8} {'steady':>8} {'start-up s':>11} {'test AUC':>8}")
    medians = {}
    for (model, side), runs in results.items():
        row = {
            key: statistics.median(r[key] for r in runs)
            for key in ("examples_per_second", "steady_examples_per_second")
        }
        row["test_auc"] = statistics.fmean(r["test_auc"] for r in runs)
        row["first"] = statistics.median(r["first_batch_seconds"][0] for r in runs)
        medians[(model, side)] = row
        print(
            f"{model:<10} {side:<8} {row['examples_per_second']:>8,.0f} {row['steady_examples_per_second']:>8,.0f} "
            f"{row['first']:>11.1f} {row['test_auc']:>8.4f}"
        )
    for model in args.models.split(","):
        ours, peer = medians[(model, "recpipe")], medians[(model, "DeepCTR")]
        print(
            f"{model}: recpipe/DeepCTR whole-epoch ex/s {ours['examples_per_second'] / peer['examples_per_second']:.2f}x, "
            f"start-up {ours['first'] / peer['first']:.2f}x, test AUC {auc_difference(results, model)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
