"""The `recpipe` command line: one sub-command per pipeline stage, plus `run` for all of them.

User mistakes (bad dates, missing files, config keys that are missing or unknown, config values of the
wrong type or outside the allowed ones, missing drops, a bad query or request) print one line and exit 2;
the other exit codes are listed in features.errors and the README. Only a bug prints a traceback (exit 1).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from features.errors import (
    ConcurrentWriteError,
    OnlineStoreUnreachable,
    PipelineInputError,
    PublishRefused,
    QualityCheckFailed,
    SparkMasterUnreachable,
)

EXIT_INTERNAL = 1  # a bug: the traceback is printed
EXIT_USAGE = 2  # the user's input or usage: arguments, config, files, a query, a request
EXIT_REFUSED = 3  # the publish gate or the parity check refused: nothing was published
EXIT_QUALITY = 4  # a data quality check of severity error failed: downstream stages must not run
EXIT_CONFLICT = 5  # another writer won the commit race: nothing was committed, a rerun can succeed
EXIT_UNREACHABLE = 6  # the Spark master accepts no connection: a retry can help once the cluster is up
EXIT_STORE_UNREACHABLE = 7  # the Redis online store accepts no connection: a retry can help once it is up
# OSErrors that only a path the user gave can cause (permissions, a file where a directory should be)
USER_OS_ERRORS = (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as argparse does, but without the usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got '{text}'")
    return value


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a version number (0, 1, ...), got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a version number (0, 1, ...), got '{text}'")
    return value


def _add_samples_version(parser: argparse.ArgumentParser) -> None:
    """The samples version a stage reads: the DAG always passes it; people may leave it to the latest."""
    parser.add_argument("--samples-version", type=_version, help="samples Delta version (default: the latest built)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def _timestamp(text: str):
    import datetime as dt

    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid timestamp '{text}': use ISO 8601, e.g. 2026-01-05T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pipeline YAML (default: conf/demo.yaml)")
    parser.add_argument("--master", help="Spark master URL, e.g. local[2], yarn, k8s://https://host:443")
    parser.add_argument("--warehouse", help="root of the Delta tables (overrides paths.warehouse)")
    parser.add_argument("--raw", help="root of the raw daily drops (overrides paths.raw)")
    parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting, repeatable"
    )
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
    generate.add_argument(
        "--ctr-drift", type=float, default=0.0, help="click logit shift on the last day (0 on the first), -5..5"
    )

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
    snapshot.add_argument(
        "--no-cascade",
        action="store_true",
        help="do not rebuild the later snapshots that exist (they are printed as stale)",
    )

    samples = commands.add_parser("samples", help="labels, point-in-time join, time split, fitted transforms")
    _add_common(samples)
    _add_dates(samples)
    samples.add_argument(
        "--allow-incomplete-labels", action="store_true", help="label the last day without the next day's clicks"
    )
    samples.add_argument(
        "--ignore-quality-failures",
        action="store_true",
        help="build samples even from days whose events or snapshots failed a quality check",
    )

    gbdt = commands.add_parser("gbdt", help="train XGBoost on the samples and write leaf features")
    _add_common(gbdt)
    _add_samples_version(gbdt)
    gbdt.add_argument(
        "--tuned", action="store_true", help="use the XGBoost parameters recpipe tune chose (gbdt.use_tuned)"
    )

    train = commands.add_parser("train", help="train the TensorFlow ranking models on the samples")
    _add_common(train)
    train.add_argument(
        "--model", default="all", help="lr, gbdt_lr, wide_deep, deepfm or all (default: training.models)"
    )
    _add_samples_version(train)
    train.add_argument(
        "--tuned", action="store_true", help="use the parameters recpipe tune chose (training.use_tuned)"
    )
    train.add_argument(
        "--warm-start",
        action="store_true",
        help="start each model from its newest model on an older samples version (training.warm_start)",
    )

    tune = commands.add_parser("tune", help="seeded hyperparameter search on the valid split (never the test split)")
    _add_common(tune)
    tune.add_argument(
        "--model", default="all", help="lr, gbdt_lr, wide_deep, deepfm, xgboost or all (training.models and xgboost)"
    )
    tune.add_argument(
        "--budget-minutes", type=_positive_float, required=True, help="wall-clock budget (split evenly across models)"
    )
    tune.add_argument("--trials", type=_positive_int, help="at most this many trials per model (default: the budget)")
    _add_samples_version(tune)
    tune.add_argument("--seed", type=int, help="the search's seed (default: training.seed)")

    evaluate = commands.add_parser("evaluate", help="compare the trained models and baselines on the test split")
    _add_common(evaluate)
    _add_samples_version(evaluate)

    export = commands.add_parser("export", help="SavedModel for TF Serving, published behind the quality gate")
    _add_common(export)
    export.add_argument(
        "--model", default="all", help="lr, gbdt_lr, wide_deep, deepfm or all (default: training.models)"
    )
    _add_samples_version(export)
    export.add_argument("--force", action="store_true", help="publish even if the quality gate says no")
    export.add_argument("--export-root", help="root of the published SavedModels (overrides export.root)")

    predict = commands.add_parser("predict", help="answer a TF Serving REST request body with a SavedModel")
    predict.add_argument("--model-dir", required=True, help="a SavedModel directory, e.g. export/deepfm/3")
    predict.add_argument(
        "--request", required=True, help="JSON file: {'instances': [...]} or {'inputs': {...}}; - reads standard input"
    )
    predict.add_argument(
        "--signature", help="signature name (default: the request's signature_name or serving_default)"
    )

    replay = commands.add_parser("replay", help="per-day replay: train on the N days before each day, test on it")
    _add_common(replay)
    replay.add_argument("--start", required=True, help="first test day, YYYY-MM-DD")
    replay.add_argument("--end", required=True, help="last test day, YYYY-MM-DD")
    replay.add_argument("--train-days", type=_positive_int, required=True, help="days of samples before each test day")
    replay.add_argument("--models", help="comma-separated: lr, wide_deep, deepfm (default: replay.models)")
    replay.add_argument(
        "--warm-start",
        action="store_true",
        help="also warm: each day's model starts from the day before's and trains on the newest days",
    )

    run = commands.add_parser("run", help="run every pipeline stage for the configured date range")
    _add_common(run)
    run.add_argument("--export-root", help="root of the published SavedModels (overrides export.root)")
    _add_dates(run, single=False)

    tables = commands.add_parser("tables", help="list the pipeline tables with version, partitions, rows, last commit")
    _add_common(tables)

    history = commands.add_parser("history", help="the commits of one table and the runs that made them")
    _add_common(history)
    history.add_argument("table", help="a table name, e.g. user_snapshot")
    history.add_argument("--limit", type=_positive_int, default=20, help="newest commits to show (default 20)")

    sql = commands.add_parser("sql", help="Spark SQL over every pipeline table, optionally as of the past")
    _add_common(sql)
    sql.add_argument("query", help='e.g. "SELECT snapshot_date, count(*) FROM user_snapshot GROUP BY 1"')
    sql.add_argument(
        "--as-of-version",
        action="append",
        default=[],
        metavar="[TABLE=]N",
        help="read TABLE (or, without TABLE=, every table that has it) at Delta version N; repeatable",
    )
    sql.add_argument(
        "--as-of-timestamp",
        metavar="T",
        type=_timestamp,
        help="read every table as it was at T (ISO 8601, UTC if no zone)",
    )
    sql.add_argument(
        "--view",
        action="append",
        default=[],
        metavar="NAME=TABLE@N",
        help="also register TABLE at Delta version N as view NAME (compare versions); repeatable",
    )
    sql.add_argument("--out", help="write the whole result to FILE.parquet or FILE.csv instead of printing")
    sql.add_argument("--limit", type=_positive_int, default=50, help="rows to print (default 50)")

    features = commands.add_parser("features", help="the full feature row of entities as of a day (inactive ones too)")
    _add_common(features)
    features.add_argument("--entity", required=True, choices=["user", "item"])
    features.add_argument("--id", required=True, help="one id or several, comma-separated: 42 or 42,43")
    features.add_argument("--date", required=True, help="snapshot day, YYYY-MM-DD")

    publish = commands.add_parser("publish-features", help="write the features as of D into the Redis online store")
    _add_common(publish)
    publish.add_argument("--date", required=True, help="the day whose snapshot values are published, YYYY-MM-DD")

    request = commands.add_parser("request", help="a TF Serving REST body for a user and candidate items, from Redis")
    _add_common(request)
    request.add_argument("--user", required=True, type=int, help="user id")
    request.add_argument("--items", required=True, help="candidate item ids, comma-separated: 7,9,12")
    request.add_argument(
        "--context", default="", help="event columns of the request: device=mobile,page=home,position=0"
    )
    request.add_argument("--time", type=_timestamp, help="request time for hour/weekday (ISO 8601; default now, UTC)")
    request.add_argument("--version", type=_positive_int, help="a kept online store version (default: the served one)")

    skew = commands.add_parser("skew-check", help="requests from the online store vs the samples of a day")
    _add_common(skew)
    skew.add_argument("--date", required=True, help="the samples' day E (the store published for E-1 is read)")
    skew.add_argument(
        "--rows", type=_positive_int, help="labeled events to compare (default online_store.skew_check_rows)"
    )
    skew.add_argument("--model-dir", help="SavedModel to score both with (default: the newest export of --model)")
    skew.add_argument(
        "--model", help="model whose newest export scores (default: the first of training.models exported)"
    )

    register = commands.add_parser("register", help="create metastore tables (delta-spark clusters)")
    _add_common(register)
    register.add_argument("--database", default="recpipe")
    register.add_argument("--dry-run", action="store_true", help="print the statements only")

    clean = commands.add_parser("clean-orphans", help="remove files no Delta version references and stale staging dirs")
    _add_common(clean)
    clean.add_argument(
        "--older-than-minutes",
        type=float,
        default=60,
        help="only orphans whose newest file is older than this (default 60: in-flight writes are safe)",
    )
    clean.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    clean.add_argument("--table", help="only this table (default: every table, and the export root's staging dirs)")
    clean.add_argument("--export-root", help="export root to clean of .staging-* dirs (default: export.root)")

    docs = commands.add_parser("docs", help="regenerate docs/features.md from schemas/features.yaml")
    docs.add_argument("--out", default=None, help="output file (default: docs/features.md of the checkout)")
    return parser


def _overrides(args) -> dict:
    extra = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep:
            raise PipelineInputError(f"--conf expects KEY=VALUE, got '{item}'")
        extra[f"spark.conf.{key}"] = value
    return {
        "spark.master": args.master,
        "paths.warehouse": args.warehouse,
        "paths.raw": args.raw,
        "export.root": getattr(args, "export_root", None),
        "dates.start": getattr(args, "start", None),
        "dates.end": getattr(args, "end", None),
        **extra,
    }


def _dates(args, config) -> list:
    from jobs.config import date_range, parse_date

    if getattr(args, "date", None):
        if args.start or args.end:
            raise PipelineInputError("give either --date or --start/--end, not both")
        day = parse_date(args.date)
        return [day]
    return date_range(config.dates.start, config.dates.end)


def _check_directory(path: str, what: str, write: bool = False) -> None:
    """A local directory the user named (or its nearest existing parent) must be a directory, and, to be
    written, writable; other file systems (s3a://, hdfs://) are left to their clients."""
    if "://" in path and not path.startswith("file:"):
        return
    local = Path(path.removeprefix("file://").removeprefix("file:")).absolute()
    existing = next(candidate for candidate in [local, *local.parents] if candidate.exists())
    if not existing.is_dir():
        raise PipelineInputError(f"{what} {path}: {existing} is a file, not a directory")
    if write:
        dirs = [existing] + ([child for child in existing.iterdir() if child.is_dir()] if existing == local else [])
        locked = [d for d in dirs if not os.access(d, os.W_OK | os.X_OK)]
        if locked:
            raise PipelineInputError(f"{what} {path} is not writable ({locked[0]}: permission denied)")


def _session(config, args, write: bool = False, lazy: bool = False):
    """The Spark session and the tables; `write`: the command writes tables, so the warehouse must be writable.

    `lazy`: the command may not need Spark at all (recpipe gbdt on samples that fit the driver); when the
    tables are delta-rs ones, the session is then None and the tables start it on their first Spark read or
    write. Under spark-submit the JVM runs anyway, and `auto` with the io.delta extension configured needs
    the session to tell whether its jars are there."""
    from features.tables import open_tables
    from jobs.spark_session import build_session

    _check_directory(config.paths.warehouse, "warehouse", write)
    spark_config = config.spark
    if args.spark_submit and not args.master:
        spark_config = spark_config.model_copy(update={"master": None})  # spark-submit's --master wins
    backend = config.delta.backend
    if lazy and not args.spark_submit and _delta_rs_without_session(backend, spark_config):
        start = functools.partial(build_session, spark_config, backend)
        return None, open_tables(start, config.paths.warehouse, "delta-rs", config.storage)
    spark = build_session(spark_config, backend)
    return spark, open_tables(spark, config.paths.warehouse, backend, config.storage)


def _delta_rs_without_session(backend: str, spark_config) -> bool:
    """The tables will be delta-rs ones, known without starting Spark (the config asks for delta-rs, or
    for auto without the io.delta extension, which is what makes delta-spark available)."""
    extensions = str(spark_config.conf.get("spark.sql.extensions", ""))
    return backend == "delta-rs" or (backend == "auto" and "io.delta" not in extensions)


def cmd_generate_logs(args) -> int:
    from features.synthetic_logs import generate_logs
    from jobs.config import parse_date

    if min(args.days, args.users, args.items) <= 0:
        raise PipelineInputError("--days, --users and --items must be positive")
    rate = args.impressions_per_user_day
    if not (math.isfinite(rate) and rate > 0):
        raise PipelineInputError(f"--impressions-per-user-day must be a positive number, not {rate}")
    if not (math.isfinite(args.ctr_drift) and abs(args.ctr_drift) <= 5):
        raise PipelineInputError(f"--ctr-drift must be a logit shift between -5 and 5, not {args.ctr_drift}")
    _check_directory(args.out, "--out", write=True)
    summary = generate_logs(
        args.out,
        start_date=parse_date(args.start_date, "--start-date"),
        days=args.days,
        users=args.users,
        items=args.items,
        seed=args.seed,
        impressions_per_user_day=args.impressions_per_user_day,
        ctr_drift=args.ctr_drift,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_import_movielens(args) -> int:
    from features.movielens import import_movielens

    _check_directory(args.out, "--out", write=True)
    print(json.dumps(import_movielens(args.path, args.out), indent=2, default=str))
    return 0


def _stage(args, verb: str, work: Callable, formatter: Callable, dated: bool = True, lazy: bool = False) -> int:
    """The shape every stage command shares: config, dates, session, run, print what was written."""
    from jobs.config import load_config

    config = load_config(args.config, _overrides(args))
    dates = _dates(args, config) if dated else None
    spark, tables = _session(config, args, write=True, lazy=lazy)
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
            config = config.model_copy(
                update={"ingest": config.ingest.model_copy(update={"allow_missing_drops": True})}
            )
        return ingest(spark, tables, config, dates)

    return _stage(args, "ingested", work, format_summary)


def cmd_snapshot(args) -> int:
    from jobs.build_snapshot import build_snapshots, format_summary

    return _stage(
        args,
        "built snapshots",
        lambda spark, tables, config, dates: build_snapshots(
            spark, tables, config, dates, allow_missing=args.allow_missing, cascade=not args.no_cascade
        ),
        format_summary,
    )


def cmd_samples(args) -> int:
    from jobs.build_samples import build_samples, format_summary

    # the last stdout line, samples_version=N, is for machines: the DAG passes N on to gbdt/train/compare/export
    return _stage(
        args,
        "built samples",
        lambda spark, tables, config, dates: build_samples(
            spark,
            tables,
            config,
            dates,
            allow_incomplete_labels=args.allow_incomplete_labels,
            ignore_quality_failures=args.ignore_quality_failures,
        ),
        lambda manifest: f"{format_summary(manifest)}\nsamples_version={manifest['samples_version']}",
    )


def cmd_gbdt(args) -> int:
    from jobs.train_gbdt import format_summary, train_gbdt

    def work(spark, tables, config, dates):
        if args.tuned:
            config = config.model_copy(update={"gbdt": config.gbdt.model_copy(update={"use_tuned": True})})
        return train_gbdt(spark, tables, config, args.samples_version)

    return _stage(
        args,
        "trained gbdt",
        work,
        format_summary,
        dated=False,
        lazy=True,
    )


def cmd_train(args) -> int:
    from jobs.config import load_config
    from jobs.settings import resolve_models
    from jobs.train_models import format_summary, train_models

    config = load_config(args.config, _overrides(args))
    models = resolve_models(config, args.model)
    if args.tuned:
        config = config.model_copy(update={"training": config.training.model_copy(update={"use_tuned": True})})
    if args.warm_start:
        config = config.model_copy(update={"training": config.training.model_copy(update={"warm_start": True})})
    print(format_summary(train_models(config, models, args.samples_version)))
    return 0


def cmd_tune(args) -> int:
    from jobs.config import load_config
    from jobs.tune import format_summary, resolve_tunable, tune

    config = load_config(args.config, _overrides(args))
    models = resolve_tunable(config, args.model)
    print(format_summary(tune(config, models, args.budget_minutes, args.trials, args.samples_version, args.seed)))
    return 0


def cmd_evaluate(args) -> int:
    from jobs.config import load_config
    from jobs.evaluate_models import evaluate, format_summary

    config = load_config(args.config, _overrides(args))
    print(format_summary(evaluate(config, args.samples_version)))
    return 0


def cmd_export(args) -> int:
    from jobs.config import load_config
    from jobs.export_model import export_models, format_summary
    from jobs.settings import resolve_models

    config = load_config(args.config, _overrides(args))
    result = export_models(config, resolve_models(config, args.model), args.samples_version, args.force)
    print(format_summary(result))
    for refusal in result["refused"]:
        print(f"recpipe export: refused: {refusal}", file=sys.stderr)
    return EXIT_REFUSED if result["refused"] else 0


def cmd_publish_features(args) -> int:
    from jobs.config import parse_date
    from jobs.publish_features import format_publish, publish

    day = parse_date(args.date, "--date")
    return _stage(
        args,
        "published features",
        lambda spark, tables, config, dates: publish(spark, tables, config, day),
        format_publish,
        dated=False,
    )


def _context(text: str) -> dict:
    context = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PipelineInputError(f"--context expects KEY=VALUE pairs separated by commas, got '{item}'")
        context[key.strip()] = value.strip()
    from features.feature_spec import load_spec

    known = sorted(
        {f.column for f in load_spec().model_features() if f.kind == "event_column"} - {"user_id", "item_id"}
    )
    unknown = sorted(set(context) - set(known))
    if unknown:
        raise PipelineInputError(f"--context: unknown key {unknown[0]} (known: {', '.join(known)})")
    return context


def cmd_request(args) -> int:
    from features.online_store import OnlineStore
    from jobs.config import load_config
    from training.online_requests import build_request

    try:
        items = [int(i) for i in args.items.split(",") if i.strip()]
    except ValueError:
        raise PipelineInputError(f"--items expects comma-separated whole numbers, got '{args.items}'") from None
    if not items:
        raise PipelineInputError("--items needs at least one item id")
    context = _context(args.context)
    config = load_config(args.config, _overrides(args))
    built = build_request(
        OnlineStore(config.online_store.location()), args.user, items, context, args.time, args.version
    )
    print(json.dumps(built.body))
    found = {name: sum(row[name] for row in built.indicators) for name in built.indicators[0]}
    print(
        f"online store version {built.version} ({built.date}); in the store: "
        + ", ".join(f"{name} {count}/{len(items)}" for name, count in found.items()),
        file=sys.stderr,
    )
    return 0


def cmd_skew_check(args) -> int:
    from jobs.config import parse_date
    from jobs.publish_features import format_skew_check, skew_check

    day = parse_date(args.date, "--date")
    return _stage(
        args,
        "skew-checked",
        lambda spark, tables, config, dates: skew_check(
            spark, tables, config, day, args.rows, args.model_dir, args.model
        ),
        format_skew_check,
        dated=False,
    )


def cmd_predict(args) -> int:
    model_dir, request = Path(args.model_dir), Path(args.request)
    if not (model_dir / "saved_model.pb").is_file():
        raise PipelineInputError(f"no SavedModel at {model_dir} (saved_model.pb missing)")
    if args.request != "-":
        if not request.exists():
            raise PipelineInputError(f"request file not found: {request}")
        if request.is_dir():
            raise PipelineInputError(f"request {request} is a directory, not a JSON file")
    try:
        body = json.loads((sys.stdin.buffer.read() if args.request == "-" else request.read_bytes()).decode("utf-8"))
    except UnicodeDecodeError as error:
        raise PipelineInputError(f"request {request} is not UTF-8 text (byte {error.start}: {error.reason})") from None
    except json.JSONDecodeError as error:
        raise PipelineInputError(f"request {request} is not valid JSON: {error}") from None
    from training.serving_requests import ModelError, RequestError, predict

    try:
        print(json.dumps(predict(str(model_dir), body, args.signature)))
    except RequestError as error:
        raise PipelineInputError(f"bad request {request}: {error}") from None
    except ModelError as error:
        raise PipelineInputError(f"cannot load the SavedModel at {model_dir}: {error}") from None
    return 0


def cmd_replay(args) -> int:
    from jobs.replay import check_window, format_summary, replay

    check_window(args.train_days)
    models = None
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in models if m not in ("lr", "wide_deep", "deepfm")]
        if unknown or not models:
            raise PipelineInputError(
                f"--models: '{(unknown or [args.models])[0]}' cannot be replayed: choose among "
                f"lr, wide_deep, deepfm (gbdt_lr needs a booster per day)"
            )
    return _stage(
        args,
        "replayed",
        lambda spark, tables, config, dates: replay(
            spark, tables, config, dates, args.train_days, models, args.warm_start
        ),
        format_summary,
    )


def cmd_run(args) -> int:
    from jobs.config import load_config
    from jobs.pipeline import run_pipeline

    config = load_config(args.config, _overrides(args))
    dates = _dates(args, config)
    run_pipeline(config, dates, lambda: _session(config, args, write=True))
    return 0


def cmd_tables(args) -> int:
    from features.tables import describe
    from jobs.config import load_config
    from jobs.pipeline import format_tables

    config = load_config(args.config, _overrides(args))
    spark, tables = _session(config, args)
    print(format_tables(describe(tables, tables.names())))
    return 0


def cmd_history(args) -> int:
    from jobs.analyst import format_history
    from jobs.config import load_config

    config = load_config(args.config, _overrides(args))
    spark, tables = _session(config, args)
    names = tables.names()
    if args.table not in names:  # a name, never a path: ../x or /x would read outside the warehouse
        path = any(c in args.table for c in "/\\") or args.table in (".", "..")
        what = f"{args.table!r} is a path, not a table name" if path else f"no table {args.table} under {tables.root}"
        raise PipelineInputError(f"{what}; tables: {', '.join(names) or 'none'}")
    print(format_history(args.table, tables.history(args.table, args.limit)))
    return 0


def cmd_sql(args) -> int:
    from jobs.analyst import parse_versions, parse_views, run_sql
    from jobs.config import load_config

    if args.as_of_version and args.as_of_timestamp:
        raise PipelineInputError("give either --as-of-version or --as-of-timestamp, not both")
    versions, views = parse_versions(args.as_of_version), parse_views(args.view)
    config = load_config(args.config, _overrides(args))
    spark, tables = _session(config, args)
    print(run_sql(spark, tables, args.query, versions, args.as_of_timestamp, args.out, args.limit, views))
    return 0


def cmd_features(args) -> int:
    from jobs.analyst import features_as_of, format_features
    from jobs.config import load_config, parse_date

    day = parse_date(args.date, "--date")
    ids = [i.strip() for i in args.id.split(",") if i.strip()]
    config = load_config(args.config, _overrides(args))
    spark, tables = _session(config, args)
    print(format_features(args.entity, features_as_of(tables, args.entity, ids, day)))
    return 0


def cmd_register(args) -> int:
    from features.sql_views import register_statements
    from jobs.config import load_config

    config = load_config(args.config, _overrides(args))
    spark, tables = _session(config, args)
    statements = register_statements(tables, args.database)
    if args.dry_run:
        print(";\n".join(statements) + ";")
        return 0
    if tables.backend != "delta-spark":
        raise PipelineInputError(
            f"register needs the delta-spark backend (this session uses {tables.backend}: no "
            f"Delta jars); use --dry-run to print the statements, or recpipe sql"
        )
    for statement in statements:
        spark.sql(statement)
    print(f"registered {len(statements) - 1} tables in database {args.database}")
    return 0


def cmd_clean_orphans(args) -> int:
    from jobs.config import load_config
    from jobs.maintenance import clean_orphans, format_report

    config = load_config(args.config, _overrides(args))
    result = clean_orphans(
        config.paths.required("warehouse"),
        args.export_root or config.export.root,
        args.table,
        args.older_than_minutes,
        args.dry_run,
        storage=config.storage,
    )
    print(format_report(result))
    return 0


def cmd_docs(args) -> int:
    from features.data_dictionary import render
    from features.feature_spec import load_spec

    out = Path(args.out) if args.out else Path(__file__).resolve().parents[1] / "docs" / "features.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(load_spec()))
    print(f"wrote {out}")
    return 0


COMMANDS: dict[str, Callable] = {
    "generate-logs": cmd_generate_logs,
    "import-movielens": cmd_import_movielens,
    "ingest": cmd_ingest,
    "snapshot": cmd_snapshot,
    "features": cmd_features,
    "samples": cmd_samples,
    "gbdt": cmd_gbdt,
    "train": cmd_train,
    "tune": cmd_tune,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "predict": cmd_predict,
    "publish-features": cmd_publish_features,
    "request": cmd_request,
    "skew-check": cmd_skew_check,
    "replay": cmd_replay,
    "run": cmd_run,
    "tables": cmd_tables,
    "history": cmd_history,
    "sql": cmd_sql,
    "register": cmd_register,
    "docs": cmd_docs,
    "clean-orphans": cmd_clean_orphans,
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines are not for users
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (already printed on one line) and --help
        return int(stop.code or 0)
    prefix = f"recpipe {args.command}:"
    from features import logs

    logs.configure()
    try:
        return COMMANDS[args.command](args)
    except PublishRefused as refusal:
        print(f"{prefix} refused: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    except QualityCheckFailed as failure:
        print(f"{prefix} quality check failed: {_first_line(failure)}", file=sys.stderr)
        return EXIT_QUALITY
    except ConcurrentWriteError as conflict:
        print(f"{prefix} concurrent write: {_first_line(conflict)}", file=sys.stderr)
        return EXIT_CONFLICT
    except SparkMasterUnreachable as error:
        print(f"{prefix} error: {_first_line(error)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except OnlineStoreUnreachable as error:
        print(f"{prefix} error: {_first_line(error)}", file=sys.stderr)
        return EXIT_STORE_UNREACHABLE
    except (PipelineInputError, FileNotFoundError, *USER_OS_ERRORS) as error:
        print(f"{prefix} error: {_first_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # a bug: keep everything a developer needs
        traceback.print_exc()
        print(
            f"{prefix} internal error: {type(error).__name__}: {_first_line(error)} (a bug: please report it "
            f"with the traceback above)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
