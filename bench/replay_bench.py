"""Replay benchmark: warm vs cold start over the last days of MovieLens 100K or the synthetic demo logs.

    .venv/bin/python bench/replay_bench.py --source movielens [--days 30] [--train-days 14] [--models lr,deepfm]
    .venv/bin/python bench/replay_bench.py --source demo --days 5 --train-days 7   (conf/demo.yaml: 14 days)

Imports or generates the drops, ingests them and builds every snapshot (once: a rerun reuses
bench/out/replay-<source>/), then runs `recpipe replay --warm-start` over the last --days days and
prints its summary: mean per-day AUC of each model (cold and warm) and baseline, the warm - cold AUC
difference with its standard error over days, and the mean training seconds per day. One run on a
shared machine: compare AUCs and ratios of seconds, not absolute seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.cli import main as recpipe  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["movielens", "demo"], default="movielens")
    parser.add_argument("--days", type=int, default=30, help="test days, ending on the last labelable day")
    parser.add_argument("--train-days", type=int, default=14)
    parser.add_argument("--models", default="lr,deepfm")
    parser.add_argument(
        "--no-xgboost", action="store_true", help="leave out the XGBoost baseline (a Spark fit per day)"
    )
    parser.add_argument(
        "--warehouse",
        help="an existing warehouse with every snapshot of the source (e.g. the one "
        "`recpipe run --config conf/movielens.yaml` built): skips import, ingest, snapshot",
    )
    args = parser.parse_args()

    out = REPO / "bench" / "out" / f"replay-{args.source}"
    config = yaml.safe_load(
        (REPO / "conf" / ("movielens.yaml" if args.source == "movielens" else "demo.yaml")).read_text()
    )
    config["paths"] = {"raw": str(out / "raw"), "warehouse": args.warehouse or str(out / "warehouse")}
    if args.source == "movielens":
        config["source"]["movielens_path"] = str(REPO.parent / "shared" / "data" / "ml-100k")
    config["training"] = {**config.get("training", {}), "verbose": 0}
    config["replay"] = {**config.get("replay", {}), "xgboost": not args.no_xgboost}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    start, end = (
        dt.date.fromisoformat(str(config["dates"]["start"])),
        dt.date.fromisoformat(str(config["dates"]["end"])),
    )
    if not (Path(config["paths"]["warehouse"]) / "user_snapshot").exists():
        if args.source == "movielens":
            assert recpipe(["import-movielens", config["source"]["movielens_path"], "--out", str(out / "raw")]) == 0
        else:
            synthetic = config["source"].get("synthetic", {})
            assert (
                recpipe(
                    [
                        "generate-logs",
                        "--out",
                        str(out / "raw"),
                        "--start-date",
                        start.isoformat(),
                        "--days",
                        str((end - start).days + 1),
                        *[f"--{k.replace('_', '-')}={v}" for k, v in synthetic.items()],
                    ]
                )
                == 0
            )
        assert recpipe(["ingest", "--config", str(path)]) == 0
        assert recpipe(["snapshot", "--config", str(path)]) == 0
    last = end - dt.timedelta(days=1) if config["samples"].get("kind", "click") == "click" else end
    first = last - dt.timedelta(days=args.days - 1)
    code = recpipe(
        [
            "replay",
            "--config",
            str(path),
            "--start",
            first.isoformat(),
            "--end",
            last.isoformat(),
            "--train-days",
            str(args.train_days),
            "--models",
            args.models,
            "--warm-start",
        ]
    )
    reports = sorted(
        (Path(config["paths"]["warehouse"]) / "_artifacts" / "replay").glob("*/metrics.json"),
        key=lambda p: p.stat().st_mtime,
    )
    if reports:
        summary = json.loads(reports[-1].read_text())["summary"]
        print(json.dumps(summary, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
