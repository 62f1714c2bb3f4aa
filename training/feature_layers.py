"""Preprocessing inside the model, built from the feature spec and the fitted-transforms artifact.

`FeatureEncoders` owns the raw Keras inputs (named as in the spec, see training.inputs) and gives the
model builders three views of a feature, each built once and shared by every part that uses it:

    categorical(name)  integer index in [0, cardinality) (+ a mask for list features):
                       vocabulary → StringLookup / IntegerLookup (index 0 = out of vocabulary),
                       hashing → Hashing, quantile_buckets → Discretization (+1 bucket for missing)
    numeric(name)      normalize / log1p → Normalization of x or log1p(max(x, 0)), clipped to ±5 standard
                       deviations (a rare count can be 30 sd out and would dominate FM products),
                       missing → 0, plus a missing indicator: float32 [batch, 2]
    bucketized(name)   normalize / log1p features as a categorical too: the raw value's train quantile
                       bucket (Discretization on the fitted `boundaries`, +1 bucket for missing), the
                       wide part's non-linear view of a numeric (`numeric_buckets`)
    cross(cross)       HashedCrossing over the categorical indices of a spec cross (list features
                       cross element by element and keep their mask)
    gbdt_matrix(...)   the XGBoost input matrix (float32, NaN = missing, strings as vocabulary codes)

Split mode (`FeatureEncoders(spec, transforms, split=True)`, used for training): every view a model asks
for is built twice, once from the raw inputs (the preprocessing) and once as a `keras.Input` of the same
shape and dtype (what the model core sees). The model builders build the core on `graph_inputs` (the
encoded inputs in split mode, the raw inputs otherwise) and `preprocessing_model()` maps raw features
to the encoded ones, so tf.data can encode batches in parallel with the training steps and the traced
train step holds no lookups. `training.models.build_split` wraps the two back into one raw-feature model.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from features.errors import PipelineInputError
from features.feature_spec import Cross, FeatureSpec
from training.inputs import ModelInput, model_inputs

NUMERIC_CLIP = 5.0  # standard deviations
_NO_OOV_TOKEN = int(np.iinfo(np.int64).min)  # IntegerLookup reserves its oov_token (-1 by default): -1 is a real value


def _discretize(raw: keras.KerasTensor, boundaries: list, name: str) -> tuple[keras.KerasTensor, int]:
    """Bucket index of a float input: len(boundaries) + 1 buckets of values, then one for NaN."""
    edges = [float(b) for b in boundaries]
    if not edges:  # no value in train: one bucket of values, one of missing
        return ops.cast(ops.isnan(raw), "int32"), 2
    buckets = keras.layers.Discretization(bin_boundaries=edges, name=name)(raw)
    return ops.cast(ops.where(ops.isnan(raw), len(edges) + 1, ops.cast(buckets, "int32")), "int32"), len(edges) + 2


@dataclass
class Categorical:
    index: keras.KerasTensor  # int [batch] or [batch, length]
    cardinality: int
    mask: keras.KerasTensor | None = None  # bool [batch, length] for list features


class FeatureEncoders:
    def __init__(self, spec: FeatureSpec, transforms: dict, split: bool = False):
        self.spec = spec
        self.split = split
        self.encoded_inputs: dict[str, keras.KerasTensor] = {}  # split mode: the core's inputs, by key
        self.encoded_outputs: dict[str, keras.KerasTensor] = {}  # split mode: the same, from the raw inputs
        self.transforms = transforms
        self.model_inputs: dict[str, ModelInput] = {i.name: i for i in model_inputs(spec)}
        missing = sorted(
            n for n, f in ((f.name, f) for f in spec.model_features()) if f.transform and n not in transforms
        )
        if missing:
            raise ValueError(f"the transforms artifact has no fitted parameters for {missing}: rebuild the samples")
        self.inputs = {
            name: keras.Input(shape=i.shape, dtype=i.dtype, name=name) for name, i in self.model_inputs.items()
        }
        self._categorical: dict[str, Categorical] = {}  # as the model sees them (encoded inputs in split mode)
        self._raw_categorical: dict[str, Categorical] = {}  # computed from the raw inputs
        self._numeric: dict[str, keras.KerasTensor] = {}

    @property
    def graph_inputs(self) -> dict[str, keras.KerasTensor]:
        """The inputs of the model the builders make: encoded views in split mode, else the raw features."""
        return self.encoded_inputs if self.split else self.inputs

    def encoded(self, key: str, tensor: keras.KerasTensor) -> keras.KerasTensor:
        """Split mode: record `tensor` (computed from the raw inputs) as a preprocessing output and return
        a `keras.Input` standing for it in the core; otherwise return `tensor` itself."""
        if not self.split:
            return tensor
        if key not in self.encoded_inputs:
            self.encoded_outputs[key] = tensor
            self.encoded_inputs[key] = keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=key)
        return self.encoded_inputs[key]

    def preprocessing_model(self) -> keras.Model:
        """Raw named features -> {key: encoded view} for every view the built model uses (split mode)."""
        if not self.split:
            raise ValueError("preprocessing_model() needs FeatureEncoders(..., split=True)")
        return keras.Model(self.inputs, dict(self.encoded_outputs), name="preprocessing")

    def names(self, role: str) -> list[str]:
        return [f.name for f in self.spec.model_features() if role in f.roles]

    def is_categorical(self, name: str) -> bool:
        return self.transforms[name]["transform"] in ("vocabulary", "hashing", "quantile_buckets")

    def categorical(self, name: str) -> Categorical:
        if name not in self._categorical:
            self._categorical[name] = self._encoded_categorical(f"{name}__index", self._raw(name))
        return self._categorical[name]

    def _raw(self, name: str) -> Categorical:
        if name not in self._raw_categorical:
            self._raw_categorical[name] = self._build_categorical(name)
        return self._raw_categorical[name]

    def _encoded_categorical(self, key: str, raw: Categorical) -> Categorical:
        mask = None if raw.mask is None else self.encoded(f"{key}_mask", raw.mask)
        return Categorical(self.encoded(key, raw.index), raw.cardinality, mask)

    def _build_categorical(self, name: str) -> Categorical:
        raw, fitted, spec_input = self.inputs[name], self.transforms[name], self.model_inputs[name]
        kind = fitted["transform"]
        if kind == "vocabulary":
            if spec_input.dtype == "string":
                values: list[str] | list[int] = [str(v) for v in fitted["values"]]
                layer = keras.layers.StringLookup(
                    vocabulary=values or ["<none>"], num_oov_indices=1, name=f"{name}_lookup"
                )
            else:
                values = [int(v) for v in fitted["values"]]
                layer = keras.layers.IntegerLookup(
                    vocabulary=np.array(values or [_NO_OOV_TOKEN + 1], np.int64),
                    num_oov_indices=1,
                    oov_token=_NO_OOV_TOKEN,
                    name=f"{name}_lookup",
                )
            index, cardinality = layer(raw), len(values) + 1
        elif kind == "hashing":
            cardinality = int(fitted["num_bins"])
            index = keras.layers.Hashing(num_bins=cardinality, name=f"{name}_hash")(raw)
        elif kind == "quantile_buckets":
            index, cardinality = _discretize(raw, fitted["boundaries"], f"{name}_buckets")
        else:
            raise ValueError(f"feature {name} ({kind}) has no categorical view")
        mask = None
        if spec_input.length is not None:
            mask = ops.not_equal(raw, spec_input.missing)
        return Categorical(ops.cast(index, "int32"), cardinality, mask)

    def bucketized(self, name: str) -> Categorical:
        """A normalize / log1p feature's train-quantile bucket (the last bucket = missing)."""
        key = f"{name}__bucket"
        if key not in self._categorical:
            fitted = self.transforms[name]
            if fitted["transform"] not in ("normalize", "log1p"):
                raise ValueError(f"feature {name} ({fitted['transform']}) has no bucketized view")
            if "boundaries" not in fitted:
                raise PipelineInputError(
                    f"the transforms artifact has no bucket boundaries for {name} (samples built before "
                    "numeric_buckets existed): rebuild the samples"
                )
            index, cardinality = _discretize(self.inputs[name], fitted["boundaries"], f"{name}_wide_buckets")
            self._categorical[key] = self._encoded_categorical(f"{key}__index", Categorical(index, cardinality))
        return self._categorical[key]

    def numeric(self, name: str) -> keras.KerasTensor:
        """float32 [batch, 2]: the normalized value (0 when missing) and a missing indicator."""
        if name not in self._numeric:
            fitted, raw = self.transforms[name], self.inputs[name]
            value = ops.log1p(ops.maximum(raw, 0.0)) if fitted["transform"] == "log1p" else raw
            std = float(fitted["std"]) or 1.0
            scaled = keras.layers.Normalization(mean=float(fitted["mean"]), variance=std * std, name=f"{name}_norm")(
                ops.expand_dims(value, -1)
            )
            scaled = ops.clip(scaled, -NUMERIC_CLIP, NUMERIC_CLIP)
            missing = ops.expand_dims(ops.isnan(raw), -1)
            self._numeric[name] = self.encoded(
                f"{name}__numeric",
                ops.concatenate([ops.where(missing, 0.0, scaled), ops.cast(missing, "float32")], axis=-1),
            )
        return self._numeric[name]

    def cross(self, cross: Cross) -> Categorical:
        return self._encoded_categorical(f"cross_{cross.name}__index", self._build_cross(cross))

    def _build_cross(self, cross: Cross) -> Categorical:
        parts = [self._raw(n) for n in cross.features]
        length = max((self.model_inputs[n].length or 0) for n in cross.features)
        if not length:
            index = keras.layers.HashedCrossing(cross.num_bins, name=f"cross_{cross.name}")(
                tuple(ops.cast(p.index, "int64") for p in parts)
            )
            return Categorical(ops.cast(index, "int32"), cross.num_bins)
        # list x scalar: repeat scalars along the list, cross element by element, keep the list's mask
        flat = [
            ops.reshape(
                ops.cast(
                    p.index if p.mask is not None else ops.repeat(ops.expand_dims(p.index, -1), length, -1), "int64"
                ),
                (-1,),
            )
            for p in parts
        ]
        index = keras.layers.HashedCrossing(cross.num_bins, name=f"cross_{cross.name}")(tuple(flat))
        masks = [p.mask for p in parts if p.mask is not None]
        mask = masks[0] if len(masks) == 1 else ops.all(ops.stack(masks, -1), axis=-1)
        return Categorical(ops.reshape(ops.cast(index, "int32"), (-1, length)), cross.num_bins, mask)

    def gbdt_matrix(self, gbdt_inputs: list[dict]) -> keras.KerasTensor:
        """The GBDT's dense input, column for column as features/gbdt.py feeds XGBoost (features.json)."""
        columns = []
        for column in gbdt_inputs:
            raw = self.inputs[column["name"]]
            if column.get("vocabulary") is None:
                columns.append(ops.cast(raw, "float32"))
                continue
            vocabulary = [str(v) for v in column["vocabulary"]]
            index = keras.layers.StringLookup(
                vocabulary=vocabulary, num_oov_indices=1, name=f"{column['name']}_gbdt_code"
            )(raw)
            columns.append(ops.cast(ops.where(ops.equal(index, 0), len(vocabulary), index - 1), "float32"))
        return ops.stack(columns, axis=-1)
