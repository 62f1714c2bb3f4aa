"""Where the pipeline's file artifacts live, beside the Delta tables, and how they are written.

    <home>/_artifacts/samples/v<samples version>/      manifest, fitted transforms, Parquet shards
    <home>/_artifacts/gbdt/v<samples version>/         booster, trees, features, metrics
    <home>/_artifacts/models/<model>/v<samples version>/   model.keras, summary, history, logs
    <home>/_artifacts/evaluation/v<samples version>/   metrics.json, report.md, plots

<home> is `paths.artifacts`, by default the warehouse (jobs.settings.PathsSettings.artifacts_home): a local
or mounted directory, as the files are read and written with local file APIs (an object-store warehouse
keeps its Delta tables there and its artefacts on a mounted volume). Spark writes shards here through
spark_uri (file://), so a cluster whose default file system is HDFS writes them to the same directory.

Everything is keyed by the Delta version of the samples it was built from; files and directories are
replaced atomically (write beside, then rename), so a reader never sees half of an artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from features.errors import PipelineInputError


def artifacts_root(home: str | Path) -> Path:
    return Path(home) / "_artifacts"


def spark_uri(path: Path) -> str:
    """A local artefact path as Spark must be given it: file:// (a bare path is relative to fs.defaultFS,
    HDFS on YARN)."""
    return Path(path).resolve().as_uri()


def samples_dir(home: str | Path, version: int) -> Path:
    return artifacts_root(home) / "samples" / f"v{version}"


def gbdt_dir(home: str | Path, samples_version: int) -> Path:
    return artifacts_root(home) / "gbdt" / f"v{samples_version}"


def model_dir(home: str | Path, model: str, samples_version: int) -> Path:
    return artifacts_root(home) / "models" / model / f"v{samples_version}"


def evaluation_dir(home: str | Path, samples_version: int) -> Path:
    return artifacts_root(home) / "evaluation" / f"v{samples_version}"


def latest_samples_version(home: str | Path) -> int:
    root = artifacts_root(home) / "samples"
    versions = (
        sorted(int(p.name[1:]) for p in root.glob("v*") if (p / "manifest.json").exists()) if root.exists() else []
    )
    if not versions:
        raise PipelineInputError(f"no samples built yet under {root}: run recpipe samples first")
    return versions[-1]


def read_json(path: Path, hint: str) -> dict:
    if not path.exists():
        raise PipelineInputError(f"missing {path}: {hint}")
    return json.loads(path.read_text())


def write_json_atomically(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(document, out, indent=2, sort_keys=True, default=str)
    os.chmod(temporary, 0o644)  # mkstemp creates 0600; readers (TF Serving, analysts) may be other users
    os.replace(temporary, path)


def staging_dir(target: Path) -> Path:
    """A fresh directory beside `target` to build it in; publish with `replace_dir`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    staged.chmod(0o755)  # mkdtemp creates 0700
    return staged


def replace_dir(staged: Path, target: Path) -> None:
    """Swap `staged` in as `target` with renames; the previous content is removed afterwards."""
    retired = None
    if target.exists():
        retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.retired-"))
        os.replace(target, retired / target.name)
    os.replace(staged, target)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
