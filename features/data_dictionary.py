"""docs/features.md, generated from schemas/features.yaml (`recpipe docs`; a test fails when it is stale)."""

from __future__ import annotations

from features.feature_spec import Feature, FeatureSpec

AS_OF = {
    "context": "the labeled event itself (computed by the samples job from the event row)",
    "snapshot": "snapshot D holds facts with event date <= D (UTC); a sample of day E reads snapshot E-1",
}


def _window(feature: Feature) -> str:
    if feature.window:
        return f"{feature.window} d"
    if feature.kind in ("first_date", "last_date", "days_since_first", "days_since_last", "last_items"):
        return "all history (state carried forward)"
    if feature.kind in ("attribute", "days_since_release"):
        return "latest dimension drop <= D"
    return "-"


def _default(feature: Feature) -> str:
    if feature.default is None:
        return "null"
    if feature.default == "prior":
        return "the all-entity prior CTR of the window"
    return f"`{feature.default!r}`" if isinstance(feature.default, str) else f"`{feature.default}`"


INACTIVE = {  # features.snapshot_as_of.INACTIVE_RULES in words
    "zero": "0",
    "null": "null",
    "empty": "`[]`",
    "carried": "kept from its latest row",
    "shifted": "latest row's + days since",
    "day": "that day's value (table `{entity}_snapshot_inactive`)",
}


def _inactive(feature: Feature) -> str:
    from features.day_free import INACTIVE_RULES

    return INACTIVE[INACTIVE_RULES[feature.kind]].format(entity=feature.entity)


def _table(spec: FeatureSpec, entity: str) -> str:
    details = spec.entities[entity]
    table = details.get("table", "samples")
    key = ", ".join(details["key"]) or "(the event)"
    as_of = AS_OF["context"] if entity == "context" else AS_OF["snapshot"]
    sparse = entity in ("user", "item")
    lines = [
        f"## {entity}",
        "",
        f"Table `{table}`, key {key}. As of: {as_of}.",
        "",
        "| feature | meaning | dtype | window | null / default | transform | models |"
        + (" inactive |" if sparse else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if sparse else ""),
    ]
    for f in spec.for_entity(entity):
        lines.append(
            f"| `{f.name}` | {f.description} | {f.dtype} | {_window(f)} | {_default(f)} | "
            f"{f.transform or '-'} | {', '.join(f.roles) or '-'} |" + (f" {_inactive(f)} |" if sparse else "")
        )
    return "\n".join(lines)


def render(spec: FeatureSpec) -> str:
    parts = [
        "# Feature data dictionary",
        "",
        "Generated from `schemas/features.yaml` by `recpipe docs`; do not edit by hand (a test compares).",
        "",
        "Time rule: snapshot D holds what was known at the end of day D (UTC): facts with event date <= D;",
        "a window of w days covers D-w+1 .. D. A labeled event of day E is joined with snapshot E-1, so no",
        "feature of a sample contains its own label or anything later. `null / default` is the value a",
        "sample gets when the entity has no row in the snapshot (or the value is undefined); the",
        "`<entity>_in_snapshot` columns of `samples` say which case it was. Models: wide, deep, fm (DeepFM",
        "fields), gbdt (XGBoost inputs); features without a model role are kept for analysts.",
        "",
        "Sparse storage: `user_snapshot` and `item_snapshot` store a row for (entity, D) only when the entity",
        "had activity inside its longest window ending D or its attributes changed on D. Every other known",
        "entity has the same full row as of D, resolved from its latest row and the day (`inactive` column:",
        "what each feature is then); `recpipe features --entity user --id U --date D` prints it and",
        "`features.snapshot_as_of.read_as_of` returns it for any (entity, day) pairs.",
    ]
    for entity in spec.entities:
        if spec.for_entity(entity):
            parts += ["", _table(spec, entity)]
    if spec.crosses:
        parts += [
            "",
            "## crosses (wide part of LR, GBDT+LR and Wide&Deep)",
            "",
            "| cross | features | hash bins | meaning |",
            "|---|---|---|---|",
        ]
        parts += [f"| `{c.name}` | {' x '.join(c.features)} | {c.num_bins} | {c.description} |" for c in spec.crosses]
    return "\n".join(parts) + "\n"
