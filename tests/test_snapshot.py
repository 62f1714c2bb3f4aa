"""The time machine: snapshots are point-in-time correct, incremental, idempotent and backfillable."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from features import logs as run_logs
from features import raw_drops, snapshot_runs
from features import snapshot_as_of as as_of
from features.errors import PipelineInputError
from features.feature_spec import load_spec
from features.synthetic_logs import generate_logs
from features.tables import open_tables
from jobs.build_snapshot import build_snapshots
from jobs.ingest import ingest

START = dt.date(2026, 2, 1)
DAYS = [START + dt.timedelta(days=i) for i in range(6)]
D = DAYS[2]
SNAPSHOTS = (
    "user_snapshot",
    "item_snapshot",
    "user_category_snapshot",
    "user_snapshot_inactive",
    "item_snapshot_inactive",
)


def _config(tmp_path, name="a"):
    return {
        "paths": {"raw": str(tmp_path / "raw"), "warehouse": str(tmp_path / f"warehouse-{name}")},
        "ingest": {"allowed_lateness_hours": 48, "allowed_clock_skew_minutes": 60},
        "quality": {"enabled": False},
    }  # hand-made one-event days; the gate: tests/test_quality.py


@pytest.fixture
def logs(tmp_path):
    generate_logs(
        tmp_path / "raw",
        start_date=START,
        days=len(DAYS),
        users=120,
        items=30,
        seed=11,
        impressions_per_user_day=3.0,
        late_fraction=0.05,
    )
    return tmp_path / "raw"


def _snapshot_of(tables, name, day, version=None):
    return tables.read(name, version=version, partitions=[day])


def _assert_same(left, right):
    assert_df_equality(left, right, ignore_row_order=True, ignore_nullable=True)


def test_snapshot_columns_are_the_documented_features_and_counts_add_up_to_the_events(spark, tmp_path, logs):
    """The stored columns, written out by hand from schemas/features.yaml (not read through the spec code),
    and every user's 1-day counters summing to the day's events of that type."""
    config = _config(tmp_path)
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, DAYS[:2])
    build_snapshots(spark, tables, config, DAYS[:2])
    counters, windows = ["impressions", "clicks", "ratings", "likes", "purchases"], [1, 7, 30]
    counts = lambda entity: [f"{entity}_{c}_{w}d" for w in windows for c in counters]  # noqa: E731
    expected = {
        "user_snapshot": [
            "user_id",
            *counts("user"),
            "user_ctr_1d",
            "user_ctr_7d",
            "user_ctr_30d",
            "user_rating_mean_30d",
            "user_rating_std_30d",
            "user_first_active_date",
            "user_last_active_date",
            "user_days_since_first_active",
            "user_days_since_last_active",
            "user_last_items",
            "user_top_categories",
            "user_top_category_shares",
            "user_age",
            "user_gender",
            "user_occupation",
            "user_zip_code",
            "snapshot_date",
        ],
        "item_snapshot": [
            "item_id",
            *counts("item"),
            "item_ctr_1d",
            "item_ctr_7d",
            "item_ctr_30d",
            "item_rating_mean_30d",
            "item_popularity_rank_7d",
            "item_first_seen_date",
            "item_days_since_first_seen",
            "item_days_since_release",
            "item_category",
            "item_genres",
            "item_release_date",
            "item_price",
            "snapshot_date",
        ],
        "user_category_snapshot": [
            "user_id",
            "category",
            "user_category_impressions_30d",
            "user_category_clicks_30d",
            "user_category_ratings_30d",
            "user_category_ctr_30d",
            "user_category_rating_mean_30d",
            "snapshot_date",
        ],
    }
    for table, columns in expected.items():
        assert tables.read(table).columns == columns, table
    events = tables.read("events").where(F.to_date("event_time") == DAYS[1]).groupBy("event_type").count().toPandas()
    by_type = dict(zip(events.event_type, events["count"]))
    users = (
        _snapshot_of(tables, "user_snapshot", DAYS[1])
        .agg(*[F.sum(f"user_{c}_1d").alias(c) for c in counters])
        .first()
        .asDict()
    )
    assert users["clicks"] == by_type["click"] > 0 and users["impressions"] == by_type["impression"] > 0
    for counter, event_type in (("ratings", "rating"), ("likes", "like"), ("purchases", "purchase")):
        assert users[counter] == by_type.get(event_type, 0)


def test_future_invariance_and_idempotent_rerun(spark, tmp_path, logs):
    config = _config(tmp_path)
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, DAYS)
    build_snapshots(spark, tables, config, DAYS[: DAYS.index(D) + 1])
    before = {name: tables.version(name) for name in SNAPSHOTS}
    assert _snapshot_of(tables, "user_snapshot", D).count() > 0

    # rerun the same date: same rows
    build_snapshots(spark, tables, config, [D])
    for name in SNAPSHOTS:
        assert tables.version(name) == before[name] + 1
        _assert_same(_snapshot_of(tables, name, D), _snapshot_of(tables, name, D, before[name]))

    # rewrite the future: every event after D deleted, changed or added to, then rebuild D
    end_of_d = pd.Timestamp(D + dt.timedelta(days=1), tz="UTC")
    for day in DAYS[DAYS.index(D) + 1 :]:
        path = raw_drops.drop_files(logs, "events", day)[0]
        events = pd.read_json(path, lines=True, dtype={"event_time": str, "event_id": str})
        events["position"] = events["position"].astype("Int64")  # keep integers integers through pandas
        future = pd.to_datetime(events["event_time"], utc=True) >= end_of_d
        changed = events[~future | (events.index % 3 == 0)].copy()  # drop two thirds of the future
        is_future = pd.to_datetime(changed["event_time"], utc=True) >= end_of_d
        changed.loc[is_future & (changed["event_type"] == "impression"), "event_type"] = "click"
        extra = changed[is_future].head(20).assign(event_id=lambda f: f["event_id"] + "-new", item_id=1)
        raw_drops.write_drop(logs, "events", day, pd.concat([changed, extra]))
    ingest(spark, tables, config, DAYS[DAYS.index(D) + 1 :])
    build_snapshots(spark, tables, config, [D])
    for name in SNAPSHOTS:
        _assert_same(_snapshot_of(tables, name, D), _snapshot_of(tables, name, D, before[name]))


def test_range_backfill_equals_day_by_day_builds(spark, tmp_path, logs):
    """Carried state (first/last active, last items, attributes) is the same whichever way it is built."""
    at_once = open_tables(spark, _config(tmp_path, "once")["paths"]["warehouse"], "delta-rs")
    daily = open_tables(spark, _config(tmp_path, "daily")["paths"]["warehouse"], "delta-rs")
    for tables, name in ((at_once, "once"), (daily, "daily")):
        ingest(spark, tables, _config(tmp_path, name), DAYS)
    build_snapshots(spark, at_once, _config(tmp_path, "once"), DAYS)
    for day in DAYS:
        build_snapshots(spark, daily, _config(tmp_path, "daily"), [day])
    for name in SNAPSHOTS:
        _assert_same(daily.read(name), at_once.read(name))


def test_missing_drop_fails_unless_allowed(spark, tmp_path, logs):
    config = _config(tmp_path)
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, DAYS[:2])
    later = DAYS[1] + dt.timedelta(days=2)
    with pytest.raises(PipelineInputError, match=f"no events drop ingested for {DAYS[2]}"):
        build_snapshots(spark, tables, config, [DAYS[0], DAYS[1], DAYS[2], later])
    assert not tables.exists("user_snapshot")
    build_snapshots(spark, tables, config, [later], allow_missing=True)  # bootstraps from the first day
    _, built = tables.partitions("user_snapshot")
    assert built == [d.isoformat() for d in [DAYS[0], DAYS[1], DAYS[2], later]]


def _event(event_id, event_type, user_id, item_id, when, value=None):
    return {
        "event_id": event_id,
        "event_type": event_type,
        "user_id": user_id,
        "item_id": item_id,
        "event_time": when,
        "value": value,
    }


def test_late_event_is_picked_up_when_the_range_is_rebuilt(spark, tmp_path):
    config = _config(tmp_path)
    raw = config["paths"]["raw"]
    day1, day2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    raw_drops.write_drop(raw, "items", day1, pd.DataFrame([{"item_id": 5, "category": "Drama"}]))
    raw_drops.write_drop(
        raw, "events", day1, pd.DataFrame([_event("a", "impression", 1, 5, "2026-03-01T10:00:00.000Z")])
    )
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, [day1])
    build_snapshots(spark, tables, config, [day1])

    # the click on day 1 arrives late, in day 2's drop
    raw_drops.write_drop(
        raw,
        "events",
        day2,
        pd.DataFrame(
            [
                _event("b", "click", 1, 5, "2026-03-01T23:59:00.000Z"),
                _event("c", "rating", 1, 5, "2026-03-02T08:00:00.000Z", 4.0),
            ]
        ),
    )
    ingest(spark, tables, config, [day2])
    build_snapshots(spark, tables, config, [day2])

    def user_row(day, version=None):
        return tables.read("user_snapshot", version=version, partitions=[day]).where("user_id = 1").first()

    # building day 2 rebuilt day 1 (within the lateness): the late click is in day 1's own aggregates,
    # in day 2's 7-day window and in the carried last items; day 1 as first built stays readable
    assert user_row(day1).user_clicks_1d == 1
    assert user_row(day1, version=0).user_clicks_1d == 0
    assert (user_row(day2).user_clicks_1d, user_row(day2).user_clicks_7d) == (0, 1)
    assert user_row(day1).user_last_items == [5]
    assert user_row(day2).user_last_items == [5, 5]
    category = tables.read("user_category_snapshot", partitions=[day2]).first()
    assert (category.category, category.user_category_clicks_30d, category.user_category_ratings_30d) == ("Drama", 1, 1)
    assert user_row(day2).user_top_categories == ["Drama"]


def test_rebuild_days_zero_leaves_earlier_days_until_their_range_is_rebuilt(spark, tmp_path):
    config = {**_config(tmp_path), "snapshot": {"rebuild_days": 0}}
    raw = config["paths"]["raw"]
    day1, day2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    raw_drops.write_drop(
        raw, "events", day1, pd.DataFrame([_event("a", "impression", 1, 5, "2026-03-01T10:00:00.000Z")])
    )
    raw_drops.write_drop(raw, "events", day2, pd.DataFrame([_event("b", "click", 1, 5, "2026-03-01T23:59:00.000Z")]))
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, [day1])
    build_snapshots(spark, tables, config, [day1])
    ingest(spark, tables, config, [day2])
    build_snapshots(spark, tables, config, [day2])
    clicks = lambda: {r.snapshot_date: r.user_clicks_7d for r in tables.read("user_snapshot").collect()}
    assert clicks() == {day1: 0, day2: 0}
    build_snapshots(spark, tables, config, [day1, day2])  # recpipe snapshot --start day1 --end day2
    assert clicks() == {day1: 1, day2: 1}


def _restate(raw, day, keep_every=3):
    """Upstream corrects the drop of `day`: two thirds of its events withdrawn."""
    path = raw_drops.drop_files(raw, "events", day)[0]
    events = pd.read_json(path, lines=True, dtype={"event_time": str, "event_id": str})
    events["position"] = events["position"].astype("Int64")
    raw_drops.write_drop(raw, "events", day, events[events.index % keep_every == 0])


def test_a_restated_day_rebuilds_every_later_snapshot_in_one_pass(spark, tmp_path, logs):
    config, reference_config = _config(tmp_path, "restated"), _config(tmp_path, "reference")
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, DAYS)
    build_snapshots(spark, tables, config, DAYS)

    _restate(logs, D)
    ingest(spark, tables, config, [D])
    build_snapshots(spark, tables, config, [D])  # cascades to the last built day
    assert snapshot_runs.stale_days(tables, DAYS, 2) == []

    reference = open_tables(spark, reference_config["paths"]["warehouse"], "delta-rs")
    ingest(spark, reference, reference_config, DAYS)
    build_snapshots(spark, reference, reference_config, DAYS)
    for name in SNAPSHOTS:
        _assert_same(tables.read(name), reference.read(name))


def test_no_cascade_leaves_later_snapshots_stale_and_samples_refuse_them(spark, tmp_path, logs, capsys):
    from jobs.build_samples import build_samples

    config = {**_config(tmp_path), "samples": {"kind": "click"}}
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, DAYS)
    build_snapshots(spark, tables, config, DAYS)
    _restate(logs, D)
    ingest(spark, tables, config, [D])
    run_logs.configure()
    capsys.readouterr()
    build_snapshots(spark, tables, config, [D], cascade=False)
    later = DAYS[DAYS.index(D) + 1 :]
    assert (
        f"--no-cascade: the {len(later)} later snapshots {later[0]}..{later[-1]} were built from the old data "
        f"and are now stale"
    ) in capsys.readouterr().err
    assert [day for day, _ in snapshot_runs.stale_days(tables, DAYS, 2)] == later
    with pytest.raises(PipelineInputError, match=rf"samples refused: the snapshots of {later[0]}.* are stale"):
        build_samples(spark, tables, config, [later[0] + dt.timedelta(days=1)], allow_incomplete_labels=True)


def test_smoothed_ctrs_and_their_prior_match_a_brute_force_over_the_events(spark, tmp_path, logs):
    """(clicks + s * prior) / (impressions + s) per user and item, the prior being the CTR of every event in
    the window, recomputed with pandas from the ingested events; entities without impressions in a window
    (inactive ones included) get the prior itself."""
    config = _config(tmp_path)
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, DAYS[:5])
    build_snapshots(spark, tables, config, DAYS[:5])
    events = (
        tables.read("events")
        .select("event_type", "user_id", "item_id", F.to_date("event_time").alias("event_date"))
        .toPandas()
    )
    strength = 20.0  # schemas/features.yaml ctr_prior_strength, written out here on purpose
    day, without_impressions = DAYS[4], 0
    for entity, key in (("user", "user_id"), ("item", "item_id")):
        resolved = as_of.dense_snapshot(tables, load_spec(), entity, [day]).toPandas().set_index(key)
        assert len(resolved) > 0
        for window in (1, 7):
            seen = events[(events.event_date > day - dt.timedelta(days=window)) & (events.event_date <= day)]
            clicks = seen[seen.event_type == "click"].groupby(key).size()
            impressions = seen[seen.event_type == "impression"].groupby(key).size()
            prior = len(seen[seen.event_type == "click"]) / len(seen[seen.event_type == "impression"])
            for entity_id, value in resolved[f"{entity}_ctr_{window}d"].items():
                c, i = clicks.get(entity_id, 0), impressions.get(entity_id, 0)
                assert value == pytest.approx((c + strength * prior) / (i + strength), rel=1e-12), (
                    entity,
                    entity_id,
                    window,
                )
            inactive = resolved.index.difference(impressions.index.union(clicks.index))
            assert all(resolved.loc[inactive, f"{entity}_ctr_{window}d"].sub(prior).abs() < 1e-12)
            without_impressions += len(inactive)
    assert without_impressions > 0  # the prior-only case was exercised
