"""The feature spec (schemas/features.yaml) loaded and expanded into one entry per feature."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from features.errors import SpecError
from features.validation import Section, error_at, read_schema_file, validate

# What the code computes (features/snapshot.py feature_column, features/samples.py _context_column),
# how it transforms (features/transforms.py, training/feature_layers.py) and the model roles.
CONTEXT_KINDS = ("event_column", "event_hour", "event_weekday")
SNAPSHOT_KINDS = (
    "window_count",
    "smoothed_ctr",
    "rating_mean",
    "rating_std",
    "first_date",
    "last_date",
    "days_since_first",
    "days_since_last",
    "last_items",
    "top_categories",
    "top_category_shares",
    "popularity_rank",
    "attribute",
    "days_since_release",
)
Kind = Literal[
    "event_column",
    "event_hour",
    "event_weekday",
    "window_count",
    "smoothed_ctr",
    "rating_mean",
    "rating_std",
    "first_date",
    "last_date",
    "days_since_first",
    "days_since_last",
    "last_items",
    "top_categories",
    "top_category_shares",
    "popularity_rank",
    "attribute",
    "days_since_release",
]
Dtype = Literal[
    "int", "long", "double", "string", "date", "array<int>", "array<long>", "array<double>", "array<string>"
]
Transform = Literal["quantile_buckets", "normalize", "log1p", "vocabulary", "hashing"]
Role = Literal["wide", "deep", "fm", "gbdt"]


@dataclass(frozen=True)
class Feature:
    name: str
    entity: str
    kind: str
    dtype: str
    default: Any
    description: str
    roles: tuple[str, ...] = ()
    transform: str | None = None
    window: int | None = None
    counter: str | None = None
    source: str | None = None

    @property
    def column(self) -> str:
        """The event column (event_column) or dimension column (attribute) that the feature copies."""
        if self.source is None:
            raise SpecError(f"feature {self.name} ({self.kind}) names no source column")
        return self.source


@dataclass(frozen=True)
class Cross:
    """A wide-part feature cross: the categorical indices of `features`, hashed together into `num_bins`."""

    features: tuple[str, ...]
    num_bins: int
    description: str = ""

    @property
    def name(self) -> str:
        return "_x_".join(self.features)


@dataclass(frozen=True)
class FeatureSpec:
    windows_days: tuple[int, ...]
    counters: dict[str, str]
    interaction_events: tuple[str, ...]
    entities: dict[str, dict]
    features: tuple[Feature, ...]
    ctr_prior_strength: float
    ctr_prior_fallback: float
    last_n_items: int
    top_categories: int
    transforms: dict[str, dict]
    crosses: tuple[Cross, ...] = ()

    @property
    def snapshot_entities(self) -> list[str]:
        """Entities with a daily aggregate and a snapshot table (not the per-event context)."""
        return [name for name, details in self.entities.items() if "daily_table" in details]

    def model_features(self) -> list[Feature]:
        """Features that some model uses (non-empty roles), in spec order: what samples carry."""
        return [f for f in self.features if f.roles]

    @property
    def max_window(self) -> int:
        return max(self.windows_days + tuple(f.window for f in self.features if f.window))

    def for_entity(self, entity: str) -> list[Feature]:
        return [f for f in self.features if f.entity == entity]

    def columns(self, entity: str) -> list[str]:
        """Snapshot table columns of an entity: key, features in spec order, snapshot_date."""
        return [*self.entities[entity]["key"], *(f.name for f in self.for_entity(entity)), "snapshot_date"]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"feature {name} is not in schemas/features.yaml")


class FeatureEntry(Section):
    name: str = Field(min_length=1)
    entity: str
    kind: Kind
    dtype: Dtype
    default: Any = None  # a value, a list (array features), or `prior` (smoothed CTRs)
    description: str = ""
    roles: list[Role] = []
    transform: Transform | None = None
    window: int | None = Field(None, ge=1)  # else one feature per windows_days value ({window} in the name)
    counters: list[str] | None = None  # else one feature per counter ({counter} in the name)
    source: str | None = None  # event column (event_column) or dimension column (attribute)

    @model_validator(mode="after")
    def _consistent(self):
        if (self.entity == "context") != (self.kind in CONTEXT_KINDS):
            wanted = f"one of {', '.join(CONTEXT_KINDS)}" if self.entity == "context" else "a snapshot kind"
            raise error_at("kind", f"{self.kind} does not fit entity {self.entity} (use {wanted})")
        if self.default == "prior" and self.kind != "smoothed_ctr":
            raise error_at("default", "prior is the default of smoothed_ctr features only")
        return self


class EntityEntry(Section):
    key: list[str]
    table: str | None = None
    daily_table: str | None = None


class CrossEntry(Section):
    features: list[str] = Field(min_length=2)
    num_bins: int = Field(10000, ge=1)
    description: str = ""


class QuantileParameters(Section):
    num_buckets: int = Field(ge=2)


class VocabularyParameters(Section):
    min_count: int = Field(ge=1)
    max_size: int = Field(ge=1)


class HashingParameters(Section):
    num_bins: int = Field(ge=1)


class TransformParameters(Section):
    quantile_buckets: QuantileParameters | None = None
    vocabulary: VocabularyParameters | None = None
    hashing: HashingParameters | None = None


class SpecFile(Section):
    """schemas/features.yaml, as written (names with {window}/{counter} not expanded yet)."""

    version: Literal[1] = 1
    windows_days: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    ctr_prior_strength: float = Field(ge=0)
    ctr_prior_fallback: float = Field(ge=0, le=1)
    last_n_items: int = Field(ge=1)
    top_categories: int = Field(ge=1)
    counters: dict[str, str]
    interaction_events: list[str]
    transforms: TransformParameters = TransformParameters()
    crosses: list[CrossEntry] = []
    entities: dict[str, EntityEntry]
    features: list[FeatureEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self):
        for i, entry in enumerate(self.features):
            if entry.entity not in self.entities:
                raise error_at(
                    f"features.{i}.entity", f"unknown entity {entry.entity!r} (entities: {', '.join(self.entities)})"
                )
            unknown = [c for c in entry.counters or [] if c not in self.counters]
            if unknown:
                raise error_at(
                    f"features.{i}.counters", f"unknown counter {unknown[0]!r} (counters: {', '.join(self.counters)})"
                )
        return self


def _expand(entry: FeatureEntry, spec: SpecFile) -> list[Feature]:
    windows = [entry.window] if entry.window is not None else spec.windows_days
    counters = entry.counters if entry.counters is not None else list(spec.counters)
    name = entry.name
    window_values = windows if "{window}" in name else [entry.window]
    counter_values = counters if "{counter}" in name else [None]
    expanded = []
    for window, counter in itertools.product(window_values, counter_values):
        fill = {"window": window, "counter": counter}
        expanded.append(
            Feature(
                name=name.format(**fill),
                entity=entry.entity,
                kind=entry.kind,
                dtype=entry.dtype,
                default=entry.default,
                description=str(entry.description).format(**fill),
                roles=tuple(entry.roles),
                transform=entry.transform,
                window=window,
                counter=counter,
                source=entry.source,
            )
        )
    return expanded


def parse_spec(doc: dict, source: str = "schemas/features.yaml") -> FeatureSpec:
    """The spec from its YAML document; an unknown key, kind, dtype, transform or role, or a bad
    value, is a SpecError naming `source` (the file) and the key path, on one line."""
    spec = validate(SpecFile, doc, source)
    features = tuple(f for entry in spec.features for f in _expand(entry, spec))
    names = [f.name for f in features]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SpecError(f"{source}: features: {duplicated} named more than once")
    crosses = tuple(Cross(tuple(c.features), c.num_bins, c.description) for c in spec.crosses)
    model_features = {f.name: f for f in features if f.roles}
    for i, cross in enumerate(crosses):
        unusable = [n for n in cross.features if n not in model_features or not model_features[n].transform]
        if unusable:
            raise SpecError(
                f"{source}: crosses[{i}].features: cross {cross.name} needs model features with a "
                f"transform (not {unusable})"
            )
    return FeatureSpec(
        windows_days=tuple(spec.windows_days),
        counters=dict(spec.counters),
        interaction_events=tuple(spec.interaction_events),
        entities={name: e.model_dump(exclude_none=True) for name, e in spec.entities.items()},
        features=features,
        ctr_prior_strength=spec.ctr_prior_strength,
        ctr_prior_fallback=spec.ctr_prior_fallback,
        last_n_items=spec.last_n_items,
        top_categories=spec.top_categories,
        transforms=spec.transforms.model_dump(exclude_none=True),
        crosses=crosses,
    )


@functools.cache
def _load(path: str | None) -> FeatureSpec:
    return parse_spec(*read_schema_file("features.yaml", path))


def load_spec(path: str | Path | None = None) -> FeatureSpec:
    """schemas/features.yaml shipped with the package (or the spec file at `path`), validated."""
    return _load(str(path) if path is not None else None)
