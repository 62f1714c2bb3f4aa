"""The feature spec (schemas/features.yaml) loaded and expanded into one entry per feature."""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml


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


def _expand(entry: dict, spec: dict) -> list[Feature]:
    windows = [entry["window"]] if "window" in entry else spec["windows_days"]
    counters = entry.get("counters", list(spec["counters"]))
    name = entry["name"]
    window_values = windows if "{window}" in name else [entry.get("window")]
    counter_values = counters if "{counter}" in name else [None]
    expanded = []
    for window, counter in itertools.product(window_values, counter_values):
        fill = {"window": window, "counter": counter}
        expanded.append(Feature(
            name=name.format(**fill), entity=entry["entity"], kind=entry["kind"], dtype=entry["dtype"],
            default=entry.get("default"), description=str(entry.get("description", "")).format(**fill),
            roles=tuple(entry.get("roles", [])), transform=entry.get("transform"), window=window,
            counter=counter, source=entry.get("source"),
        ))
    return expanded


def parse_spec(doc: dict) -> FeatureSpec:
    features = tuple(f for entry in doc["features"] for f in _expand(entry, doc))
    names = [f.name for f in features]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"feature spec names {duplicated} more than once")
    unknown = sorted({f.entity for f in features} - set(doc["entities"]))
    if unknown:
        raise ValueError(f"feature spec uses undeclared entities {unknown}")
    crosses = tuple(Cross(tuple(c["features"]), int(c.get("num_bins", 10000)), str(c.get("description", "")))
                    for c in doc.get("crosses", []))
    model_features = {f.name: f for f in features if f.roles}
    for cross in crosses:
        unusable = [n for n in cross.features if n not in model_features or not model_features[n].transform]
        if len(cross.features) < 2 or unusable:
            raise ValueError(f"cross {cross.name} needs two or more model features with a transform (not {unusable})")
    return FeatureSpec(
        windows_days=tuple(doc["windows_days"]), counters=dict(doc["counters"]),
        interaction_events=tuple(doc["interaction_events"]), entities=dict(doc["entities"]),
        features=features, ctr_prior_strength=float(doc["ctr_prior_strength"]),
        ctr_prior_fallback=float(doc["ctr_prior_fallback"]), last_n_items=int(doc["last_n_items"]),
        top_categories=int(doc["top_categories"]), transforms=dict(doc.get("transforms", {})),
        crosses=crosses,
    )


@functools.cache
def load_spec() -> FeatureSpec:
    return parse_spec(yaml.safe_load(resources.files("schemas").joinpath("features.yaml").read_text()))
