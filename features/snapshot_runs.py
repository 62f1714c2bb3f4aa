"""Which events each snapshot day was built from: the Delta table `snapshot_runs`, and the staleness
check samples run before joining snapshots.

The snapshot job replaces the `snapshot_runs` rows of every day it built with the events (and users,
items) versions it read. A snapshot of day S depends on every event with event date <= S, which can sit
in any drop up to S + the lateness; it is *stale* when the events partitions of those drops hold other
files now than in the version it was built from (a day re-ingested with --no-cascade, a restatement
whose later snapshots were not rebuilt, a snapshot run that died before recording). Samples refuse
stale days and name them. Also the planning of a snapshot run: which days a request builds.
"""

from __future__ import annotations

import datetime as dt
import logging

from features.errors import PipelineInputError
from features.snapshot_as_of import built_days
from features.tables import PartitionVersions, Tables, partition_dates

_log = logging.getLogger(__name__)

SNAPSHOT_RUNS = "snapshot_runs"
DDL = (
    "run_id string, events_version long, users_version long, items_version long, built_at timestamp, snapshot_date date"
)


def record(tables: Tables, run: dict, days: list[dt.date], versions: dict[str, int]) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    rows = [
        (run["run_id"], versions.get("events"), versions.get("users"), versions.get("items"), now, day) for day in days
    ]
    return tables.replace_partitions(
        SNAPSHOT_RUNS,
        tables.spark.createDataFrame(rows, DDL),
        "snapshot_date",
        days,
        {**run, "partitions": [d.isoformat() for d in days]},
    )


def stale_days(
    tables: Tables, days: list[dt.date], lateness_days: int, events_version: int | None = None
) -> list[tuple[dt.date, str]]:
    """(day, why) for each snapshot day in `days` that was not built from the events the caller reads
    (`events_version`, default the newest). Warehouses without snapshot_runs are not checked."""
    if not days or not tables.exists(SNAPSHOT_RUNS):
        return []
    built = {
        r["snapshot_date"]: r["events_version"]
        for r in tables.read(SNAPSHOT_RUNS, partitions=days).select("snapshot_date", "events_version").collect()
    }
    drops = sorted(d for d in partition_dates(tables, "events") if d <= max(days) + dt.timedelta(days=lateness_days))
    events = PartitionVersions(tables, "events", drops)
    problems = []
    for day in days:
        version = built.get(day)
        if version is None:
            problems.append((day, "no record of the events it was built from"))
            continue
        horizon = day + dt.timedelta(days=lateness_days)
        changed = [d for d in drops if d <= horizon and events.changed(d, since=version, now=events_version)]
        if changed:
            problems.append((day, f"built from events v{version}; the drop of {changed[0]} changed since"))
    return problems


def require_fresh(
    tables: Tables, days: list[dt.date], lateness_days: int, job: str, events_version: int | None = None
) -> None:
    problems = stale_days(tables, days, lateness_days, events_version)
    if problems:
        names = ", ".join(str(day) for day, _ in problems[:5]) + (
            f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        day, why = problems[0]
        raise PipelineInputError(
            f"{job} refused: the snapshots of {names} are stale ({day}: {why}); rebuild them: "
            f"recpipe snapshot --date {day}"
        )


def plan_dates(
    tables: Tables, dates: list[dt.date], allow_missing: bool, rebuild_days: int = 0, cascade: bool = True
) -> list[dt.date]:
    """The days to build: the requested ones plus the `rebuild_days` before them (late data), extended
    back to the day after the latest existing snapshot (or the first ingested day) when the day before
    has no snapshot to carry state from, and (cascade) forward to the last snapshot already built:
    every later snapshot carries state from the rebuilt days, so it is rebuilt in the same pass. With
    cascade=False the later snapshots are left as they are and printed as stale."""
    ingested = partition_dates(tables, "events")
    if not ingested:
        raise PipelineInputError(f"no events ingested yet at {tables.path('events')}: run recpipe ingest first")
    start = max(dates[0] - dt.timedelta(days=rebuild_days), min(min(ingested), dates[0]))
    built = built_days(tables, "user")
    if start - dt.timedelta(days=1) not in built and min(ingested) < start:
        earlier = [d for d in built if d < start]
        carried_from = max(earlier) + dt.timedelta(days=1) if earlier else min(ingested)
        _log.info(
            "no snapshot for %s to carry state from: building from %s", start - dt.timedelta(days=1), carried_from
        )
        start = carried_from
    later = sorted(d for d in built if d > dates[-1])
    if later and cascade:
        _log.info(
            "rebuilding the %d later snapshots %s..%s too: they carry state from the days rebuilt "
            "(--no-cascade leaves them stale)",
            len(later),
            later[0],
            later[-1],
        )
    elif later:
        _log.warning(
            "--no-cascade: the %d later snapshots %s..%s were built from the old data and are now stale; "
            "samples refuse them until they are rebuilt",
            len(later),
            later[0],
            later[-1],
        )
    end = later[-1] if later and cascade else dates[-1]
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    missing = [d for d in days if d not in ingested]
    if missing and not allow_missing:
        raise PipelineInputError(
            f"no events drop ingested for {missing[0]} (events partition drop_date={missing[0]} is missing at "
            f"{tables.path('events')}); ingest it first or pass --allow-missing"
            + (f" ({len(missing)} days missing)" if len(missing) > 1 else "")
        )
    return days
