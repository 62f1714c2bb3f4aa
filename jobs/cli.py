"""The `recpipe` command line: one sub-command per pipeline stage, plus `run` for all of them.

User mistakes (bad dates, missing files or config keys, missing drops) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

from features.errors import PipelineInputError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as argparse does, but without the usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pipeline YAML (default: conf/demo.yaml)")
    parser.add_argument("--master", help="Spark master URL, e.g. local[2], yarn, k8s://https://host:443")
    parser.add_argument("--warehouse", help="root of the Delta tables (overrides paths.warehouse)")
    parser.add_argument("--raw", help="root of the raw daily drops (overrides paths.raw)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Spark setting, repeatable")
    parser.add_argument("--spark-submit", action="store_true", help=argparse.SUPPRESS)


def _add_dates(parser: argparse.ArgumentParser, single: bool = True) -> None:
    if single:
        parser.add_argument("--date", help="one day, YYYY-MM-DD")
    parser.add_argument("--start", help="first day of a range, YYYY-MM-DD")
    parser.add_argument("--end", help="last day of a range, YYYY-MM-DD")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recpipe", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    generate = commands.add_parser("generate-logs", help="write synthetic daily log drops")
    generate.add_argument("--out", required=True, help="raw drops root to write")
    generate.add_argument("--start-date", default="2026-01-01")
    generate.add_argument("--days", type=int, default=30)
    generate.add_argument("--users", type=int, default=5000)
    generate.add_argument("--items", type=int, default=2000)
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--impressions-per-user-day", type=float, default=4.0)

    movielens = commands.add_parser("import-movielens", help="turn a MovieLens directory into daily drops")
    movielens.add_argument("path", help="ml-100k (u.data, u.item, u.user) or CSV layout (ratings.csv, movies.csv)")
    movielens.add_argument("--out", required=True, help="raw drops root to write")

    ingest = commands.add_parser("ingest", help="validate raw drops into the Delta tables")
    _add_common(ingest)
    _add_dates(ingest)
    ingest.add_argument("--allow-missing", action="store_true", help="skip days whose events drop is missing")

    snapshot = commands.add_parser("snapshot", help="build daily aggregates and feature snapshots")
    _add_common(snapshot)
    _add_dates(snapshot)
    snapshot.add_argument("--allow-missing", action="store_true", help="build days whose events drop is missing")

    samples = commands.add_parser("samples", help="labels, point-in-time join, time split, fitted transforms")
    _add_common(samples)
    _add_dates(samples)
    samples.add_argument("--allow-incomplete-labels", action="store_true",
                         help="label the last day without the next day's clicks")

    gbdt = commands.add_parser("gbdt", help="train XGBoost on the samples and write leaf features")
    _add_common(gbdt)
    gbdt.add_argument("--samples-version", type=int, help="samples Delta version (default: the latest built)")

    train = commands.add_parser("train", help="train the TensorFlow ranking models on the samples")
    _add_common(train)
    train.add_argument("--model", default="all", help="lr, gbdt_lr, wide_deep, deepfm or all (default: training.models)")
    train.add_argument("--samples-version", type=int, help="samples Delta version (default: the latest built)")

    evaluate = commands.add_parser("evaluate", help="compare the trained models and baselines on the test split")
    _add_common(evaluate)
    evaluate.add_argument("--samples-version", type=int, help="samples Delta version (default: the latest built)")

    run = commands.add_parser("run", help="run every pipeline stage for the configured date range")
    _add_common(run)
    _add_dates(run, single=False)

    tables = commands.add_parser("tables", help="list the pipeline tables with version and partitions")
    _add_common(tables)
    return parser


def _overrides(args) -> dict:
    extra = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep:
            raise PipelineInputError(f"--conf expects KEY=VALUE, got '{item}'")
        extra[f"spark.conf.{key}"] = value
    return {"spark.master": args.master, "paths.warehouse": args.warehouse, "paths.raw": args.raw,
            "dates.start": getattr(args, "start", None), "dates.end": getattr(args, "end", None), **extra}


def _dates(args, config) -> list:
    from jobs.config import date_range, get_key, parse_date

    if getattr(args, "date", None):
        if args.start or args.end:
            raise PipelineInputError("give either --date or --start/--end, not both")
        day = parse_date(args.date)
        return [day]
    return date_range(get_key(config, "dates.start"), get_key(config, "dates.end"))


def _session(config, args):
    from features.tables import open_tables
    from jobs.config import get_key
    from jobs.spark_session import build_session

    spark_config = dict(config["spark"])
    if args.spark_submit and not args.master:
        spark_config.pop("master", None)  # spark-submit's --master wins
    backend = get_key(config, "delta.backend", "auto")
    spark = build_session(spark_config, backend)
    return spark, open_tables(spark, get_key(config, "paths.warehouse"), backend)


def cmd_generate_logs(args) -> int:
    from features.synthetic_logs import generate_logs
    from jobs.config import parse_date

    if min(args.days, args.users, args.items) <= 0:
        raise PipelineInputError("--days, --users and --items must be positive")
    summary = generate_logs(args.out, start_date=parse_date(args.start_date, "--start-date"), days=args.days,
                            users=args.users, items=args.items, seed=args.seed,
                            impressions_per_user_day=args.impressions_per_user_day)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_import_movielens(args) -> int:
    from features.movielens import import_movielens

    print(json.dumps(import_movielens(args.path, args.out), indent=2, default=str))
    return 0


def _stage(args, verb: str, work: Callable, formatter: Callable, dated: bool = True) -> int:
    """The shape every stage command shares: config, dates, session, run, print what was written."""
    from jobs.config import load_config

    config = load_config(args.config, _overrides(args))
    dates = _dates(args, config) if dated else None
    spark, tables = _session(config, args)
    started = time.time()
    result = work(spark, tables, config, dates)
    span = f" {dates[0]}..{dates[-1]}" if dates else ""
    print(f"{verb}{span} in {tables.root} in {time.time() - started:.1f}s")
    print(formatter(result))
    return 0


def cmd_ingest(args) -> int:
    from jobs.ingest import format_summary, ingest

    def work(spark, tables, config, dates):
        if args.allow_missing:
            config = {**config, "ingest": {**(config.get("ingest") or {}), "allow_missing_drops": True}}
        return ingest(spark, tables, config, dates)

    return _stage(args, "ingested", work, format_summary)


def cmd_snapshot(args) -> int:
    from jobs.build_snapshot import build_snapshots, format_summary

    return _stage(args, "built snapshots", lambda spark, tables, config, dates: build_snapshots(
        spark, tables, config, dates, allow_missing=args.allow_missing), format_summary)


def cmd_samples(args) -> int:
    from jobs.build_samples import build_samples, format_summary

    return _stage(args, "built samples", lambda spark, tables, config, dates: build_samples(
        spark, tables, config, dates, allow_incomplete_labels=args.allow_incomplete_labels), format_summary)


def cmd_gbdt(args) -> int:
    from jobs.train_gbdt import format_summary, train_gbdt

    return _stage(args, "trained gbdt", lambda spark, tables, config, dates: train_gbdt(
        spark, tables, config, args.samples_version), format_summary, dated=False)


def cmd_train(args) -> int:
    from jobs.config import load_config
    from jobs.train_models import format_summary, resolve_models, train_models

    config = load_config(args.config, _overrides(args))
    models = resolve_models(config, args.model)
    print(format_summary(train_models(config, models, args.samples_version)))
    return 0


def cmd_evaluate(args) -> int:
    from jobs.config import load_config
    from jobs.evaluate_models import evaluate, format_summary

    config = load_config(args.config, _overrides(args))
    print(format_summary(evaluate(config, args.samples_version)))
    return 0


def cmd_run(args) -> int:
    from jobs.config import load_config
    from jobs.pipeline import run_pipeline

    config = load_config(args.config, _overrides(args))
    dates = _dates(args, config)
    run_pipeline(config, dates, lambda: _session(config, args))
    return 0


def cmd_tables(args) -> int:
    from features.tables import describe
    from jobs.config import load_config
    from jobs.pipeline import format_tables

    config = load_config(args.config, _overrides(args))
    spark, tables = _session(config, args)
    print(format_tables(describe(tables, tables.names())))
    return 0


COMMANDS: dict[str, Callable] = {
    "generate-logs": cmd_generate_logs,
    "import-movielens": cmd_import_movielens,
    "ingest": cmd_ingest,
    "snapshot": cmd_snapshot,
    "samples": cmd_samples,
    "gbdt": cmd_gbdt,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "run": cmd_run,
    "tables": cmd_tables,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (PipelineInputError, FileNotFoundError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"recpipe {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
