"""Day-free online values: what the online store keeps per entity so that an entity whose facts did not
change keeps the same stored value from one published day to the next (incremental publish).

Three kinds of model feature move with the day alone, and every entity has them:

  * days-since features (days_since_first/last/release) grow by one a day: stored as an anchor,
    value - epoch day of D, and rebuilt as anchor + epoch day of the published date;
  * smoothed CTRs move with the day's prior: stored as the window's [clicks, impressions], rebuilt as
    (clicks + s * prior) / (impressions + s), the snapshot's expression in the same operation order
    (IEEE doubles in the JVM and in Python: the same bits), with the version's priors;
  * a popularity rank without engagements in its window is 1 + the number of items with engagements:
    stored as a flag, rebuilt from the version's tail rank.

The version's date, priors, tail ranks and prior strength are in its metadata (features.online_store),
written by jobs/publish_features from the snapshot of D. Everything else is stored as the samples carry
it. This module imports no Spark: the request builder uses it.
"""

from __future__ import annotations

import datetime as dt

from features.feature_spec import Feature, FeatureSpec, SpecError

VALUE_FORMAT = 2  # 1: values as the samples carry them (no day part)
DAY_KEY = "_day"  # {"since": {feature: anchor}, "ctr": {feature: [clicks, impressions]}, "tail": {feature: true}}
EPOCH = dt.date(1970, 1, 1)

# How each feature kind of an entity without activity in its windows follows from the day
# (features.snapshot_as_of resolves sparse snapshots with these rules).
INACTIVE_RULES = {
    "window_count": "zero",
    "rating_mean": "null",
    "rating_std": "null",
    "top_categories": "empty",
    "top_category_shares": "empty",
    "first_date": "carried",
    "last_date": "carried",
    "last_items": "carried",
    "attribute": "carried",
    "days_since_first": "shifted",
    "days_since_last": "shifted",
    "days_since_release": "shifted",
    "smoothed_ctr": "day",
    "popularity_rank": "day",
}


def epoch_day(day: dt.date) -> int:
    return (day - EPOCH).days


def day_part(feature: Feature) -> str | None:
    """Where a feature's value goes under DAY_KEY: "since" (an anchor), "ctr" ([clicks, impressions]),
    "tail" (a popularity rank's flag), or None (stored as the samples carry it). The one classification
    the publish (features.online_features) and the Rebuilder share."""
    if INACTIVE_RULES.get(feature.kind) == "shifted":
        return "since"
    return {"smoothed_ctr": "ctr", "popularity_rank": "tail"}.get(feature.kind)


def ctr_counts(spec: FeatureSpec, feature: Feature) -> tuple[str, str]:
    """The entity's window_count features holding the clicks and impressions a smoothed CTR is made of."""
    names = {
        f.counter: f.name
        for f in spec.for_entity(feature.entity)
        if f.kind == "window_count" and f.window == feature.window and f.counter in ("clicks", "impressions")
    }
    if len(names) != 2:
        raise SpecError(
            f"feature {feature.name}: the online store needs {feature.entity} clicks and impressions counts "
            f"over {feature.window} days (window_count features) to rebuild the smoothed CTR"
        )
    return names["clicks"], names["impressions"]


class Rebuilder:
    """materialize for one version: the day-dependent features of each entity type listed once, so a
    request's hundred values cost a dictionary pass each."""

    def __init__(self, spec: FeatureSpec, metadata: dict):
        self.metadata = metadata
        self.plans: dict[str, tuple[list[str], list[tuple[str, str]], list[str]]] = {}
        for feature in spec.model_features():
            since, ctr, ranks = self.plans.setdefault(feature.entity, ([], [], []))
            part = day_part(feature)
            if part == "since":
                since.append(feature.name)
            elif part == "ctr":
                ctr.append((feature.name, str(feature.window)))
            elif part == "tail":
                ranks.append(feature.name)
        self.epoch = epoch_day(dt.date.fromisoformat(metadata["date"]))

    def __call__(self, value: dict, entity: str) -> dict:
        """A stored value -> the values the samples of the day after the version's date carry."""
        day = value.get(DAY_KEY)
        if day is None:  # format 1, or an entity type with no day-dependent feature
            return value
        metadata, (since_names, ctr_features, rank_names) = self.metadata, self.plans.get(entity, ([], [], []))
        out = {k: v for k, v in value.items() if k != DAY_KEY}
        since, ctr, tail = day.get("since", {}), day.get("ctr", {}), day.get("tail", {})
        defaults = metadata["defaults"][entity]
        for name in since_names:
            anchor = since.get(name)
            out[name] = anchor + self.epoch if anchor is not None else defaults.get(name)
        if ctr:
            strength, priors = metadata["ctr_prior_strength"], metadata["priors"][entity]
            for name, window in ctr_features:
                if name in ctr:
                    clicks, impressions = ctr[name]
                    out[name] = (clicks + strength * priors[window]) / (impressions + strength)
        for name in rank_names:
            if tail.get(name):
                out[name] = metadata["tails"][entity][name]
        return out


def materialize(value: dict, entity: str, spec: FeatureSpec, metadata: dict) -> dict:
    """A stored value -> the values the samples of the day after the version's date carry (one value;
    Rebuilder for many of one version)."""
    return Rebuilder(spec, metadata)(value, entity)
