"""The models' raw inputs, derived from the feature spec: one named input per model feature.

This is the contract training, export and serving share:

    numeric features (transforms quantile_buckets, normalize, log1p)   float32 [None]     NaN = missing
    integer categoricals (vocabulary, hashing of int/long ids)          int64   [None]     -1  = missing
    string categoricals                                                 string  [None]     ""  = missing
    list features (array<long>, array<string>)                          int64/string [None, N], padded
                                                                        with -1 / "" after the last value

`arrow_to_arrays` turns a pyarrow RecordBatch of the samples into exactly these numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.errors import PipelineInputError
from features.feature_spec import Feature, FeatureSpec

NUMERIC_TRANSFORMS = {"quantile_buckets", "normalize", "log1p"}


@dataclass(frozen=True)
class ModelInput:
    name: str
    dtype: str  # float32 | int64 | string
    length: int | None = None  # None: one value per row; N: a padded list of N values per row

    @property
    def shape(self) -> tuple:
        return () if self.length is None else (self.length,)

    @property
    def missing(self):
        return {"float32": np.float32("nan"), "int64": -1, "string": ""}[self.dtype]

    @property
    def numpy_dtype(self):
        return {"float32": np.float32, "int64": np.int64, "string": object}[self.dtype]


def _element_dtype(feature: Feature) -> str:
    return feature.dtype.removeprefix("array<").removesuffix(">")


def model_input(feature: Feature, spec: FeatureSpec) -> ModelInput:
    element = _element_dtype(feature)
    if feature.transform in NUMERIC_TRANSFORMS:
        if element not in ("int", "long", "double"):
            raise ValueError(f"feature {feature.name}: transform {feature.transform} needs a numeric dtype")
        dtype = "float32"
    elif element in ("int", "long"):
        dtype = "int64"
    elif element == "string":
        dtype = "string"
    else:
        raise ValueError(f"feature {feature.name} ({feature.dtype}, transform {feature.transform}) has no model input")
    length = None
    if feature.dtype.startswith("array<"):
        if feature.kind == "last_items":
            length = spec.last_n_items
        elif feature.kind == "top_categories":
            length = spec.top_categories
        else:
            raise ValueError(f"list feature {feature.name} has no fixed length in the spec")
    return ModelInput(feature.name, dtype, length)


def model_inputs(spec: FeatureSpec) -> list[ModelInput]:
    """Every model feature's input, in spec order."""
    return [model_input(f, spec) for f in spec.model_features()]


def _scalar_array(column: pa.Array, spec: ModelInput) -> np.ndarray:
    if spec.dtype == "string":
        return np.asarray(pc.fill_null(column.cast(pa.string()), "").to_numpy(zero_copy_only=False), dtype=object)
    target = pa.float32() if spec.dtype == "float32" else pa.int64()
    return pc.fill_null(column.cast(target), spec.missing).to_numpy(zero_copy_only=False).astype(spec.numpy_dtype)


def _list_array(column: pa.Array, spec: ModelInput) -> np.ndarray:
    """list<...> -> [rows, length], truncated to the first `length` values and padded with the missing value."""
    assert spec.length is not None, spec  # a list input (arrow_to_arrays)
    rows = len(column)
    out = np.full((rows, spec.length), spec.missing, dtype=spec.numpy_dtype)
    column = pc.fill_null(column, pa.scalar([], column.type)) if column.null_count else column
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    values = _scalar_array(pc.list_flatten(column), ModelInput(spec.name, spec.dtype))
    positions = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    row_of_value = np.repeat(np.arange(rows), lengths)
    keep = positions < spec.length
    out[row_of_value[keep], positions[keep]] = values[keep]
    return out


def arrow_to_arrays(batch: pa.RecordBatch | pa.Table, inputs: list[ModelInput]) -> dict[str, np.ndarray]:
    """Samples rows -> {input name: numpy array} with nulls filled and lists padded (see module doc)."""
    arrays = {}
    for spec in inputs:
        column = batch.column(spec.name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        arrays[spec.name] = _scalar_array(column, spec) if spec.length is None else _list_array(column, spec)
    return arrays


def split_files(parquet_root: str | Path, split: str) -> list[Path]:
    """The Parquet shards of one split of the samples (`<samples artifact>/parquet/split=<split>/`)."""
    directory = Path(parquet_root) / f"split={split}"
    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise PipelineInputError(f"no Parquet shards for split '{split}' at {directory}: run recpipe samples first")
    return files


def read_shards(files: list[Path], columns: list[str]) -> pa.Table:
    """`columns` of the given shards, in file order, as one Arrow table (for splits that fit in memory)."""
    return pa.concat_tables([pq.read_table(path, columns=columns) for path in files])
