"""Warehouse maintenance: remove what a killed or failed run left behind, never what a version uses.

    recpipe clean-orphans --config conf/demo.yaml [--older-than-minutes 60] [--dry-run] [--table T]

Orphans are
- data files under a table's directory that no version of its Delta log references (a writer killed
  between moving its Parquet files into the partition directories and the commit). Files of replaced
  versions are referenced by those versions and stay: time travel to every version still in the log
  keeps working;
- leftover `<table>/_staging/<run>` directories of such writers;
- `<export root>/<model>/.staging-*` directories of a killed `recpipe export` (TF Serving never loads
  them: they are not integer versions).

Only orphans whose newest file is older than `older_than_minutes` are removed, so a write or export
still in flight is never touched; `_delta_log` is never touched. No Spark: delta-rs and the file system.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow.fs as pafs

from features.errors import PipelineInputError
from features.tables import STAGING_DIR

DEFAULT_OLDER_THAN_MINUTES = 60
DELTA_LOG = "_delta_log"
EXPORT_STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class Orphan:
    owner: str  # table name, or "export/<model>"
    kind: str  # "data file" | "staging dir" | "export staging dir"
    path: str  # path on the file system
    size: int  # bytes (a directory: all its files)
    modified: dt.datetime  # newest modification time (a directory: of anything in it)


def _filesystem(root: str, storage=None) -> tuple[pafs.FileSystem, str]:
    """Any spelling of a local path or object-store URI (features.storage: s3a:// is s3 to pyarrow)."""
    from features.storage import resolve

    return resolve(root, storage).filesystem()


def _uri(fs: pafs.FileSystem, path: str) -> str:
    return path if isinstance(fs, pafs.LocalFileSystem) else f"{fs.type_name}://{path}"


def table_names(fs: pafs.FileSystem, warehouse: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(warehouse, allow_not_found=True))
    return sorted(
        i.base_name
        for i in infos
        if i.type == pafs.FileType.Directory
        and fs.get_file_info(f"{i.path}/{DELTA_LOG}").type == pafs.FileType.Directory
    )


def log_versions(fs: pafs.FileSystem, table_dir: str) -> list[int]:
    """Versions whose commit file is still in the log (older ones can no longer be time-travelled to)."""
    infos = fs.get_file_info(pafs.FileSelector(f"{table_dir}/{DELTA_LOG}"))
    stems = (i.base_name.removesuffix(".json") for i in infos if i.base_name.endswith(".json"))
    return sorted(int(stem) for stem in stems if stem.isdigit())


def unreferenced_files(fs: pafs.FileSystem, table_dir: str) -> list[str]:
    """Files under the table directory that no version in the log references (relative paths).

    delta-rs's full vacuum in dry-run mode lists exactly these when every version is kept; it skips
    `_delta_log` and other `_`/`.` directories (so `_staging` is handled separately)."""
    from deltalake import DeltaTable

    table = DeltaTable(_uri(fs, table_dir))
    kept = [v for v in log_versions(fs, table_dir) if v <= table.version()]
    listed = table.vacuum(
        retention_hours=0, dry_run=True, enforce_retention_duration=False, full=True, keep_versions=kept
    )
    prefix = table_dir.rstrip("/") + "/"
    relative = (p.removeprefix("file://").removeprefix(prefix) for p in listed)
    return sorted(p for p in relative if not p.startswith((DELTA_LOG, "/")))


def _newest_and_size(fs: pafs.FileSystem, info: pafs.FileInfo) -> tuple[dt.datetime, int]:
    """A file's mtime and size; for a directory the newest mtime and total size of everything inside."""
    if info.type == pafs.FileType.File:
        return info.mtime, info.size
    inside = fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
    times = [i.mtime for i in [info, *inside] if i.mtime is not None]
    size = sum(i.size or 0 for i in inside if i.type == pafs.FileType.File)
    return (max(times) if times else dt.datetime.fromtimestamp(0, dt.timezone.utc)), size


def _orphan(fs, owner: str, kind: str, info: pafs.FileInfo) -> Orphan:
    modified, size = _newest_and_size(fs, info)
    return Orphan(owner, kind, info.path, size, modified)


def table_orphans(fs: pafs.FileSystem, warehouse: str, name: str) -> list[Orphan]:
    table_dir = f"{warehouse}/{name}"
    files = [f"{table_dir}/{p}" for p in unreferenced_files(fs, table_dir)]
    orphans = [
        _orphan(fs, name, "data file", info) for info in fs.get_file_info(files) if info.type == pafs.FileType.File
    ]
    staging = fs.get_file_info(pafs.FileSelector(f"{table_dir}/{STAGING_DIR}", allow_not_found=True))
    return orphans + [_orphan(fs, name, "staging dir", info) for info in staging]


def export_orphans(fs: pafs.FileSystem, export_root: str) -> list[Orphan]:
    models = fs.get_file_info(pafs.FileSelector(export_root, allow_not_found=True))
    orphans = []
    for model in (m for m in models if m.type == pafs.FileType.Directory):
        for entry in fs.get_file_info(pafs.FileSelector(model.path)):
            if entry.base_name.startswith(EXPORT_STAGING_PREFIX):
                orphans.append(_orphan(fs, f"export/{model.base_name}", "export staging dir", entry))
    return orphans


def _remove(fs: pafs.FileSystem, orphan: Orphan) -> None:
    """Deletes the orphan only; directories around it stay (a writer may be about to use them)."""
    if orphan.kind == "data file":
        fs.delete_file(orphan.path)
    else:
        fs.delete_dir(orphan.path)


def clean_orphans(
    warehouse: str,
    export_root: str | None = None,
    table: str | None = None,
    older_than_minutes: float = DEFAULT_OLDER_THAN_MINUTES,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    storage=None,
) -> dict:
    """Find the orphans of every table (or one) and of the export root; remove those older than the
    cutoff unless dry_run. Returns {"removed" (or would be), "kept_recent", "dry_run", "cutoff"}."""
    if older_than_minutes < 0:
        raise PipelineInputError("--older-than-minutes must be >= 0")
    fs, root = _filesystem(warehouse, storage)
    names = table_names(fs, root)
    if table is not None and table not in names:
        raise PipelineInputError(f"no table {table} under {root}; tables: {', '.join(names) or 'none'}")
    found = [(fs, o) for name in ([table] if table else names) for o in table_orphans(fs, root, name)]
    if export_root and table is None:
        export_fs, export_dir = _filesystem(export_root, storage)
        found += [(export_fs, o) for o in export_orphans(export_fs, export_dir)]
    cutoff = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(minutes=older_than_minutes)
    stale = [(owner_fs, o) for owner_fs, o in found if o.modified <= cutoff]
    if not dry_run:
        for owner_fs, orphan in stale:
            _remove(owner_fs, orphan)
    return {
        "removed": [o for _, o in stale],
        "kept_recent": [o for _, o in found if o.modified > cutoff],
        "dry_run": dry_run,
        "cutoff": cutoff,
    }


def format_report(result: dict) -> str:
    verb = "would remove" if result["dry_run"] else "removed"
    removed, recent = result["removed"], result["kept_recent"]
    if not removed and not recent:
        return "nothing to clean"
    lines = [f"{verb} {o.kind} {o.path} ({o.size} bytes, {o.owner})" for o in removed]
    lines += [
        f"kept (newer than the cutoff {result['cutoff']:%Y-%m-%d %H:%M:%S} UTC) {o.kind} {o.path}" for o in recent
    ]
    total = sum(o.size for o in removed)
    lines.append(f"{verb} {len(removed)} orphans ({total} bytes); kept {len(recent)} recent ones")
    return "\n".join(lines)
