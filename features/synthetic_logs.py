"""Synthetic daily drops of events, users and items drawn from a known click model.

Each impression gets a true click probability
    p = sigmoid(bias + user bias + affinity(user taste, item genres) + item quality + position + device + page)
and clicks are sampled from it, so `oracle_auc` (AUC of p against the sampled clicks) bounds what a
ranking model can reach. Clicks follow their impression after an exponential delay (some land after
midnight, in the next day's drop) and a `late_fraction` of events arrive one drop late. Everything is
drawn from numpy.random.default_rng([seed, day_index, stream]): the same seed gives identical files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from features.raw_drops import iso_utc, write_drop

CATEGORIES = (
    "Action",
    "Comedy",
    "Drama",
    "Thriller",
    "Romance",
    "Sci-Fi",
    "Documentary",
    "Animation",
    "Horror",
    "Family",
    "Music",
    "Sports",
)
EVENT_TYPES = ("impression", "click", "rating", "like", "purchase")
IMPRESSION, CLICK, RATING, LIKE, PURCHASE = range(len(EVENT_TYPES))
DEVICES = ("mobile", "desktop", "tablet", "tv")
PAGES = ("home", "search", "detail", "category", "history")
GENDERS = ("M", "F", "X")
OCCUPATIONS = ("student", "engineer", "teacher", "artist", "doctor", "sales", "retired", "other")
TITLE_WORDS = (
    ("The Silent", "Lost", "Golden", "Dark", "Last", "Hidden", "Broken", "Wild", "Electric", "Little"),
    ("River", "Empire", "Garden", "Signal", "Journey", "Summer", "Machine", "Kingdom", "Letter", "Storm"),
)

MS_PER_DAY = 86_400_000
EPOCH = dt.date(1970, 1, 1)
STREAM_USERS, STREAM_ITEMS, STREAM_EVENTS, STREAM_USER_CHANGES, STREAM_ITEM_CHANGES = range(5)

# Traffic.
WEEKEND_BOOST = 1.3
HOUR_WEIGHTS = np.array([3, 2, 1, 1, 1, 1, 2, 3, 4, 4, 4, 5, 5, 5, 5, 5, 6, 7, 8, 9, 10, 10, 9, 6], float)
MAX_LIST_LENGTH = 10
SLOT_MS = 200  # impressions of one list are logged this far apart
DEVICE_MIX = np.array([0.55, 0.30, 0.10, 0.05])
PAGE_MIX = np.array([0.45, 0.15, 0.15, 0.20, 0.05])
PERSONALIZED_SHARE = 0.5  # share of shown items picked from the user's taste rather than popularity

# Click model (logit terms).
CLICK_BIAS = -4.0
USER_BIAS_SD = 0.4
AFFINITY_WEIGHT = 0.9
QUALITY_WEIGHT = 0.35
EXTRA_GENRE_WEIGHT = 0.3
POSITION_EFFECT = -0.45 * np.log1p(np.arange(MAX_LIST_LENGTH))
DEVICE_EFFECT = np.array([0.0, 0.15, 0.05, -0.4])
PAGE_EFFECT = np.array([0.0, 0.3, 0.2, 0.1, -0.1])

# After a click.
FAST_CLICK_SHARE, FAST_CLICK_MEAN_MS, SLOW_CLICK_MEAN_MS = 0.85, 60_000, 1_800_000
MAX_CLICK_DELAY_MS = 6 * 3_600_000
RATING_RATE, LIKE_RATE, PURCHASE_RATE = 0.12, 0.05, 0.015

# Dimension changes per day.
USER_CHANGE_RATE, ITEM_CHANGE_RATE = 0.005, 0.01


def generate_logs(
    out,
    *,
    start_date: dt.date,
    days: int,
    users: int,
    items: int,
    seed: int,
    impressions_per_user_day: float = 4.0,
    late_fraction: float = 0.005,
    unseen_items: int = 0,
    ctr_drift: float = 0.0,
) -> dict:
    """Write `days` daily drops of events, users and items under `out`; return (and save) a summary.

    `impressions_per_user_day` is the mean before repeats within a shown list are dropped (~5% fewer).
    Events that would land after the last drop (late, or clicks after the last midnight) are not written.
    `unseen_items` more items (ids after the others) are in the first items drop and never shown or
    changed: a long-tail catalogue; the rest of the logs is identical with or without them.
    `ctr_drift` shifts every impression's click logit by `ctr_drift * day_index / (days - 1)`: 0 on the first
    day, `ctr_drift` on the last (negative: the click rate falls over time), so a time split's train, valid
    and test rows have different positive rates; 0 leaves the logs as they were.
    """
    if days < 1 or users < 1 or items < 1:
        raise ValueError("days, users and items must be positive")
    if not (math.isfinite(impressions_per_user_day) and impressions_per_user_day > 0):
        raise ValueError(f"impressions_per_user_day must be a positive number, not {impressions_per_user_day}")
    if not (math.isfinite(late_fraction) and 0 <= late_fraction <= 1):
        raise ValueError(f"late_fraction must be between 0 and 1, not {late_fraction}")
    if not (math.isfinite(ctr_drift) and abs(ctr_drift) <= 5):
        raise ValueError(f"ctr_drift must be a logit shift between -5 and 5, not {ctr_drift}")
    start_ms = (start_date - EPOCH).days * MS_PER_DAY
    user_table, taste = _make_users(np.random.default_rng([seed, 0, STREAM_USERS]), users)
    item_table, catalog = _make_items(np.random.default_rng([seed, 0, STREAM_ITEMS]), items, start_date, days)

    pending: dict[int, list[dict]] = {}
    score_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    written = dict.fromkeys(EVENT_TYPES, 0)
    late_events = clicks_after_midnight = 0
    for day_index in range(days):
        day = start_date + dt.timedelta(days=day_index)
        day_start_ms = start_ms + day_index * MS_PER_DAY
        if day_index == 0:
            users_drop, items_drop = (
                user_table,
                pd.concat([item_table, _unseen_items(items, unseen_items)], ignore_index=True),
            )
        else:  # changes apply from this day on, so today's purchases see today's price
            users_drop = _change_users(np.random.default_rng([seed, day_index, STREAM_USER_CHANGES]), user_table)
            items_drop = _change_prices(np.random.default_rng([seed, day_index, STREAM_ITEM_CHANGES]), item_table)

        rng = np.random.default_rng([seed, day_index, STREAM_EVENTS])
        events, p, clicked = _simulate_day(
            rng,
            day_index,
            day_start_ms,
            day.weekday(),
            taste,
            catalog,
            item_table["price"].to_numpy(),
            impressions_per_user_day,
            ctr_drift * day_index / max(days - 1, 1),
        )
        score_parts.append(p)
        label_parts.append(clicked)
        is_late = rng.random(len(events["type"])) < late_fraction
        target = (events["time_ms"] - start_ms) // MS_PER_DAY + is_late  # event day, or the next if late
        for drop_index in range(day_index, day_index + 3):  # events are at most ~7 h past their day, +1 if late
            pending.setdefault(drop_index, []).append(_take(events, target == drop_index))

        drop = _concat(pending.pop(day_index))
        late_events += int((drop["time_ms"] < day_start_ms).sum())
        clicks_after_midnight += int(
            ((drop["type"] == CLICK) & (drop["time_ms"] >= day_start_ms) & (drop["gen_day"] < day_index)).sum()
        )
        for code, name in enumerate(EVENT_TYPES):
            written[name] += int((drop["type"] == code).sum())
        write_drop(out, "events", day, _events_frame(drop, seed))
        write_drop(out, "users", day, users_drop)
        write_drop(out, "items", day, items_drop)

    scores, labels = np.concatenate(score_parts), np.concatenate(label_parts)
    oracle_auc = roc_auc(scores, labels)
    summary = {
        "seed": seed,
        "days": days,
        "first_date": start_date.isoformat(),
        "last_date": (start_date + dt.timedelta(days=days - 1)).isoformat(),
        "users": users,
        "items": items,
        "unseen_items": unseen_items,
        "events": written,
        "events_total": sum(written.values()),
        "late_events": late_events,
        "clicks_after_midnight": clicks_after_midnight,
        "undelivered_events": sum(len(part["type"]) for parts in pending.values() for part in parts),
        "ctr": round(float(labels.mean()), 6) if len(labels) else None,
        "oracle_auc": None if np.isnan(oracle_auc) else round(oracle_auc, 6),  # None: no clicks or no misses
        "impressions_per_user_day": impressions_per_user_day,
        "late_fraction": late_fraction,
        "ctr_drift": ctr_drift,
        "daily_ctr": [round(float(labels.mean()), 6) if len(labels) else None for labels in label_parts],
    }
    Path(out, "_generator_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (scikit-learn's; ties count half), NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def _make_users(rng, n_users):
    """Profiles (written) and latent taste (not written): category preferences, activity, bias, device."""
    gender = rng.choice(len(GENDERS), n_users, p=[0.48, 0.48, 0.04])
    age = np.clip(rng.gamma(4.0, 5.0, n_users) + 14, 13, 90).astype(int)
    age_band = np.digitize(age, [25, 40, 55])
    group_taste = rng.dirichlet(np.full(len(CATEGORIES), 0.5), size=len(GENDERS) * 4)
    alpha = 0.15 + 2.0 * group_taste[gender * 4 + age_band]
    preference = rng.gamma(alpha)
    preference /= preference.sum(axis=1, keepdims=True) + 1e-300
    activity = rng.lognormal(0.0, 0.8, n_users)
    taste = {
        "preference": np.hstack([preference, np.zeros((n_users, 1))]),  # last column: "no genre"
        "activity": activity / activity.mean(),
        "bias": rng.normal(0.0, USER_BIAS_SD, n_users),
        "device": rng.choice(len(DEVICES), n_users, p=DEVICE_MIX),
    }
    table = pd.DataFrame(
        {
            "user_id": np.arange(n_users, dtype=np.int64),
            "age": age,
            "gender": np.array(GENDERS)[gender],
            "occupation": rng.choice(OCCUPATIONS, n_users),
            "zip_code": _zip_codes(rng.integers(0, 100_000, n_users)),
        }
    )
    return table, taste


def _make_items(rng, n_items, start_date, days):
    """Catalogue (written) and latent item facts (popularity, quality, genres, release day)."""
    popularity = (rng.permutation(n_items) + 1.0) ** -1.1
    category = rng.choice(len(CATEGORIES), n_items, p=rng.dirichlet(np.full(len(CATEGORIES), 3.0)))
    other = rng.random((n_items, len(CATEGORIES)))
    other[np.arange(n_items), category] = -1.0
    n_extra = rng.choice(3, n_items, p=[0.45, 0.35, 0.20])
    extra = np.where(np.arange(2) < n_extra[:, None], np.argsort(-other, axis=1)[:, :2], len(CATEGORIES))
    log_pop = np.log(popularity)
    quality = 0.5 * (log_pop - log_pop.mean()) / (log_pop.std() or 1.0) + np.sqrt(0.75) * rng.normal(size=n_items)
    release_day = np.where(rng.random(n_items) < 0.85, -rng.integers(1, 3650, n_items), rng.integers(0, days, n_items))
    release_day[np.argmax(popularity)] = -1  # something is always on offer

    names = np.array(CATEGORIES + ("",), dtype=object)
    genres = pd.Series(names[category])
    for k in range(2):
        has = extra[:, k] < len(CATEGORIES)
        genres[has] = genres[has] + "|" + names[extra[has, k]]
    titles = (
        pd.Series(rng.choice(TITLE_WORDS[0], n_items))
        + " "
        + rng.choice(TITLE_WORDS[1], n_items)
        + " "
        + pd.Series(np.arange(n_items)).astype(str)
    )
    release = np.datetime64(start_date) + release_day.astype("timedelta64[D]")
    table = pd.DataFrame(
        {
            "item_id": np.arange(n_items, dtype=np.int64),
            "title": titles,
            "category": names[category],
            "genres": genres,
            "release_date": np.datetime_as_string(release, unit="D"),
            "price": np.maximum(0.99, rng.lognormal(np.log(12.0), 0.6, n_items)).round(2),
        }
    )
    catalog = {
        "popularity": popularity,
        "quality": quality,
        "category": category,
        "extra": extra,
        "release_day": release_day,
        "by_category": np.argsort(category, kind="stable"),
    }
    return table, catalog


def _unseen_items(first_id: int, count: int) -> pd.DataFrame:
    ids = np.arange(first_id, first_id + count, dtype=np.int64)
    category = np.array(CATEGORIES, dtype=object)[ids % len(CATEGORIES)]
    return pd.DataFrame(
        {
            "item_id": ids,
            "title": "Unseen " + pd.Series(ids).astype(str),
            "category": category,
            "genres": category,
            "release_date": "2020-01-01",
            "price": 9.99,
        }
    )


def _zip_codes(numbers):
    return pd.Series(numbers).astype(str).str.zfill(5).to_numpy()


def _simulate_day(rng, day_index, day_start_ms, weekday, taste, catalog, price, impressions_per_user_day, shift=0.0):
    """One day of traffic: event columns, plus true click probability and label of each impression."""
    n_users = len(taste["activity"])
    day_factor = (WEEKEND_BOOST if weekday >= 5 else 1.0) * 7 / (5 + 2 * WEEKEND_BOOST)
    mean_list_length = 1 + (MAX_LIST_LENGTH - 1) / 2
    n_requests = rng.poisson(taste["activity"] * impressions_per_user_day * day_factor / mean_list_length)
    request_user = np.repeat(np.arange(n_users), n_requests)
    n_req = len(request_user)
    hour = rng.choice(24, n_req, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    request_ms = np.minimum(hour * 3_600_000 + rng.integers(0, 3_600_000, n_req), MS_PER_DAY - 10_000)
    request_device = np.where(
        rng.random(n_req) < 0.8, taste["device"][request_user], rng.choice(len(DEVICES), n_req, p=DEVICE_MIX)
    )
    request_page = rng.choice(len(PAGES), n_req, p=PAGE_MIX)

    # Shown lists: half picked from the user's taste, half by popularity; repeats within a list removed.
    request = np.repeat(np.arange(n_req), 1 + rng.binomial(MAX_LIST_LENGTH - 1, 0.5, n_req))
    user = request_user[request]
    released = catalog["release_day"] <= day_index
    weight = catalog["popularity"] * released
    category_mass = np.bincount(catalog["category"], weights=weight, minlength=len(CATEGORIES))
    category_probs = np.where(
        rng.random(len(request))[:, None] < PERSONALIZED_SHARE,
        taste["preference"][user, :-1] * (category_mass > 0),
        category_mass,
    )
    item = _sample_in_category(rng, _sample_rows(rng, category_probs), weight, catalog)
    keep = np.sort(np.unique(request * len(weight) + item, return_index=True)[1])
    request, item, user = request[keep], item[keep], user[keep]
    position = np.arange(len(request)) - np.searchsorted(request, request)
    device, page = request_device[request], request_page[request]
    time_ms = day_start_ms + request_ms[request] + position * SLOT_MS

    preference = taste["preference"][user]
    rows = np.arange(len(user))
    affinity = preference[rows, catalog["category"][item]] + EXTRA_GENRE_WEIGHT * (
        preference[rows, catalog["extra"][item, 0]] + preference[rows, catalog["extra"][item, 1]]
    )
    affinity_score = np.log(len(CATEGORIES) * affinity + 0.25)
    logit = (
        CLICK_BIAS
        + taste["bias"][user]
        + AFFINITY_WEIGHT * affinity_score
        + QUALITY_WEIGHT * catalog["quality"][item]
        + POSITION_EFFECT[position]
        + DEVICE_EFFECT[device]
        + PAGE_EFFECT[page]
        + shift
    )
    p = 1.0 / (1.0 + np.exp(-logit))
    clicked = rng.random(len(p)) < p

    # Clicks and what follows them.
    c = np.flatnonzero(clicked)
    n_clicks = len(c)
    delay = np.where(
        rng.random(n_clicks) < FAST_CLICK_SHARE,
        rng.exponential(FAST_CLICK_MEAN_MS, n_clicks),
        rng.exponential(SLOW_CLICK_MEAN_MS, n_clicks),
    )
    click_ms = time_ms[c] + 1_000 + np.minimum(delay, MAX_CLICK_DELAY_MS).astype(np.int64)
    dwell = np.clip(rng.lognormal(3.6 + 0.4 * affinity_score[c], 0.9), 1.0, 3600.0).round(1)
    after_ms = click_ms + (dwell * 1000).astype(np.int64)
    rated = rng.random(n_clicks) < RATING_RATE
    rating = np.clip(
        np.rint(3.2 + 0.9 * affinity_score[c] + 0.4 * catalog["quality"][item[c]] + rng.normal(0.0, 0.9, n_clicks)),
        1,
        5,
    )
    liked = rng.random(n_clicks) < LIKE_RATE
    bought = rng.random(n_clicks) < PURCHASE_RATE
    follow_ms = after_ms + np.minimum(rng.exponential(30_000, n_clicks), 600_000).astype(np.int64)

    none_i, none_f = np.full(len(p), -1), np.full(len(p), np.nan)
    parts = [
        _columns(IMPRESSION, user, item, time_ms, device, page, position, none_f),
        _columns(CLICK, user[c], item[c], click_ms, device[c], page[c], position[c], dwell),
    ]
    for event_type, chosen, at_ms, value in (
        (RATING, rated, follow_ms, rating),
        (LIKE, liked, click_ms + (after_ms - click_ms) // 2, none_f[c]),
        (PURCHASE, bought, follow_ms, price[item[c]]),
    ):
        k = c[chosen]
        parts.append(
            _columns(
                event_type,
                user[k],
                item[k],
                at_ms[chosen],
                device[k],
                np.full(len(k), PAGES.index("detail")),
                none_i[k],
                value[chosen],
            )
        )
    events = _concat(parts)
    events["gen_day"] = np.full(len(events["type"]), day_index, dtype=np.int32)
    events["seq"] = np.arange(len(events["type"]), dtype=np.int64)
    return events, p, clicked


def _sample_rows(rng, probs):
    """One category per row of unnormalized probabilities."""
    cumulative = np.cumsum(probs, axis=1)
    draw = rng.random(len(probs))[:, None] * cumulative[:, -1:]
    return np.minimum((cumulative <= draw).sum(axis=1), probs.shape[1] - 1)


def _sample_in_category(rng, category, weight, catalog):
    """One item per row from its category, proportional to weight (weight 0: never)."""
    order = catalog["by_category"]
    sorted_category = catalog["category"][order]
    cumulative = np.cumsum(weight[order])
    offered = np.flatnonzero(weight[order] > 0)
    all_categories = np.arange(len(CATEGORIES))
    first = np.searchsorted(sorted_category, all_categories)
    before = np.where(first > 0, cumulative[first - 1], 0.0)
    last_offered = offered[np.searchsorted(sorted_category[offered], all_categories, side="right") - 1]
    low, high = before[category], cumulative[last_offered[category]]
    index = np.searchsorted(cumulative, low + rng.random(len(category)) * (high - low), side="right")
    return order[np.minimum(index, last_offered[category])]


def _columns(event_type, user, item, time_ms, device, page, position, value):
    return {
        "type": np.full(len(user), event_type, dtype=np.int8),
        "user": user,
        "item": item,
        "time_ms": np.asarray(time_ms, dtype=np.int64),
        "device": device,
        "page": page,
        "position": position,
        "value": np.asarray(value, dtype=float),
    }


def _concat(parts):
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _take(events, mask):
    return {name: values[mask] for name, values in events.items()}


def _events_frame(events, seed):
    """Rows of one events drop, ordered by event time; absent optional values become null."""
    order = np.lexsort((events["seq"], events["gen_day"], events["time_ms"]))
    e = _take(events, order)
    device_names = np.array(DEVICES + (None,), dtype=object)
    page_names = np.array(PAGES + (None,), dtype=object)
    event_id = f"e{seed}-" + pd.Series(e["gen_day"]).astype(str) + "-" + pd.Series(e["seq"]).astype(str)
    return pd.DataFrame(
        {
            "event_id": event_id,
            "event_type": np.array(EVENT_TYPES, dtype=object)[e["type"]],
            "user_id": e["user"].astype(np.int64),
            "item_id": e["item"].astype(np.int64),
            "event_time": iso_utc(e["time_ms"]),
            "device": device_names[e["device"]],
            "page": page_names[e["page"]],
            "position": pd.arrays.IntegerArray(e["position"].astype(np.int64), e["position"] < 0),
            "value": e["value"],
        }
    )


def _change_users(rng, users: pd.DataFrame) -> pd.DataFrame:
    """Change a few users in place (new occupation, zip code or a birthday); return the changed rows."""
    changed = rng.choice(len(users), max(1, rng.binomial(len(users), USER_CHANGE_RATE)), replace=False)
    changed.sort()
    kind = rng.choice(3, len(changed), p=[0.4, 0.3, 0.3])
    occupation, zip_code, age = (changed[kind == k] for k in range(3))
    old_occupation = pd.Index(OCCUPATIONS).get_indexer(users.loc[occupation, "occupation"])
    new_occupation = (old_occupation + rng.integers(1, len(OCCUPATIONS), len(occupation))) % len(OCCUPATIONS)
    users.loc[occupation, "occupation"] = np.array(OCCUPATIONS)[new_occupation]
    old_zip = users.loc[zip_code, "zip_code"].astype(int).to_numpy()
    users.loc[zip_code, "zip_code"] = _zip_codes((old_zip + rng.integers(1, 100_000, len(zip_code))) % 100_000)
    users.loc[age, "age"] = np.minimum(users.loc[age, "age"] + 1, 120)
    return users.iloc[changed].reset_index(drop=True)


def _change_prices(rng, items: pd.DataFrame) -> pd.DataFrame:
    """Reprice a few items in place; return the changed rows."""
    changed = rng.choice(len(items), max(1, rng.binomial(len(items), ITEM_CHANGE_RATE)), replace=False)
    changed.sort()
    old_price = items.loc[changed, "price"].to_numpy()
    step = rng.choice([-1.0, 1.0], len(changed)) * rng.uniform(0.05, 0.2, len(changed))
    new_price = np.maximum(0.99, old_price * (1 + step)).round(2)
    items.loc[changed, "price"] = np.where(new_price == old_price, old_price + 0.5, new_price).round(2)
    return items.iloc[changed].reset_index(drop=True)
