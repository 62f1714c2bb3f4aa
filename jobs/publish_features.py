"""Publish the model features of day D to the online store (Redis), and check training/serving skew.

    recpipe publish-features --config C --date D
    spark-submit jobs/publish_features.py --config C --date D
    recpipe skew-check --config C --date E [--rows N] [--model-dir DIR]

publish: every user, item and user x category known as of D, with the values the samples of D+1 join
(features.online_features), is written from the executors (mapInPandas, pipelined per partition) into
a new version of the namespace; only entities whose value differs from the served version get a field
(incremental). Once every partition is written the pointer flips in one MULTI/EXEC; a publish killed
before that leaves the previous version served. The Delta table `online_publishes` records each publish:
date, version, rows, rewritten/unchanged/removed, the snapshot versions read.

skew check: N labeled events of day E from the samples table; the request built from the version
published for E-1 must equal the samples row feature for feature (floats bit for bit, as the model
inputs), and a SavedModel must score both the same. A mismatch is a QualityCheckFailed naming the feature.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # started as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from pyspark.sql import functions as F

from features import online_features
from features import online_store as store
from features.errors import PipelineInputError, QualityCheckFailed
from features.feature_spec import load_spec
from features.samples import INDICATORS
from features.tables import Tables, hold_at_marker, partition_dates
from jobs.run_info import new_run
from jobs.settings import Settings, as_settings

PUBLISHES = "online_publishes"
PUBLISH_DDL = (
    "run_id string, version long, namespace string, rows long, rewritten long, unchanged long, "
    "removed long, user_snapshot_version long, item_snapshot_version long, "
    "user_category_snapshot_version long, user_snapshot_inactive_version long, "
    "item_snapshot_inactive_version long, seconds double, published_at timestamp, publish_date date"
)
FAULT_MID_WRITE = "RECPIPE_FAULT_PUBLISH_MID_WRITE"  # test hook, see _held_after_writing


def _held_after_writing(writer, marker: str):
    """Test hook for killing a publish midway, off unless RECPIPE_FAULT_PUBLISH_MID_WRITE names a file:
    each executor task writes its partition as usual; one that wrote a field then holds at that file
    (features.tables.hold_at_marker) and fails, so the pointer never flips; a test kills the process
    group meanwhile. (Tasks that wrote nothing finish, so a held task always left a field.)"""

    def run(frames):
        wrote = 0
        for counts in writer(frames):
            wrote += int(counts["rewritten"].sum() + counts["removed"].sum())
            yield counts
        if not wrote:
            return
        hold_at_marker(marker, "publish-features")
        raise RuntimeError(f"{FAULT_MID_WRITE} is set: this publish stops before the pointer flip (test hook)")

    return run


def _previous_day(client, location: store.RedisLocation) -> dt.date | None:
    import json

    pointer = client.get(location.key("pointer"))
    if pointer is None:
        return None
    date = client.hget(location.key("version", pointer), "date")
    return dt.date.fromisoformat(json.loads(date)) if date else None


def publish(spark, tables: Tables, config: Settings | dict, day: dt.date) -> dict:
    settings = as_settings(config)
    spec = load_spec()
    built = partition_dates(tables, "user_snapshot_inactive") if tables.exists("user_snapshot_inactive") else set()
    if day not in built:
        raise PipelineInputError(
            f"publish-features of {day} needs the snapshot of {day}, which is missing at "
            f"{tables.path('user_snapshot')}: run recpipe snapshot --date {day} first"
        )
    location = settings.online_store.location()
    client = store.connect(location)
    started = time.time()
    versions = online_features.snapshot_versions(tables)
    run = new_run("publish-features", partitions=[day.isoformat()], input_versions=versions)
    previous = store.guarded(location, lambda: _previous_day(client, location))
    plan = store.begin(location, client)
    day_parts = online_features.day_parts(tables, spec, day, versions)
    rows = online_features.entity_rows(tables, spec, day, versions, tails=day_parts["tails"])
    rows = rows.unionByName(online_features.removed_rows(tables, spec, rows, previous))
    defaults = online_features.default_values(tables, spec, day, versions)
    writer = store.write_partition(plan)
    if os.environ.get(FAULT_MID_WRITE):
        writer = _held_after_writing(writer, os.environ[FAULT_MID_WRITE])
    counts = {
        r["entity"]: r
        for r in rows.mapInPandas(writer, store.WRITE_COUNTS_SCHEMA)
        .groupBy("entity")
        .agg(*[F.sum(c).alias(c) for c in ("rows", "rewritten", "unchanged", "removed")])
        .collect()
    }  # one row per entity type
    totals = {c: sum(int(r[c] or 0) for r in counts.values()) for c in ("rows", "rewritten", "unchanged", "removed")}
    metadata = {
        "date": day.isoformat(),
        "defaults": defaults,
        "features": [f.name for f in spec.model_features()],
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run["run_id"],
        "snapshot_versions": versions,
        **day_parts,
        **totals,
    }
    dropped = store.commit(plan, client, metadata, settings.online_store.keep_versions)
    seconds = time.time() - started
    record = [
        (
            run["run_id"],
            plan.version,
            location.namespace,
            totals["rows"],
            totals["rewritten"],
            totals["unchanged"],
            totals["removed"],
            versions["user_snapshot"],
            versions["item_snapshot"],
            versions["user_category_snapshot"],
            versions["user_snapshot_inactive"],
            versions["item_snapshot_inactive"],
            seconds,
            dt.datetime.now(dt.timezone.utc),
            day,
        )
    ]
    tables.append(PUBLISHES, spark.createDataFrame(record, PUBLISH_DDL), "publish_date", run)
    return {
        "date": day.isoformat(),
        "version": plan.version,
        "previous_version": plan.current,
        "namespace": location.namespace,
        "address": location.address,
        "seconds": seconds,
        "by_entity": {
            e: {c: int(r[c] or 0) for c in ("rows", "rewritten", "unchanged", "removed")}
            for e, r in sorted(counts.items())
        },
        "dropped_versions": dropped,
        "snapshot_versions": versions,
        **totals,
    }


def format_publish(result: dict) -> str:
    lines = [
        f"published {result['date']} as version {result['version']} of {result['namespace']} at "
        f"{result['address']} (previous: {result['previous_version']}) in {result['seconds']:.1f}s: "
        f"{result['rows']} entities, {result['rewritten']} rewritten, {result['unchanged']} unchanged, "
        f"{result['removed']} removed"
    ]
    for entity, c in result["by_entity"].items():
        lines.append(
            f"  {entity:<14} {c['rows']:>9} rows {c['rewritten']:>9} rewritten {c['unchanged']:>9} unchanged "
            f"{c['removed']:>6} removed"
        )
    if result["dropped_versions"]:
        lines.append(f"  versions no longer kept: {', '.join(map(str, result['dropped_versions']))}")
    return "\n".join(lines)


def newest_export(config: Settings, model: str | None) -> Path | None:
    from training.publish_gate import published_versions

    root = Path(config.export.root)
    for name in [model] if model else list(config.training.models):
        versions = published_versions(root / name) if (root / name).is_dir() else []
        if versions:
            return root / name / str(versions[-1])
    if model:
        raise PipelineInputError(f"no published SavedModel of {model} under {root}: run recpipe export first")
    return None


def _score(model_dir: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    from training.serving_requests import _tensorflow

    tf = _tensorflow()
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    return serve(**{n: tf.constant(arrays[n], dtype=s.dtype) for n, s in specs.items()})["probability"].numpy()


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: equal bit for bit (floats by their bit pattern, so NaN = NaN and 0.0 != -0.0)."""
    if a.dtype == np.float32:
        a, b = a.view(np.uint32), b.view(np.uint32)
    equal = a == b
    return equal.reshape(len(equal), -1).all(axis=1)


