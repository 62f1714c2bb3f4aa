"""What a cluster's executors need of recpipe: one zip of the project's packages, built once per code version.

    python -m jobs.dist --out dist        # make dist: dist/recpipe.zip for spark-submit --py-files

The zip holds the importable packages (jobs, features, training, schemas with its YAML files) and nothing
else; executors bring the third-party dependencies (pyspark, pyarrow, pandas, xgboost, ...) in their own
Python. Its name carries a hash of its contents, so a changed file is a new zip and an executor never
imports a stale copy (Spark caches shipped files by name). build_session ships it by itself
(`spark.ship_code`), so spark-submit needs no --py-files; a job submitted with --py-files recpipe*.zip is
not shipped twice.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from functools import cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jobs", "features", "training", "schemas")
SUFFIXES = (".py", ".yaml")
CACHE_ENV = "RECPIPE_DIST_DIR"  # where build_session keeps the zips it ships (default: <tmp>/recpipe-dist)
# A fixed timestamp for every entry: the same sources give the same bytes, whoever builds them
ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def project_files(root: Path = PROJECT_ROOT) -> list[tuple[Path, str]]:
    """(file, name inside the zip) of every source file of the shipped packages, sorted."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                found.append((path, path.relative_to(root).as_posix()))
    return found


def code_hash(root: Path = PROJECT_ROOT) -> str:
    digest = hashlib.sha256()
    for path, name in project_files(root):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_zip(target: Path, root: Path = PROJECT_ROOT) -> Path:
    """Writes the zip to `target` atomically (a temp file renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, name in project_files(root):
                info = zipfile.ZipInfo(name, ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide it from a cluster's other users
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


@cache
def shipped_zip() -> Path:
    """The zip of the code this process runs, built once per code version into the cache directory (a
    process that runs from a zip already, e.g. a driver started with --py-files, ships that zip)."""
    if PROJECT_ROOT.is_file() and PROJECT_ROOT.suffix == ".zip":
        return PROJECT_ROOT
    directory = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "recpipe-dist")
    target = directory / f"recpipe-{code_hash()}.zip"
    if not target.exists():
        build_zip(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.dist", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dist", help="directory to write recpipe.zip into (default dist)")
    args = parser.parse_args(argv)
    target = build_zip(Path(args.out) / "recpipe.zip")
    versioned = target.with_name(f"recpipe-{code_hash()}.zip")
    shutil.copyfile(target, versioned)
    print(f"wrote {target} and {versioned} ({len(project_files())} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
