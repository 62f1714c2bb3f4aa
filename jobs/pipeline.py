"""`recpipe run`: every stage that exists, in order, for the configured date range.

Stages: source (synthetic logs or a MovieLens import into the raw drops root; skipped for kind 'raw',
where drops arrive from outside) → ingest → snapshot → samples → gbdt → train (the models listed in
training.models) → evaluate (comparison table with baselines and quality bars) → export (SavedModels
published behind the gate).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Callable

from features.errors import PipelineInputError
from jobs.settings import Settings, as_settings, resolve_models


def prepare_source(config: Settings | dict, dates: list[dt.date]) -> dict | None:
    settings = as_settings(config)
    kind, raw_root = settings.source.kind, settings.paths.raw
    if kind == "synthetic":
        from features.synthetic_logs import generate_logs

        options = settings.source.synthetic.model_dump(exclude_none=True)
        return generate_logs(raw_root, start_date=dates[0], days=len(dates), **options)
    if kind == "movielens":
        from features.movielens import import_movielens

        return import_movielens(settings.source.movielens_path, raw_root)
    if kind == "raw":
        return None
    raise PipelineInputError("source.kind is not set: use synthetic, movielens or raw")


def samples_range(config: Settings | dict, dates: list[dt.date]) -> list[dt.date]:
    """Days that can be labeled and joined in a run over `dates`: not the first (no snapshot of the day
    before) and, for click labels, not the last (its clicks after midnight are in the next drop)."""
    return dates[1:-1] if as_settings(config).samples.kind == "click" else dates[1:]


def format_tables(rows: list[dict]) -> str:
    lines = [
        f"{'table':<24} {'version':>7} {'partition':<14} {'partitions':>10}  {'range':<23}  {'rows':>10}  last commit"
    ]
    for r in rows:
        span = f"{r['first']}..{r['last']}" if r["first"] else "-"
        when = r["last_commit"].strftime("%Y-%m-%d %H:%M:%S") if r["last_commit"] else "-"
        lines.append(
            f"{r['table']:<24} {r['version']:>7} {r['partition_column']:<14} {r['partitions']:>10}  "
            f"{span:<23}  {r['rows']:>10}  {when} ({r['last_job'] or '-'})"
        )
    return "\n".join(lines)


def run_pipeline(config: Settings | dict, dates: list[dt.date], open_session: Callable) -> None:
    from features.tables import describe
    from jobs import build_samples, build_snapshot, evaluate_models, export_model, train_gbdt, train_models
    from jobs.ingest import format_summary, ingest

    config = as_settings(config)
    started = time.time()
    print(f"[source] {config.source.kind} → {config.paths.raw}")
    summary = prepare_source(config, dates)
    if summary:
        print("  " + ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict)))
    spark, tables = open_session()
    print(f"[ingest] {dates[0]}..{dates[-1]} → {tables.root} ({tables.backend} backend)")
    print(format_summary(ingest(spark, tables, config, dates)))
    print(f"[snapshot] {dates[0]}..{dates[-1]}")
    print(build_snapshot.format_summary(build_snapshot.build_snapshots(spark, tables, config, dates)))
    refused: list[str] = []
    sample_days = samples_range(config, dates)
    if sample_days:
        print(f"[samples] {sample_days[0]}..{sample_days[-1]}")
        manifest = build_samples.build_samples(spark, tables, config, sample_days)
        print(build_samples.format_summary(manifest))
        version = manifest["samples_version"]  # every later stage reads exactly the samples built here
        print("[gbdt]")
        print(train_gbdt.format_summary(train_gbdt.train_gbdt(spark, tables, config, version)))
        models = resolve_models(config, "all")
        if models:
            print(f"[train] {', '.join(models)}")
            print(train_models.format_summary(train_models.train_models(config, models, version)))
            print("[evaluate]")
            print(evaluate_models.format_summary(evaluate_models.evaluate(config, version)))
            print(f"[export] → {config.export.root}")
            exported = export_model.export_models(config, models, version)
            print(export_model.format_summary(exported))
            refused = exported["refused"]
    print("[tables]")
    print(format_tables(describe(tables, tables.names())))
    print(f"done in {time.time() - started:.1f}s")
    if refused:  # everything else ran; the refusal is the run's result
        raise export_model.PublishRefused(f"{len(refused)} model(s) not published: {refused[0]}")
