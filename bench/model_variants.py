"""Why DeepCTR's DeepFM scores higher after 2 epochs (issue 17): its three differences from ours, each alone
and together, scored on the valid split only.

    .venv/bin/python bench/deepfm_variants.py --config conf/movielens.yaml [--seeds 7,8] [--epochs 10]

Needs samples in the config's warehouse (`recpipe run --config conf/movielens.yaml`). Each run is the
objective `recpipe tune` scores a trial with (jobs/tune.py keras_objective: train from the samples'
Parquet shards, early stopping on valid AUC with the config's patience, `--epochs` at most; the test
split is never opened), so nothing is written to the warehouse. The differences (read in DeepCTR 0.9.4's
deepctr/models/deepfm.py and feature_column.py):

- numerics: DeepCTR feeds dense features to the linear part and the MLP as values; ours gave each
  numeric field an FM vector (`numeric_fm`);
- initialization: DeepCTR's embeddings start at N(0, 1e-4); ours at uniform(-0.05, 0.05)
  (`embedding_init_stddev`);
- regularization: DeepCTR puts L2 1e-5 on the embeddings and the linear part; ours had none (`l2`).

For lr, gbdt_lr and wide_deep the variants are the wide part's `numeric_buckets` off and on (and for lr
with all the spec's `crosses`); for wide_deep also the embeddings' start, uniform(-0.05, 0.05) or N(0, s)
for s = 1e-4 (DeepCTR's), 1e-3 or 1e-2.
For wide_deep and deepfm also `dropout_0.2` against the configured 0.5 (the searches chose 0.10-0.46),
and `ids_vocabulary` / `ids_vocabulary_min5`: the spec's `hashing` fields (ids) as a train vocabulary
instead (every value seen in train at least once / 5 times gets its own row; the rest, and every id first
seen after the split, share the out-of-vocabulary row), as DeepCTR's encoding does; the vocabulary is
read from the train split only.

"configured" is the config's `models.<model>`; for DeepFM (since issue 17: `numeric_fm: false`, `l2: 1e-5`);
"numerics_in_fm_no_l2" is the model before that change. Prints, per variant, the valid AUC at epoch 2 (the
peers bench's comparison point) and at the best epoch, each the mean over the seeds, and the difference
from the configured model. Keras training is not bit-reproducible across runs (thread scheduling moves a
seed's valid AUC by up to ~0.005), so compare over several seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WIDE_VARIANTS = {
    "configured": {},
    "values_only": {"numeric_buckets": False},
    "numeric_buckets": {"numeric_buckets": True},
}
ID_VOCABULARY = {"ids_vocabulary": 1, "ids_vocabulary_min5": 5}  # variant: min_count of the train vocabulary
VARIANTS = {  # model: {name: what replaces models.<model>'s values}
    "lr": {
        **WIDE_VARIANTS,
        "buckets_and_crosses": {"numeric_buckets": True, "crosses": True},
        "buckets_l2_1e-6": {"numeric_buckets": True, "l2": 1e-6},
        "buckets_l2_1e-5": {"numeric_buckets": True, "l2": 1e-5},
        "values_l2_1e-6": {"numeric_buckets": False, "l2": 1e-6},
    },
    "gbdt_lr": WIDE_VARIANTS,
    "wide_deep": {
        **WIDE_VARIANTS,
        "init_uniform": {"embedding_init_stddev": None},  # the default
        "init_normal_1e-4": {"embedding_init_stddev": 1e-4},
        "init_normal_1e-3": {"embedding_init_stddev": 1e-3},
        "init_normal_1e-2": {"embedding_init_stddev": 1e-2},
        "dropout_0.2": {"dropout": 0.2},
        **{name: {} for name in ID_VOCABULARY},
    },
}
VARIANTS["deepfm"] = {
    "configured": {},
    "numerics_in_fm_no_l2": {"numeric_fm": True, "embedding_init_stddev": None, "l2": 0.0},  # before issue 17's change
    "numerics_as_values": {"numeric_fm": False},
    "init_normal_1e-4": {"embedding_init_stddev": 1e-4},
    "l2_1e-5": {"l2": 1e-5},
    "deepctr_all_three": {"numeric_fm": False, "embedding_init_stddev": 1e-4, "l2": 1e-5},
    "values_and_init": {"numeric_fm": False, "embedding_init_stddev": 1e-4},
    "values_and_l2": {"numeric_fm": False, "l2": 1e-5},
    "dropout_0.2": {"dropout": 0.2},
    **{name: {} for name in ID_VOCABULARY},
}


def ids_as_vocabulary(transforms: dict, train_files: list, min_count: int) -> dict:
    """`transforms` with every `hashing` feature replaced by a vocabulary of its train values seen at
    least `min_count` times, most frequent first (ties by value), as features/transforms.py orders one
    (without its size cap; counted with pyarrow, so the bench needs no Spark session)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    hashed = [name for name, fitted in transforms.items() if fitted["transform"] == "hashing"]
    table = pq.ParquetDataset(train_files).read(columns=hashed)
    replaced = dict(transforms)
    for name in hashed:
        column = table.column(name)
        if pa.types.is_list(column.type):
            column = pc.list_flatten(column)
        counts = {c["values"]: c["counts"] for c in pc.value_counts(pc.drop_null(column)).to_pylist()}
        kept = sorted((v for v, n in counts.items() if n >= min_count), key=lambda v: (-counts[v], str(v)))
        replaced[name] = {**transforms[name], "transform": "vocabulary", "values": kept, "num_oov_buckets": 1}
    return replaced


