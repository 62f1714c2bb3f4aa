"""Layout of the daily raw log drops and an atomic writer for them.

    <raw_root>/<table>/dt=YYYY-MM-DD/part-00000.jsonl   one JSON object per line
    <raw_root>/<table>/dt=YYYY-MM-DD/_SUCCESS           written last: the drop is complete

`table` is one of events, users, items (see schemas/). An events drop is required for every day that
is ingested; users/items drops hold the rows that are new or changed that day and may be absent.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.errors import PipelineInputError

SUCCESS_MARKER = "_SUCCESS"


def drop_dir(raw_root: str | os.PathLike, table: str, day: dt.date) -> Path:
    return Path(raw_root) / table / f"dt={day.isoformat()}"


def is_complete(raw_root: str | os.PathLike, table: str, day: dt.date) -> bool:
    return (drop_dir(raw_root, table, day) / SUCCESS_MARKER).exists()


def drop_files(raw_root: str | os.PathLike, table: str, day: dt.date) -> list[Path]:
    """Data files of a complete drop; [] when the drop is absent or incomplete."""
    return drop_listing(raw_root, table, day)[0]


def drop_listing(raw_root: str | os.PathLike, table: str, day: dt.date) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(data files, skipped entries with the reason) of a complete drop; ([], []) when the drop is
    absent or incomplete. Data files are the regular files directly in the drop directory whose names
    do not start with `_` or `.`; everything else there is listed as skipped, never silently ignored:
    subdirectories (not read), hidden/underscore files other than _SUCCESS, and symlinks (never
    followed, whatever they point to). Names may hold any character, `[ ] { } * ? :` included."""
    directory = drop_dir(raw_root, table, day)
    if not is_complete(raw_root, table, day):
        return [], []
    files, skipped = [], []
    for entry in sorted(directory.iterdir()):
        if entry.name == SUCCESS_MARKER:
            continue
        if entry.is_symlink():
            skipped.append((entry, "symlink (not followed)"))
        elif entry.is_dir():
            skipped.append((entry, "subdirectory (not read)"))
        elif entry.name.startswith(("_", ".")):
            skipped.append((entry, "name starts with '_' or '.'"))
        elif entry.is_file():
            files.append(entry)
        else:
            skipped.append((entry, "not a regular file"))
    return files, skipped


@dataclass(frozen=True)
class Drop:
    """A complete drop: its data files and the entries of its directory that were not read (with why)."""

    files: list[Path]
    skipped: list[tuple[Path, str]]


def find_drops(raw_root: str, table: str, dates: list[dt.date], required: bool) -> dict[dt.date, Drop]:
    """Each day's complete drop (a drop with _SUCCESS and no data files is complete and empty). A
    required drop that is absent or incomplete is an error naming its path; an optional one is left out."""
    found = {}
    for day in dates:
        if is_complete(raw_root, table, day):
            found[day] = Drop(*drop_listing(raw_root, table, day))
        elif required:
            directory = drop_dir(raw_root, table, day)
            state = "is incomplete (no _SUCCESS marker)" if directory.exists() else "is missing"
            raise PipelineInputError(
                f"{table} drop for {day} {state}: {directory} (use --allow-missing to skip missing days)"
            )
    return found


def write_drop(raw_root: str | os.PathLike, table: str, day: dt.date, frame: pd.DataFrame) -> Path:
    """Write one day's drop as JSON lines, atomically: a temp dir renamed into place, then _SUCCESS.

    Timestamps must already be ISO-8601 strings (see iso_utc); NaN/None values are omitted from a line.
    Rewriting an existing drop replaces it.
    """
    target = drop_dir(raw_root, table, day)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        frame.to_json(staging / "part-00000.jsonl", orient="records", lines=True, force_ascii=False)
        (staging / SUCCESS_MARKER).touch()
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def iso_utc(epoch_ms) -> "pd.Series | list[str]":
    """Epoch milliseconds (array-like) → ISO-8601 UTC strings with millisecond precision and 'Z'."""
    import numpy as np

    values = np.asarray(epoch_ms, dtype="int64").astype("datetime64[ms]")
    return np.datetime_as_string(values, unit="ms", timezone="UTC")
