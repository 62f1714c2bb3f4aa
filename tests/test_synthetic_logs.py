"""Synthetic log generator: determinism, schema-valid drops, day boundaries, click model sanity."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.raw_drops import drop_files
from features.schemas import load_schema
from features.synthetic_logs import generate_logs, roc_auc

START = dt.date(2026, 3, 1)
DAYS = 4
USERS = 3_000
ITEMS = 300
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def read_drop(root, table, day) -> list[dict]:
    rows = []
    for file in drop_files(root, table, day):
        rows += [json.loads(line) for line in file.read_text().splitlines()]
    return rows


def schema_violations(table: str, rows: list[dict]) -> list[str]:
    """Human-readable problems of rows against schemas/<table>.yaml (empty when all rows are valid)."""
    schema = load_schema(table)
    problems = []
    for n, row in enumerate(rows):
        unknown = set(row) - set(schema.column_names)
        if unknown:
            problems.append(f"row {n}: unknown columns {sorted(unknown)}")
        for col in schema.columns:
            value = row.get(col.name)
            if value is None:
                if col.required:
                    problems.append(f"row {n}: {col.name} missing")
                continue
            if not _has_type(value, col.type):
                problems.append(f"row {n}: {col.name}={value!r} is not {col.type}")
            elif col.allowed and value not in col.allowed:
                problems.append(f"row {n}: {col.name}={value!r} not allowed")
            elif (col.min is not None and value < col.min) or (col.max is not None and value > col.max):
                problems.append(f"row {n}: {col.name}={value!r} out of range")
    return problems


def _has_type(value, type_name: str) -> bool:
    if type_name in ("long", "int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "double":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if type_name == "timestamp":
        return isinstance(value, str) and bool(TIMESTAMP.match(value))
    if type_name == "date":
        return isinstance(value, str) and bool(DATE.match(value))
    return isinstance(value, str)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    summary = generate_logs(root, start_date=START, days=DAYS, users=USERS, items=ITEMS, seed=11)
    days = [START + dt.timedelta(days=d) for d in range(DAYS)]
    events = pd.concat(
        [pd.DataFrame(read_drop(root, "events", day)).assign(drop_date=pd.Timestamp(day, tz="UTC")) for day in days],
        ignore_index=True,
    )
    events["event_time"] = pd.to_datetime(events["event_time"], utc=True)
    return root, summary, days, events


def test_same_seed_gives_identical_files_and_another_seed_different_ones(tmp_path):
    config = dict(start_date=START, days=2, users=200, items=50)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_logs(tmp_path / name, seed=seed, **config)
    first, again, other = (all_files(tmp_path / name) for name in "abc")
    assert first == again
    assert first.keys() == other.keys()
    assert first["events/dt=2026-03-01/part-00000.jsonl"] != other["events/dt=2026-03-01/part-00000.jsonl"]


def test_every_drop_exists_and_every_row_satisfies_its_schema(logs):
    root, _, days, _ = logs
    for day in days:
        for table in ("events", "users", "items"):
            assert drop_files(root, table, day), f"{table} drop missing for {day}"
            rows = read_drop(root, table, day)
            assert rows, f"{table} drop for {day} is empty"
            assert schema_violations(table, rows)[:5] == []


def test_summary_matches_the_drops(logs):
    root, summary, days, events = logs
    assert json.loads((root / "_generator_summary.json").read_text()) == summary
    assert summary["first_date"] == days[0].isoformat() and summary["last_date"] == days[-1].isoformat()
    assert summary["events"] == {t: int((events["event_type"] == t).sum()) for t in summary["events"]}
    assert summary["events_total"] == len(events)
    assert events["event_id"].is_unique


def test_events_stay_within_48_hours_before_their_drop_and_some_arrive_late(logs):
    _, summary, _, events = logs
    lag = events["drop_date"] - events["event_time"]
    assert (events["event_time"] < events["drop_date"] + pd.Timedelta(days=1)).all()
    assert (lag <= pd.Timedelta(hours=48)).all()
    late = events[events["event_time"] < events["drop_date"]]
    assert len(late) == summary["late_events"] > 0


def shown_before(clicks: pd.DataFrame, events: pd.DataFrame) -> pd.Series:
    """Time of the latest impression of the same user, item, device, page and position before each click."""
    slot = ["user_id", "item_id", "device", "page", "position"]
    impressions = events.loc[events["event_type"] == "impression", slot + ["event_time"]]
    impressions = impressions.assign(shown_at=impressions["event_time"]).sort_values("event_time")
    matched = pd.merge_asof(
        clicks.reset_index().sort_values("event_time"), impressions, on="event_time", by=slot, allow_exact_matches=False
    )
    return matched.set_index("index")["shown_at"].reindex(clicks.index)


def test_every_click_follows_an_impression_of_the_same_slot(logs):
    _, _, days, events = logs
    clicks = events[events["event_type"] == "click"]
    # A late impression of the last day has not been delivered yet; its click may have been.
    clicks = clicks[clicks["event_time"] < pd.Timestamp(days[-1], tz="UTC")]
    assert shown_before(clicks, events).notna().all()
    assert (clicks["value"] > 0).all()


def test_some_clicks_on_an_impression_before_midnight_land_in_the_next_drop(logs):
    _, summary, _, events = logs
    clicks = events[(events["event_type"] == "click") & (events["event_time"] >= events["drop_date"])]
    after_midnight = clicks[shown_before(clicks, events) < clicks["drop_date"]]
    assert len(after_midnight) == summary["clicks_after_midnight"] > 0


def test_no_item_is_shown_before_its_release(logs):
    root, _, days, events = logs
    items = pd.DataFrame(read_drop(root, "items", days[0]))
    shown = events[events["event_type"] == "impression"].merge(items[["item_id", "release_date"]], on="item_id")
    assert (shown["event_time"].dt.strftime("%Y-%m-%d") >= shown["release_date"]).all()
    assert (items["release_date"] >= days[0].isoformat()).any(), "some items should be released during the run"


def test_click_rates_are_sane_and_learnable(logs):
    _, summary, _, events = logs
    counts = events["event_type"].value_counts()
    assert 0.03 <= counts["click"] / counts["impression"] <= 0.10
    assert 0.03 <= summary["ctr"] <= 0.10
    assert summary["oracle_auc"] > 0.65
    ratings = events.loc[events["event_type"] == "rating", "value"]
    assert set(ratings.unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert counts.get("like", 0) > 0 and counts.get("purchase", 0) > 0


def test_later_dimension_drops_hold_only_changed_rows(logs):
    root, _, days, _ = logs
    for table, key, limit in (("users", "user_id", 0.02 * USERS), ("items", "item_id", 0.04 * ITEMS)):
        current = pd.DataFrame(read_drop(root, table, days[0])).set_index(key)
        assert len(current) == (USERS if table == "users" else ITEMS)
        for day in days[1:]:
            changed = pd.DataFrame(read_drop(root, table, day)).set_index(key)
            assert 0 < len(changed) <= limit
            before = current.loc[changed.index, changed.columns]
            assert (before != changed).any(axis=1).all(), f"{table} {day}: unchanged rows in drop"
            current.loc[changed.index, changed.columns] = changed


def test_roc_auc_matches_pairwise_counting_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))


def _daily_click_rates(root: Path, days: list[dt.date]) -> tuple[dict, dict]:
    """Impressions and clicks per event date, counted from every drop (late events included)."""
    events = pd.concat([pd.DataFrame(read_drop(root, "events", day)) for day in days], ignore_index=True)
    date = events["event_time"].str[:10]
    shown = events[events["event_type"] == "impression"].groupby(date).size().to_dict()
    clicked = events[events["event_type"] == "click"].groupby(date).size().to_dict()
    return shown, clicked


def test_ctr_drift_shifts_the_click_rate_of_later_days_only(tmp_path):
    days = [START + dt.timedelta(days=d) for d in range(5)]
    config = dict(start_date=START, days=len(days), users=1500, items=100, seed=3)
    generate_logs(tmp_path / "plain", **config)
    generate_logs(tmp_path / "zero", ctr_drift=0.0, **config)
    summary = generate_logs(tmp_path / "drift", ctr_drift=-1.5, **config)
    assert all_files(tmp_path / "plain") == all_files(tmp_path / "zero")  # no drift: the logs as before
    plain, drift = (all_files(tmp_path / name) for name in ("plain", "drift"))
    first_drop = "events/dt=2026-03-01/part-00000.jsonl"
    assert drift[first_drop] == plain[first_drop]  # no shift on the first day
    assert summary["ctr_drift"] == -1.5 and len(summary["daily_ctr"]) == len(days)
    (plain_shown, plain_clicks), (drift_shown, drift_clicks) = (
        _daily_click_rates(tmp_path / name, days) for name in ("plain", "drift")
    )
    first, last = days[0].isoformat(), days[-1].isoformat()
    # the same impressions every day, only the clicks move (the last day's late ones are not delivered,
    # and which events are late is drawn after the clicks)
    assert {d: n for d, n in drift_shown.items() if d != last} == {d: n for d, n in plain_shown.items() if d != last}
    assert drift_shown[last] == pytest.approx(plain_shown[last], rel=0.02)
    plain_ratio = (plain_clicks[last] / plain_shown[last]) / (plain_clicks[first] / plain_shown[first])
    drift_ratio = (drift_clicks[last] / drift_shown[last]) / (drift_clicks[first] / drift_shown[first])
    # a logit shift of -1.5 on ~5% click probabilities multiplies them by about e^-1.5 = 0.22
    assert 0.7 < plain_ratio < 1.4
    assert 0.12 < drift_ratio < 0.35
    with pytest.raises(ValueError, match="ctr_drift"):
        generate_logs(tmp_path / "bad", ctr_drift=float("nan"), **config)