def skew_check(
    spark,
    tables: Tables,
    config: Settings | dict,
    day: dt.date,
    rows: int | None = None,
    model_dir: str | None = None,
    model: str | None = None,
) -> dict:
    from training.inputs import arrow_to_arrays, model_inputs
    from training.online_requests import build_rows, rows_to_arrays

    settings = as_settings(config)
    spec = load_spec()
    wanted = rows or settings.online_store.skew_check_rows
    if not tables.exists("samples") or day not in partition_dates(tables, "samples"):
        raise PipelineInputError(f"skew-check of {day} needs the samples of {day}: run recpipe samples first")
    location = settings.online_store.location()
    online = store.OnlineStore(location)
    before = (day - dt.timedelta(days=1)).isoformat()
    published = [p for p in online.kept() if p.date == before]
    if not published:
        raise PipelineInputError(
            f"skew-check of {day} needs the features published for {before}, which the online "
            f"store {location.address} namespace {location.namespace} does not keep: run "
            f"recpipe publish-features --date {before} first"
        )
    version = published[0].version  # kept: newest first
    inputs = model_inputs(spec)
    picked = tables.read("samples", partitions=[day]).orderBy(F.xxhash64("sample_id"), "sample_id").limit(wanted)
    table = picked.toArrow()
    records = table.to_pylist()
    context_sources = {f.column for f in spec.model_features() if f.kind == "event_column"} - {"user_id", "item_id"}
    requests = []
    for record in records:
        moment = record["event_time"]
        moment = moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment
        context = {s: record[_context_column(spec, s)] for s in context_sources}
        requests.append(
            {"user_id": record["user_id"], "item_id": record["item_id"], "context": {**context, "event_time": moment}}
        )
    _, built_rows, indicators = build_rows(online, requests, version, spec)
    served = rows_to_arrays(built_rows, spec, inputs)
    trained = arrow_to_arrays(table, inputs)
    restated_tables, restated = _restated_rows(
        spark, tables, spec, dt.date.fromisoformat(before), published[0].metadata.get("snapshot_versions"), records
    )
    mismatches: list[str] = []
    explained: set[int] = set()  # rows that differ because a snapshot row was restated since the publish
    for i in inputs:
        differ = np.flatnonzero(~_same(served[i.name], trained[i.name])).tolist()  # row positions
        explained.update(r for r in differ if r in restated)
        bad = [r for r in differ if r not in restated]
        if len(bad):
            r = bad[0]
            mismatches.append(
                f"{i.name} differs on {len(bad)} of {len(records)} rows (sample {records[r]['sample_id']}: "
                f"online {served[i.name][r].tolist()!r}, samples {trained[i.name][r].tolist()!r})"
            )
    for name in INDICATORS.values():
        flipped = [
            r for r, (online_row, record) in enumerate(zip(indicators, records)) if online_row[name] != record[name]
        ]
        explained.update(r for r in flipped if r in restated)
        bad = [r for r in flipped if r not in restated]
        if bad:
            mismatches.append(
                f"{name} differs on {len(bad)} of {len(records)} rows (sample {records[bad[0]]['sample_id']})"
            )
    scores = None
    saved_model = Path(model_dir) if model_dir else newest_export(settings, model)
    if saved_model is not None and not mismatches:
        if not (saved_model / "saved_model.pb").is_file():
            raise PipelineInputError(f"no SavedModel at {saved_model} (saved_model.pb missing)")
        online_scores, sample_scores = _score(saved_model, served), _score(saved_model, trained)
        unequal = np.flatnonzero(online_scores.view(np.uint32).ravel() != sample_scores.view(np.uint32).ravel())
        differ_scores = [r for r in unequal if r not in restated]
        if len(differ_scores):
            mismatches.append(f"scores of {saved_model} differ on {len(differ_scores)} rows")
        scores = {"model": str(saved_model), "rows": len(records), "equal": not len(differ_scores)}
    result = {
        "date": day.isoformat(),
        "published_date": before,
        "version": version,
        "rows": len(records),
        "features": len(inputs),
        "mismatches": mismatches,
        "scores": scores,
        # rows that differ because the snapshot of E-1 was rebuilt (late data) after its publish
        "restated": {"tables": restated_tables, "rows": len(explained)},
    }
    if mismatches:
        raise QualityCheckFailed(
            f"skew-check {day}: the online store (version {version}, {before}) disagrees with the "
            f"samples: {mismatches[0]}" + (f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else "")
        )
    return result


