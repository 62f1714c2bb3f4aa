"""Import MovieLens ratings as raw drops: one events drop per UTC date with ratings, users/items once.

Layouts, detected from the files present:
    ml-100k   u.data, u.item, u.user (tab / pipe separated, u.item in latin-1)
    CSV       ratings.csv, movies.csv (ml-latest-small, ml-25m, ...; no user file, so no users drop)
MovieLens may not be redistributed: read it from where it lies, never copy it into the project.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import PipelineInputError
from features.raw_drops import iso_utc, write_drop

ML100K_FILES = ("u.data", "u.item", "u.user")
CSV_FILES = ("ratings.csv", "movies.csv")
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
NO_GENRES = "(no genres listed)"
MS_PER_DAY = 86_400_000


class NotMovieLens(PipelineInputError, ValueError):
    """A directory without the files of either MovieLens layout, or without ratings."""


def import_movielens(path, out) -> dict:
    """Write MovieLens at `path` as drops under `out`; return a summary of what was written."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"MovieLens directory not found: {path}")
    if (path / "u.data").exists():
        layout = "ml-100k"
        ratings, items, users = _read_ml100k(path)
    elif (path / "ratings.csv").exists():
        layout = "csv"
        ratings, items, users = _read_csv_layout(path)
    else:
        raise NotMovieLens(
            f"{path} is not a MovieLens directory: expected {', '.join(ML100K_FILES)} (ml-100k) "
            f"or {', '.join(CSV_FILES)} (ml-latest-small, ml-25m)"
        )

    if ratings.empty:
        raise NotMovieLens(f"{path} has no ratings")
    ratings = ratings.sort_values(["timestamp", "user_id", "item_id"], kind="stable", ignore_index=True)
    time_ms = ratings["timestamp"].to_numpy(np.int64) * 1000
    day_number = time_ms // MS_PER_DAY
    events = pd.DataFrame(
        {
            "event_id": "ml-"
            + ratings["user_id"].astype(str)
            + "-"
            + ratings["item_id"].astype(str)
            + "-"
            + ratings["timestamp"].astype(str),
            "event_type": "rating",
            "user_id": ratings["user_id"].astype(np.int64),
            "item_id": ratings["item_id"].astype(np.int64),
            "event_time": iso_utc(time_ms),
            "value": ratings["rating"].astype(float),
        }
    )
    starts = np.r_[0, np.flatnonzero(np.diff(day_number)) + 1]  # rows are sorted, so each date is one run
    dates = day_number[starts].astype("datetime64[D]").tolist()  # datetime.date per drop
    for date, start, stop in zip(dates, starts, np.r_[starts[1:], len(events)]):
        write_drop(out, "events", date, events.iloc[start:stop])
    first_date, last_date = dates[0], dates[-1]
    write_drop(out, "items", first_date, items)
    if users is not None:
        write_drop(out, "users", first_date, users)
    return {
        "layout": layout,
        "events": len(events),
        "users": 0 if users is None else len(users),
        "items": len(items),
        "first_date": first_date.isoformat(),
        "last_date": last_date.isoformat(),
        "drops": {"events": len(dates), "users": int(users is not None), "items": 1},
    }


def _require(path: Path, names) -> list[Path]:
    files = [path / name for name in names]
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"MovieLens file missing: {file}")
    return files


def _read_ml100k(path: Path):
    data, item, user = _require(path, ML100K_FILES)
    ratings = pd.read_csv(data, sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"])
    movies = pd.read_csv(
        item,
        sep="|",
        header=None,
        encoding="latin-1",
        dtype=str,
        keep_default_na=False,
        names=["item_id", "title", "release", "video_release", "imdb_url", *ML100K_GENRES],
    )
    flags = movies[list(ML100K_GENRES)].to_numpy() == "1"
    genre_lists = [[g for g, on in zip(ML100K_GENRES, row) if on] for row in flags]
    release = pd.to_datetime(movies["release"], format="%d-%b-%Y", errors="coerce")
    items = _items_frame(
        movies["item_id"].astype(np.int64), movies["title"], genre_lists, release.dt.strftime("%Y-%m-%d")
    )
    users = pd.read_csv(
        user,
        sep="|",
        header=None,
        dtype=str,
        keep_default_na=False,
        names=["user_id", "age", "gender", "occupation", "zip_code"],
    )
    users = users.astype({"user_id": np.int64, "age": np.int64})
    return ratings, items, users


def _read_csv_layout(path: Path):
    ratings_csv, movies_csv = _require(path, CSV_FILES)
    ratings = pd.read_csv(
        ratings_csv, dtype={"userId": np.int64, "movieId": np.int64, "rating": float, "timestamp": np.int64}
    )
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    movies = pd.read_csv(movies_csv, dtype={"movieId": np.int64, "title": str, "genres": str}, keep_default_na=False)
    genre_lists = [[] if g in ("", NO_GENRES) else g.split("|") for g in movies["genres"]]
    year = movies["title"].str.extract(r"\((\d{4})\)\s*$", expand=False)
    return ratings, _items_frame(movies["movieId"], movies["title"], genre_lists, year + "-01-01"), None


def _items_frame(item_id, title, genre_lists, release_date) -> pd.DataFrame:
    """Items rows; category is the first genre ("unknown" without one), missing values become null."""
    return pd.DataFrame(
        {
            "item_id": np.asarray(item_id, dtype=np.int64),
            "title": np.asarray(title, dtype=object),
            "category": [genres[0] if genres else "unknown" for genres in genre_lists],
            "genres": ["|".join(genres) if genres else None for genres in genre_lists],
            "release_date": pd.Series(release_date, dtype=object).where(pd.notna(release_date), None).to_numpy(),
        }
    )
