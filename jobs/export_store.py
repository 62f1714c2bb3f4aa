"""Publishing SavedModels to an export root on an object store (s3://, gs://, az://; features.storage).

An object store has no atomic rename, and TF Serving's file-system source lists a version directory as
soon as its first object exists, so a version uploaded in place would be visible half written. Here the
serving side does not discover versions by listing; it reads one object that names them:

    <root>/<model>/<version>/...       the SavedModel, uploaded file by file (model card last)
    <root>/<model>/published.json      {"versions": [...]}: the complete versions, newest last
    <root>/models.config               TF Serving's model config: every model with
                                       model_version_policy { specific { versions: ... } }

Order of a publish: upload every file of the new version and check each one's size in a listing → write
published.json → write models.config (one PUT each: a reader sees the old or the new object, never a
part of one) → only then delete the versions beyond keep_versions (they are no longer listed). TF Serving
runs with `--model_config_file=<root>/models.config --model_config_file_poll_wait_seconds=60`, so it loads
only listed versions, which are complete when listed. A publish that dies midway leaves its partial
version unlisted (models.config unchanged); the next publish takes the next number and
`recpipe clean-orphans` is not needed for correctness. Two exports of different models at once may each
rewrite models.config: the later one lists both (it reads every model's published.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from features.storage import Location, resolve

INDEX = "published.json"
MODEL_CONFIG = "models.config"
CARD = "assets.extra/model_card.json"


class StoreExport:
    def __init__(self, root: str, storage: Any = None):
        self.location: Location = resolve(root, storage)
        self.fs, self.base = self.location.filesystem()

    def _model_dir(self, model: str) -> str:
        return f"{self.base}/{model}"

    def version_dirs(self, model: str) -> list[int]:
        """Every numeric version prefix under the model, complete or not."""
        infos = self.fs.get_file_info(pafs.FileSelector(self._model_dir(model), allow_not_found=True))
        return sorted(int(i.base_name) for i in infos if i.base_name.isdigit())

    def published(self, model: str) -> list[int]:
        index = self._read_json(f"{self._model_dir(model)}/{INDEX}")
        return sorted(index["versions"]) if index else []

    def next_version(self, model: str) -> int:
        """One more than any version ever started, so a partial upload's number is never reused."""
        return max([0, *self.version_dirs(model), *self.published(model)]) + 1

    def published_card(self, model: str) -> dict | None:
        versions = self.published(model)
        return self._read_json(f"{self._model_dir(model)}/{versions[-1]}/{CARD}") if versions else None

    def download(self, model: str, version: int, local_dir: Path) -> None:
        """A published version into a local directory (the export gate scores the champion from it)."""
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(
            f"{self._model_dir(model)}/{version}",
            str(local_dir),
            source_filesystem=self.fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )

    def publish(self, saved_model: Path, model: str, version: int, keep_versions: int) -> list[int]:
        """Uploads the local SavedModel directory as <model>/<version>, lists it, drops versions beyond
        keep_versions; returns the removed versions."""
        target = f"{self._model_dir(model)}/{version}"
        files = sorted(
            (p for p in Path(saved_model).rglob("*") if p.is_file()),
            key=lambda p: (p.relative_to(saved_model).as_posix() == CARD, p.as_posix()),
        )
        for path in files:  # the model card last
            self._put(f"{target}/{path.relative_to(saved_model).as_posix()}", path.read_bytes())
        uploaded = {
            i.path: i.size
            for i in self.fs.get_file_info(pafs.FileSelector(target, recursive=True))
            if i.type == pafs.FileType.File
        }
        for path in files:
            name = f"{target}/{path.relative_to(saved_model).as_posix()}"
            if uploaded.get(name) != path.stat().st_size:
                raise OSError(f"upload of {name} is incomplete ({uploaded.get(name)} of {path.stat().st_size} bytes)")
        versions = sorted({*self.published(model), version})
        kept, removed = versions[-keep_versions:], versions[:-keep_versions]
        self._put(f"{self._model_dir(model)}/{INDEX}", json.dumps({"versions": kept}).encode())
        self.write_model_config()
        for old in removed:
            self.fs.delete_dir(f"{self._model_dir(model)}/{old}")
        return removed

    def models(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        return sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory
            and self.fs.get_file_info(f"{i.path}/{INDEX}").type == pafs.FileType.File
        )

    def write_model_config(self) -> str:
        blocks = []
        for model in self.models():
            versions = "".join(f"        versions: {v}\n" for v in self.published(model))
            blocks.append(
                f'  config {{\n    name: "{model}"\n    base_path: "{self.location.child(model).arrow_uri}"\n'
                f'    model_platform: "tensorflow"\n    model_version_policy {{\n      specific {{\n'
                f"{versions}      }}\n    }}\n  }}\n"
            )
        text = "model_config_list {\n" + "".join(blocks) + "}\n"
        self._put(f"{self.base}/{MODEL_CONFIG}", text.encode())
        return text

    def _put(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def _read_json(self, path: str) -> dict | None:
        try:
            with self.fs.open_input_stream(path) as handle:
                return json.loads(handle.read().decode())
        except FileNotFoundError:
            return None


def served_versions(model_config: str) -> dict[str, list[int]]:
    """What TF Serving reads from models.config: model name -> the versions it may load."""
    found: dict[str, list[int]] = {}
    name = None
    for line in model_config.splitlines():
        line = line.strip()
        if line.startswith("name:"):
            name = json.loads(line.split(":", 1)[1].strip())
            found[name] = []
        elif line.startswith("versions:") and name is not None:
            found[name].append(int(line.split(":", 1)[1]))
    return found