def _restated_rows(
    spark, tables: Tables, spec, day: dt.date, recorded: dict | None, records: list[dict]
) -> tuple[list[str], set[int]]:
    """Late data can rebuild the snapshot of `day` after it was published: then the samples hold what is
    known now and the store what was known then, which is not skew. Returns the snapshot tables whose
    `day` partition changed since the versions the publish recorded, and the positions of `records`
    whose user, item or user x category has other values now than in those versions."""
    if not recorded:
        return [], set()
    current = online_features.snapshot_versions(tables)
    changed = [
        name
        for name, version in sorted(recorded.items())
        if name in current
        and version != current[name]
        and tables.partition_files(name, [day], int(version)) != tables.partition_files(name, [day], current[name])
    ]
    if not changed:
        return [], set()
    keys_of = [
        {
            ("user", str(r["user_id"])),
            ("item", str(r["item_id"])),
            ("user_category", f"{r['user_id']}:{r.get('item_category')}"),
        }
        for r in records
    ]
    wanted = spark.createDataFrame(sorted(set().union(*keys_of)), "entity string, key string")

    def values(versions: dict, column: str):
        rows = online_features.entity_rows(tables, spec, day, versions).join(F.broadcast(wanted), ["entity", "key"])
        return rows.withColumnRenamed("value", column)

    then, now = values({k: int(v) for k, v in recorded.items()}, "then"), values(current, "now")
    moved = then.join(now, ["entity", "key"], "full_outer").where(~F.col("then").eqNullSafe(F.col("now")))
    restated = {(r["entity"], r["key"]) for r in moved.collect()}  # at most 3 per record
    return changed, {position for position, keys in enumerate(keys_of) if keys & restated}


def _context_column(spec, source: str) -> str:
    """The samples column holding a context source (the context feature named for it)."""
    return next(f.name for f in spec.model_features() if f.kind == "event_column" and f.source == source)


def format_skew_check(result: dict) -> str:
    scores = result["scores"]
    scored = (
        f"; {scores['model']} scores equal on all {scores['rows']} rows"
        if scores
        else "; no SavedModel published: scores not compared"
    )
    restated = result.get("restated") or {}
    late = (
        f"; {restated['rows']} other rows differ only in users, items or user x categories whose snapshot of "
        f"{result['published_date']} was rebuilt after the publish (late data in {', '.join(restated['tables'])}): "
        "what was known then, not skew"
        if restated.get("rows")
        else ""
    )
    return (
        f"skew-check {result['date']}: {result['rows'] - restated.get('rows', 0)} samples equal the requests "
        f"built from online store version {result['version']} ({result['published_date']}), "
        f"{result['features']} features each, bit for bit{scored}{late}"
    )


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["publish-features", "--spark-submit", *sys.argv[1:]]))
