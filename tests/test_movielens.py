"""MovieLens import: ml-100k (read in place from the shared data; skipped when absent) and the CSV layout."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from features.movielens import import_movielens
from features.raw_drops import drop_files
from features.schemas import load_schema


def drop_dates(root: Path, table: str) -> list[str]:
    return sorted(p.name.removeprefix("dt=") for p in (root / table).glob("dt=*") if (p / "_SUCCESS").exists())


def read_table(root: Path, table: str) -> list[dict]:
    rows = []
    for date in drop_dates(root, table):
        for file in drop_files(root, table, dt.date.fromisoformat(date)):
            rows += [json.loads(line) | {"_drop": date} for line in file.read_text().splitlines()]
    return rows


def assert_matches_schema(table: str, rows: list[dict]) -> None:
    schema = load_schema(table)
    for row in rows:
        assert set(row) - {"_drop"} <= set(schema.column_names), row
        for col in schema.columns:
            value = row.get(col.name)
            assert value is not None or not col.required, (col.name, row)
            if value is not None and col.allowed:
                assert value in col.allowed, (col.name, row)
            if value is not None and col.min is not None:
                assert value >= col.min, (col.name, row)


@pytest.fixture(scope="module")
def ml100k(ml100k_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml100k")
    return out, import_movielens(ml100k_dir, out)


def test_ml100k_ratings_become_one_events_drop_per_date(ml100k):
    out, summary = ml100k
    events = read_table(out, "events")
    assert len(events) == summary["events"] == 100_000
    assert {e["event_type"] for e in events} == {"rating"}
    assert {e["value"] for e in events} <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert all(e["event_time"][:10] == e["_drop"] for e in events)
    assert len({e["event_id"] for e in events}) == 100_000
    dates = drop_dates(out, "events")
    assert (dates[0], dates[-1]) == ("1997-09-20", "1998-04-22")
    assert (summary["first_date"], summary["last_date"]) == ("1997-09-20", "1998-04-22")
    assert summary["drops"]["events"] == len(dates)
    assert_matches_schema("events", events[:5_000])


def test_ml100k_users_and_items_are_one_drop_on_the_first_date(ml100k):
    out, summary = ml100k
    users, items = read_table(out, "users"), read_table(out, "items")
    assert drop_dates(out, "users") == drop_dates(out, "items") == ["1997-09-20"]
    assert len(users) == summary["users"] == 943
    assert len(items) == summary["items"] == 1682
    assert {u["gender"] for u in users} == {"M", "F"}
    assert all(i["category"] and i["category"] == i["genres"].split("|")[0] for i in items)
    toy_story = next(i for i in items if i["item_id"] == 1)
    assert toy_story["genres"] == "Animation|Children's|Comedy"
    assert toy_story["release_date"] == "1995-01-01"
    assert any(i.get("release_date") is None for i in items)
    assert_matches_schema("users", users)
    assert_matches_schema("items", items)


def write_csv_layout(directory: Path) -> Path:
    directory.mkdir()
    (directory / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,10,4.0,86399\n"  # 1970-01-01T23:59:59Z
        "2,10,0.5,86400\n"  # 1970-01-02T00:00:00Z
        "1,20,3.5,90000\n"
        "3,30,5.0,864000\n"  # 1970-01-11: the dates between have no drop
    )
    (directory / "movies.csv").write_text(
        "movieId,title,genres\n"
        "10,Heat (1995),Action|Crime|Thriller\n"
        '20,"Good, the Bad (1966) ",Western\n'
        "30,Untitled Project,(no genres listed)\n"
    )
    return directory


def test_csv_layout_writes_events_per_date_and_items_without_users(tmp_path):
    out = tmp_path / "raw"
    summary = import_movielens(write_csv_layout(tmp_path / "ml-small"), out)
    assert summary == {
        "layout": "csv",
        "events": 4,
        "users": 0,
        "items": 3,
        "first_date": "1970-01-01",
        "last_date": "1970-01-11",
        "drops": {"events": 3, "users": 0, "items": 1},
    }
    assert drop_dates(out, "events") == ["1970-01-01", "1970-01-02", "1970-01-11"]
    assert not (out / "users").exists()
    events = read_table(out, "events")
    assert [(e["event_id"], e["value"], e["event_time"]) for e in events[:2]] == [
        ("ml-1-10-86399", 4.0, "1970-01-01T23:59:59.000Z"),
        ("ml-2-10-86400", 0.5, "1970-01-02T00:00:00.000Z"),
    ]
    assert all(
        set(e) == {"event_id", "event_type", "user_id", "item_id", "event_time", "value", "_drop"} for e in events
    )
    items = {i["item_id"]: i for i in read_table(out, "items")}
    assert drop_dates(out, "items") == ["1970-01-01"]
    assert items[10] | {"_drop": None} == {
        "item_id": 10,
        "title": "Heat (1995)",
        "category": "Action",
        "genres": "Action|Crime|Thriller",
        "release_date": "1995-01-01",
        "_drop": None,
    }
    assert items[20]["release_date"] == "1966-01-01"
    assert items[30]["category"] == "unknown"
    assert items[30].get("genres") is None and items[30].get("release_date") is None
    assert_matches_schema("events", events)
    assert_matches_schema("items", list(items.values()))


@pytest.mark.parametrize("present, missing", [(["ratings.csv"], "movies.csv"), (["u.data", "u.user"], "u.item")])
def test_missing_file_error_names_the_path(tmp_path, present, missing):
    for name in present:
        (tmp_path / name).write_text("1\t10\t4\t86399\n" if name == "u.data" else "userId,movieId,rating,timestamp\n")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / missing))):
        import_movielens(tmp_path, tmp_path / "raw")


def test_unrecognized_directory_says_which_files_were_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("not movielens")
    with pytest.raises(ValueError, match=r"u\.data.*ratings\.csv"):
        import_movielens(tmp_path, tmp_path / "raw")
