"""Where the pipeline's file artifacts live, beside the Delta tables, and how they are written.

    <warehouse>/_artifacts/samples/v<samples version>/      manifest, fitted transforms, Parquet shards
    <warehouse>/_artifacts/gbdt/v<samples version>/         booster, trees, features, metrics
    <warehouse>/_artifacts/models/<model>/v<samples version>/   model.keras, summary, history, logs
    <warehouse>/_artifacts/evaluation/v<samples version>/   metrics.json, report.md, plots

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


def artifacts_root(warehouse: str | Path) -> Path:
    return Path(warehouse) / "_artifacts"


def samples_dir(warehouse: str | Path, version: int) -> Path:
    return artifacts_root(warehouse) / "samples" / f"v{version}"


def gbdt_dir(warehouse: str | Path, samples_version: int) -> Path:
    return artifacts_root(warehouse) / "gbdt" / f"v{samples_version}"


def model_dir(warehouse: str | Path, model: str, samples_version: int) -> Path:
    return artifacts_root(warehouse) / "models" / model / f"v{samples_version}"


def evaluation_dir(warehouse: str | Path, samples_version: int) -> Path:
    return artifacts_root(warehouse) / "evaluation" / f"v{samples_version}"


def latest_samples_version(warehouse: str | Path) -> int:
    root = artifacts_root(warehouse) / "samples"
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
