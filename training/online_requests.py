"""The request builder: a TF Serving REST body (`instances`) for one user and candidate items, from the
online store, with the values, defaults and missing-entity indicators the samples have.

    store = OnlineStore(RedisLocation(host, port, namespace=...))
    built = build_request(store, user_id=42, item_ids=[7, 9], context={"device": "mobile", "page": "home"})
    built.body        # {"signature_name": "serving_default", "instances": [{feature: value, ...}, ...]}
    built.arrays      # {input name: numpy array}: the same values, as the SavedModel takes them
    built.indicators  # user_in_snapshot, item_in_snapshot, user_category_in_snapshot per row

Nothing here computes a default: published values and the defaults of unknown entities come from the
store (features.online_features, through the samples' with_default); the store keeps values day-free, and
features.day_free.materialize rebuilds days-since, smoothed CTRs and tail ranks with the snapshot's
expressions and the version's metadata. A row becomes model inputs through training.inputs.arrow_to_arrays,
the function the training data goes through. The context's hour and weekday are computed by
features.samples.context_value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from features.day_free import Rebuilder
from features.feature_spec import FeatureSpec, load_spec
from features.online_store import ITEM_JOIN_CATEGORY, OnlineStore, Published
from features.samples import INDICATORS, context_value
from training.inputs import ModelInput, arrow_to_arrays, model_inputs

SIGNATURE = "serving_default"
_ARROW = {"int": pa.int32(), "long": pa.int64(), "double": pa.float64(), "string": pa.string(), "date": pa.date32()}


def arrow_type(dtype: str) -> pa.DataType:
    if dtype.startswith("array<"):
        return pa.list_(arrow_type(dtype.removeprefix("array<").removesuffix(">")))
    return _ARROW[dtype]


@dataclass
class BuiltRequest:
    body: dict
    arrays: dict[str, np.ndarray]
    rows: list[dict]  # feature values as the samples row holds them (before the model-input encoding)
    indicators: list[dict[str, bool]]
    version: int
    date: str


def instances(arrays: dict[str, np.ndarray], inputs: list[ModelInput]) -> list[dict]:
    rows = len(next(iter(arrays.values()))) if arrays else 0
    columns = {i.name: arrays[i.name].tolist() for i in inputs}
    return [{name: values[r] for name, values in columns.items()} for r in range(rows)]


def rows_to_arrays(
    rows: list[dict], spec: FeatureSpec, inputs: list[ModelInput] | None = None
) -> dict[str, np.ndarray]:
    inputs = inputs or model_inputs(spec)
    table = pa.table(
        {f.name: pa.array([row.get(f.name) for row in rows], type=arrow_type(f.dtype)) for f in spec.model_features()}
    )
    return arrow_to_arrays(table, inputs)


def build_rows(
    store: OnlineStore, requests: list[dict], version: int | None = None, spec: FeatureSpec | None = None
) -> tuple[Published, list[dict], list[dict]]:
    """requests: [{"user_id", "item_id", "context": {event column: value, "event_time": datetime}}] ->
    (the version read, feature rows, indicator rows). Two pipelined round trips: users and items (and
    the pointer), then the user x category pairs of the items' categories."""
    spec = spec or load_spec()
    users = list(dict.fromkeys(str(r["user_id"]) for r in requests))
    items = list(dict.fromkeys(str(r["item_id"]) for r in requests))
    published, values = store.lookup([("user", u) for u in users] + [("item", i) for i in items], version)

    rebuild = Rebuilder(spec, published.metadata)

    def rebuilt(entity: str, value: dict | None) -> dict | None:
        return rebuild(value, entity) if value is not None else None

    user_values = {u: rebuilt("user", v) for u, v in zip(users, values[: len(users)])}
    item_values = {i: rebuilt("item", v) for i, v in zip(items, values[len(users) :])}
    item_categories = {i: v.get(ITEM_JOIN_CATEGORY) if v is not None else None for i, v in item_values.items()}
    pairs = list(
        dict.fromkeys(
            f"{r['user_id']}:{item_categories[str(r['item_id'])]}"
            for r in requests
            if item_categories[str(r["item_id"])] is not None
        )
    )
    pair_values = (
        {
            p: rebuilt("user_category", v)
            for p, v in zip(pairs, store.lookup([("user_category", p) for p in pairs], published.version)[1])
        }
        if pairs
        else {}
    )
    defaults = published.defaults
    features = spec.model_features()
    rows, indicators = [], []
    for request in requests:
        item = item_values[str(request["item_id"])]
        category = item.get(ITEM_JOIN_CATEGORY) if item is not None else None
        pair = pair_values.get(f"{request['user_id']}:{category}") if category is not None else None
        found = {"user": user_values[str(request["user_id"])], "item": item, "user_category": pair}
        event = {"user_id": request["user_id"], "item_id": request["item_id"], **request.get("context", {})}
        row = {}
        for feature in features:
            if feature.entity == "context":
                raw = context_value(feature, event)
                row[feature.name] = (
                    _cast(raw, feature.dtype) if raw is not None else defaults["context"].get(feature.name)
                )
            else:
                stored = found[feature.entity]
                source = stored if stored is not None else defaults[feature.entity]
                row[feature.name] = source.get(feature.name)
        rows.append(row)
        indicators.append({INDICATORS[e]: found[e] is not None for e in INDICATORS})
    return published, rows, indicators


def _cast(value, dtype: str):
    """A context value given as text (a CLI flag) to the feature's dtype, as Spark's cast would."""
    if dtype in ("int", "long"):
        return int(value)
    if dtype == "double":
        return float(value)
    return str(value)


def build_request(
    store: OnlineStore,
    user_id: int,
    item_ids: list[int],
    context: dict | None = None,
    event_time: dt.datetime | None = None,
    version: int | None = None,
    spec: FeatureSpec | None = None,
) -> BuiltRequest:
    """One user and candidate items -> the TF Serving REST body of the published version (or `version`).
    context: event columns (device, page, position); event_time: the request time (default now, UTC)."""
    spec = spec or load_spec()
    moment = event_time or dt.datetime.now(dt.timezone.utc)
    requests = [
        {"user_id": user_id, "item_id": item, "context": {**(context or {}), "event_time": moment}} for item in item_ids
    ]
    published, rows, indicators = build_rows(store, requests, version, spec)
    inputs = model_inputs(spec)
    arrays = rows_to_arrays(rows, spec, inputs)
    body = {"signature_name": SIGNATURE, "instances": instances(arrays, inputs)}
    return BuiltRequest(body, arrays, rows, indicators, published.version, published.date)
