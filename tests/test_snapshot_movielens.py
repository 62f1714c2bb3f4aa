"""Windows are exact: snapshots of MovieLens 100K against a brute-force pandas computation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features import snapshot_as_of as as_of
from features.feature_spec import load_spec

CHECK_DAYS = [dt.date(1997, 9, 20), dt.date(1997, 10, 15), dt.date(1997, 12, 1), dt.date(1998, 4, 22)]


@pytest.fixture(scope="module")
def ratings(ml100k_dir):
    frame = pd.read_csv(ml100k_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"])
    frame["date"] = pd.to_datetime(frame["ts"], unit="s", utc=True).dt.date
    frame["event_id"] = (
        "ml-" + frame["user_id"].astype(str) + "-" + frame["item_id"].astype(str) + "-" + frame["ts"].astype(str)
    )
    return frame


def _brute_force_users(ratings: pd.DataFrame, day: dt.date, last_n: int) -> pd.DataFrame:
    known = ratings[ratings["date"] <= day]
    rows = {}
    for window in (1, 7, 30):
        inside = known[known["date"] > day - dt.timedelta(days=window)]
        rows[f"user_ratings_{window}d"] = inside.groupby("user_id").size()
    month = known[known["date"] > day - dt.timedelta(days=30)]
    rows["user_rating_mean_30d"] = month.groupby("user_id")["rating"].mean()
    rows["user_rating_std_30d"] = month.groupby("user_id")["rating"].std(ddof=0)
    rows["user_first_active_date"] = known.groupby("user_id")["date"].min()
    rows["user_last_active_date"] = known.groupby("user_id")["date"].max()
    newest = known.sort_values(["ts", "event_id"], ascending=False)
    rows["user_last_items"] = newest.groupby("user_id")["item_id"].apply(lambda s: list(s[:last_n]))
    frame = pd.DataFrame(rows)
    for window in (1, 7, 30):
        frame[f"user_ratings_{window}d"] = frame[f"user_ratings_{window}d"].fillna(0).astype(int)
    return frame


@pytest.mark.parametrize("day", CHECK_DAYS, ids=str)
def test_user_windows_and_state_match_brute_force(ml100k_warehouse, ratings, day):
    spec = load_spec()
    expected = _brute_force_users(ratings, day, spec.last_n_items)
    columns = list(expected.columns)
    actual = (
        as_of.dense_snapshot(ml100k_warehouse, spec, "user", [day])
        .select("user_id", *columns)
        .toPandas()
        .set_index("user_id")
    )
    # every user is known from the first users drop on (resolved as of the day: the table stores only
    # the users with activity in a window or a change); users never active have no state
    assert len(actual) == 943
    active = actual.loc[expected.index]
    for column in (
        "user_ratings_1d",
        "user_ratings_7d",
        "user_ratings_30d",
        "user_first_active_date",
        "user_last_active_date",
    ):
        assert (active[column] == expected[column]).all(), column
    for column in ("user_rating_mean_30d", "user_rating_std_30d"):
        np.testing.assert_allclose(active[column].astype(float), expected[column].astype(float), rtol=1e-9)
    assert [list(v) for v in active["user_last_items"]] == list(expected["user_last_items"])
    inactive = actual.drop(expected.index)
    assert (inactive["user_ratings_30d"] == 0).all() and inactive["user_last_active_date"].isna().all()


@pytest.mark.parametrize("day", CHECK_DAYS[1:], ids=str)
def test_item_and_user_category_windows_match_brute_force(ml100k_warehouse, ml100k_dir, ratings, day):
    known = ratings[ratings["date"] <= day]
    week = known[known["date"] > day - dt.timedelta(days=7)]
    month = known[known["date"] > day - dt.timedelta(days=30)]
    items = (
        as_of.dense_snapshot(ml100k_warehouse, load_spec(), "item", [day])
        .select("item_id", "item_ratings_7d", "item_rating_mean_30d", "item_category", "item_popularity_rank_7d")
        .toPandas()
        .set_index("item_id")
    )
    assert len(items) == 1682
    expected_7d = week.groupby("item_id").size().reindex(items.index, fill_value=0)
    assert (items["item_ratings_7d"] == expected_7d).all()
    mean_30d = month.groupby("item_id")["rating"].mean()
    np.testing.assert_allclose(items.loc[mean_30d.index, "item_rating_mean_30d"], mean_30d, rtol=1e-9)
    top = items["item_popularity_rank_7d"].idxmin()
    assert expected_7d[top] == expected_7d.max()

    with_category = month.join(items["item_category"], on="item_id")
    expected_uc = with_category.groupby(["user_id", "item_category"]).size()
    actual_uc = (
        ml100k_warehouse.read("user_category_snapshot", partitions=[day])
        .where("user_category_ratings_30d > 0")
        .select("user_id", "category", "user_category_ratings_30d")
        .toPandas()
        .set_index(["user_id", "category"])["user_category_ratings_30d"]
    )
    assert actual_uc.sort_index().to_dict() == expected_uc.sort_index().to_dict()


def test_days_without_events_still_have_a_snapshot(ml100k_warehouse):
    _, event_days = ml100k_warehouse.partitions("events")
    snapshot_days = {d.isoformat() for d in as_of.built_days(ml100k_warehouse, "user")}
    assert len(snapshot_days) == 215 and len(event_days) == 213
    assert set(event_days) < snapshot_days