def at_epoch_2(run: dict) -> float:
    """The valid AUC after the second epoch (the peers bench's point), or the last if it stopped before."""
    history = run["valid_auc_per_epoch"]
    return history[min(1, len(history) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/movielens.yaml")
    parser.add_argument("--seeds", default="7,8")
    parser.add_argument("--epochs", type=int, default=10, help="at most, with the config's early stopping")
    parser.add_argument("--model", choices=sorted(VARIANTS), default="deepfm")
    parser.add_argument("--variants", help="comma-separated names of VARIANTS[model] (default: all of them)")
    parser.add_argument("--json", help="also write the runs here")
    args = parser.parse_args()

    from jobs.config import load_config
    from jobs.train_models import load_training_inputs
    from jobs.tune import keras_objective
    from training.inputs import split_files
    from training.tuning import BudgetClock

    config = load_config(args.config)
    variants = VARIANTS[args.model]
    names = args.variants.split(",") if args.variants else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r} for {args.model}: {', '.join(variants)}")
    inputs = load_training_inputs(config.paths.artifacts_home(), None, needs_gbdt=args.model == "gbdt_lr")
    configured = config.models.params(args.model).model_dump()
    train_files = split_files(inputs["source"] / "parquet", "train")
    transforms = {
        name: ids_as_vocabulary(inputs["transforms"], train_files, ID_VOCABULARY[name])
        for name in names
        if name in ID_VOCABULARY
    }
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        training = config.training.model_copy(update={"seed": seed, "max_epochs": args.epochs})
        settings = config.model_copy(update={"training": training})
        objectives = {
            name: keras_objective(
                args.model, settings, {**inputs, "transforms": transforms.get(name, inputs["transforms"])}
            )
            for name in names
        }
        for name in names:
            started = time.perf_counter()
            outcome = objectives[name](variants[name], BudgetClock(24 * 3600))
            runs.append({"variant": name, "seed": seed, **outcome, "seconds": time.perf_counter() - started})
            print(
                f"seed {seed} {name:<20} epoch-2 {at_epoch_2(outcome):.4f} "
                f"best {outcome['valid_auc']:.4f} (epoch {outcome['best_epoch']}) {runs[-1]['seconds']:.0f} s",
                flush=True,
            )
    print(
        f"\n{args.model} on samples v{inputs['version']}, valid AUC, mean of seeds {args.seeds}; configured: {configured}"
    )
    print(f"{'variant':<22} {'epoch 2':>8} {'vs conf':>8} {'best':>8} {'vs conf':>8} {'best epochs':>12}")
    means = {}
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        at2 = statistics.mean(at_epoch_2(r) for r in mine)
        means[name] = (at2, statistics.mean(r["valid_auc"] for r in mine), ",".join(str(r["best_epoch"]) for r in mine))
    base = means.get("configured", means[names[0]])
    for name, (at2, best, epochs) in means.items():
        print(f"{name:<22} {at2:>8.4f} {at2 - base[0]:>+8.4f} {best:>8.4f} {best - base[1]:>+8.4f} {epochs:>12}")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
