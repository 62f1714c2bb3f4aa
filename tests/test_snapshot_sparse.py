"""Snapshot rows follow activity, not catalogue x calendar; every (entity, day) still resolves to its full row.

A hand-made 45-day log: user 1 active on day 0 and day 35, user 2 never active but changing occupation on
day 40, item 7 in the catalogue and never shown. Expected rows and values are worked out by hand below.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from chispa import assert_df_equality

from features import raw_drops
from features import snapshot_as_of as as_of
from features.feature_spec import load_spec
from features.tables import open_tables
from jobs.build_snapshot import build_snapshots
from jobs.cli import main
from jobs.ingest import ingest

START = dt.date(2026, 5, 1)
DAYS = [START + dt.timedelta(days=i) for i in range(45)]
WINDOW = 30  # the longest window of user and item features (schemas/features.yaml)


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def _event(event_id, event_type, user_id, item_id, when, value=None):
    return {
        "event_id": event_id,
        "event_type": event_type,
        "user_id": user_id,
        "item_id": item_id,
        "event_time": when,
        "device": "mobile",
        "page": "home",
        "position": 0,
        "value": value,
    }


def _user(user_id, occupation):
    return {"user_id": user_id, "age": 30, "gender": "F", "occupation": occupation, "zip_code": "00100"}


def _item(item_id, category):
    return {
        "item_id": item_id,
        "title": f"t{item_id}",
        "category": category,
        "genres": category,
        "release_date": "2026-01-01",
        "price": 9.5,
    }


def _write_log(raw, extra_items: int = 0) -> None:
    raw_drops.write_drop(raw, "users", day(0), pd.DataFrame([_user(1, "doctor"), _user(2, "teacher")]))
    raw_drops.write_drop(raw, "users", day(40), pd.DataFrame([_user(2, "artist")]))
    items = [_item(5, "Drama"), _item(6, "Comedy"), _item(7, "Horror")]
    items += [_item(1000 + i, "Music") for i in range(extra_items)]  # a catalogue nobody ever sees
    raw_drops.write_drop(raw, "items", day(0), pd.DataFrame(items))
    raw_drops.write_drop(
        raw,
        "events",
        day(0),
        pd.DataFrame(
            [
                _event("a", "impression", 1, 5, f"{day(0)}T10:00:00.000Z"),
                _event("b", "click", 1, 5, f"{day(0)}T10:00:05.000Z"),
            ]
        ),
    )
    raw_drops.write_drop(
        raw, "events", day(35), pd.DataFrame([_event("c", "rating", 1, 6, f"{day(35)}T09:00:00.000Z", 4.0)])
    )


def _config(tmp_path, name):
    return {
        "paths": {"raw": str(tmp_path / f"raw-{name}"), "warehouse": str(tmp_path / f"warehouse-{name}")},
        "ingest": {"allowed_lateness_hours": 48, "allowed_clock_skew_minutes": 60, "allow_missing_drops": True},
        "quality": {"enabled": False},
    }  # days without events: no events partition


def _build(spark, tmp_path, name, extra_items=0, ranges=((0, 44),)):
    config = _config(tmp_path, name)
    _write_log(config["paths"]["raw"], extra_items)
    tables = open_tables(spark, config["paths"]["warehouse"], "delta-rs")
    ingest(spark, tables, config, DAYS)
    for first, last in ranges:
        build_snapshots(spark, tables, config, DAYS[first : last + 1])
    return tables


def _stored(tables, table, key):
    return {(r[key], r.snapshot_date) for r in tables.read(table).select(key, "snapshot_date").collect()}


@pytest.fixture(scope="module")
def hand_made(spark, tmp_path_factory):
    """Built in two runs (0..33, then 34..44): the second run finds user 1's state in a row of day 29."""
    return _build(spark, tmp_path_factory.mktemp("sparse"), "two-runs", ranges=((0, 33), (34, 44)))


def test_rows_only_where_an_entity_can_differ_from_inactive(hand_made):
    users = _stored(hand_made, "user_snapshot", "user_id")
    user1 = {(1, day(i)) for i in [*range(0, WINDOW), *range(35, 45)]}  # activity inside the 30-day window
    user2 = {(2, day(0)), (2, day(40))}  # first users drop, then the day its occupation changed
    assert users == user1 | user2
    items = _stored(hand_made, "item_snapshot", "item_id")
    assert items == (
        {(5, day(i)) for i in range(0, WINDOW)} | {(6, day(0))} | {(6, day(i)) for i in range(35, 45)} | {(7, day(0))}
    )
    assert as_of.built_days(hand_made, "user") == set(DAYS)  # a row of day values for every built day


def test_inactive_days_resolve_to_the_full_row(spark, hand_made):
    spec = load_spec()
    users = {
        (r.user_id, r.snapshot_date): r
        for r in as_of.dense_snapshot(hand_made, spec, "user", [day(32), day(44)]).collect()
    }
    quiet = users[(1, day(32))]  # last activity on day 0: outside every window on day 32
    assert (quiet.user_clicks_30d, quiet.user_impressions_7d, quiet.user_rating_mean_30d) == (0, 0, None)
    assert (quiet.user_first_active_date, quiet.user_last_active_date) == (day(0), day(0))
    assert (quiet.user_days_since_first_active, quiet.user_days_since_last_active) == (32, 32)
    assert quiet.user_last_items == [5] and quiet.user_top_categories == [] and quiet.user_occupation == "doctor"
    prior = spec.ctr_prior_fallback  # no impressions anywhere in the window: (0 + s * fallback) / (0 + s)
    assert quiet.user_ctr_30d == (0 + spec.ctr_prior_strength * prior) / (0 + spec.ctr_prior_strength)
    never = users[(2, day(44))]
    assert (
        never.user_occupation == "artist"
        and never.user_last_active_date is None
        and never.user_ctr_7d == quiet.user_ctr_7d
    )
    assert users[(1, day(44))].user_last_items == [6, 5] and users[(1, day(44))].user_ratings_30d == 1

    items = {
        (r.item_id, r.snapshot_date): r
        for r in as_of.dense_snapshot(hand_made, spec, "item", [day(36), day(44)]).collect()
    }
    # competition rank by engagements in 7 days: on day 36 item 6 (rated on day 35) is first, the rest share 2
    assert [items[(i, day(36))].item_popularity_rank_7d for i in (5, 6, 7)] == [2, 1, 2]
    assert [items[(i, day(44))].item_popularity_rank_7d for i in (5, 6, 7)] == [1, 1, 1]  # nobody engaged in 7 days
    never_shown = items[(7, day(44))]
    assert (never_shown.item_category, never_shown.item_first_seen_date) == ("Horror", day(0))
    assert never_shown.item_days_since_release == (day(44) - dt.date(2026, 1, 1)).days
    assert as_of.dense_snapshot(hand_made, spec, "user", [day(0)]).count() == 2


def test_two_runs_equal_one_pass_and_an_unseen_catalogue_adds_rows_only_on_its_first_day(spark, tmp_path, hand_made):
    one_pass = _build(spark, tmp_path, "one-pass", extra_items=300)
    for name in ("user_snapshot", "user_snapshot_inactive", "item_snapshot_inactive"):
        assert_df_equality(one_pass.read(name), hand_made.read(name), ignore_row_order=True, ignore_nullable=True)
    items = _stored(one_pass, "item_snapshot", "item_id")
    catalogue = {(1000 + i, day(0)) for i in range(300)}
    assert items - catalogue == _stored(hand_made, "item_snapshot", "item_id") and catalogue <= items
    spec = load_spec()
    dense = as_of.dense_snapshot(one_pass, spec, "item", [day(44)])
    assert dense.count() == 303 and dense.where("item_id >= 1000 AND item_popularity_rank_7d = 1").count() == 300


def test_recpipe_features_prints_the_row_of_an_inactive_entity(hand_made, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"source: {{kind: raw}}\npaths: {{raw: {tmp_path}, warehouse: {hand_made.root}}}\n"
        f"spark: {{master: 'local[2]'}}\ndates: {{start: {day(0)}, end: {day(44)}}}\n"
    )
    assert main(["features", "--config", str(config), "--entity", "user", "--id", "1,9", "--date", str(day(32))]) == 0
    out = capsys.readouterr().out
    assert f"user 1 as of {day(32)}" in out and "user_days_since_last_active   32" in out
    assert f"user 9 as of {day(32)}: not known by then" in out
    assert main(["features", "--config", str(config), "--entity", "user", "--id", "1", "--date", "2027-01-01"]) == 2
    assert f"no user snapshot of 2027-01-01: snapshots exist for {day(0)}..{day(44)}" in capsys.readouterr().err
