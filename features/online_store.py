"""The online store in Redis: the model features of every user, item and user x category, versioned.

Layout under a namespace NS (config `online_store.namespace`):

    NS:pointer               the version served now (an integer); flipped last, in one MULTI/EXEC
    NS:committed             set of every version ever committed (a killed publish's version never is)
    NS:kept                  list of the newest `keep_versions` committed versions, newest first
    NS:next                  counter: each publish takes the next version number when it starts
    NS:version:V             hash: date, defaults (per entity, JSON), features, published_at, rows
    NS:<entity>:<key>        hash per entity, field = version V, value = the entity's model features as
                             JSON (what samples carry, defaults applied, kept day-free: features.day_free),
                             "" = absent from version V on

An entity's value at version V is the field with the largest committed version <= V. A publish writes a
field only for entities whose value changed (incremental), so an unchanged entity costs one HGETALL and
no write. Fields of a killed publish are never committed, so readers ignore them and the next publish
deletes them. Keys: user `<user_id>`, item `<item_id>`, user_category `<user_id>:<category>`.

This module imports no Spark: the executors' writer (write_partition) and the request path use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import AbstractSet, Iterable, Iterator

from features.errors import OnlineStoreUnreachable, PipelineInputError

__all__ = ["OnlineStore", "OnlineStoreEmpty", "OnlineStoreUnreachable", "RedisLocation"]

ENTITIES = ("user", "item", "user_category")
ITEM_JOIN_CATEGORY = "_category"  # the item's category before defaults: the user x category join key
WRITE_BATCH = 1000


class OnlineStoreEmpty(PipelineInputError):
    """Nothing has been published to this namespace (or not the version asked for)."""


@dataclass(frozen=True)
class RedisLocation:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    namespace: str = "recpipe"
    socket_timeout_seconds: float = 5.0

    def key(self, *parts) -> str:
        return ":".join([self.namespace, *map(str, parts)])

    def entity_key(self, entity: str, key: str) -> str:
        return self.key(entity, key)

    def client(self):
        import redis

        return redis.Redis(
            host=self.host,
            port=self.port,
            db=self.db,
            socket_timeout=self.socket_timeout_seconds,
            socket_connect_timeout=self.socket_timeout_seconds,
            decode_responses=True,
        )

    @property
    def address(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


def connect(location: RedisLocation):
    """A client that answered PING; OnlineStoreUnreachable (one line) otherwise."""
    import redis

    client = location.client()
    try:
        client.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        raise OnlineStoreUnreachable(
            f"the online store at {location.address} accepts no connection "
            f"({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}); "
            f"start it (make redis) or fix online_store.host/port"
        ) from None
    return client


def guarded(location: RedisLocation, call):
    """Run call(); a lost connection becomes OnlineStoreUnreachable."""
    import redis

    try:
        return call()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        raise OnlineStoreUnreachable(
            f"the online store at {location.address} stopped answering: {str(error).strip() or type(error).__name__}"
        ) from None


def value_at(fields: dict, version: int, committed: AbstractSet[int]) -> str | None:
    """The entity's JSON value at `version` from its hash fields (None: absent)."""
    best = None
    for name in fields:
        number = int(name)
        if number <= version and number in committed and (best is None or number > best):
            best = number
    if best is None:
        return None
    return fields[str(best)] or None


@dataclass
class PublishPlan:
    """What the executors need to know: the version being written, the one served now, and which fields
    may go (committed versions older than every kept one's base, and uncommitted leftovers)."""

    location: RedisLocation
    version: int
    current: int | None
    committed: frozenset[int]
    oldest_kept: int | None  # the oldest version kept now: fields below its base can be deleted

    def prune(self, fields: dict) -> list[str]:
        numbers = [int(name) for name in fields]
        garbage = [n for n in numbers if n not in self.committed and n != self.version]
        obsolete = []
        if self.oldest_kept is not None:
            base = max((n for n in numbers if n in self.committed and n <= self.oldest_kept), default=None)
            if base is not None:
                obsolete = [n for n in numbers if n in self.committed and n < base]
        return [str(n) for n in garbage + obsolete]


def write_rows(plan: PublishPlan, rows: Iterable[tuple[str, str, str | None]], client=None) -> dict[str, list[int]]:
    """Write (entity, key, value or None) rows: a field for version `plan.version` where the value
    differs from the one served now (None where an entity present now is gone). Pipelined in batches
    of WRITE_BATCH. Returns {entity: [rows, rewritten, unchanged, removed]}."""
    client = client or plan.location.client()
    counts: dict[str, list[int]] = {}
    batch: list[tuple[str, str, str | None]] = []

    def flush():
        reads = client.pipeline(transaction=False)
        for entity, key, _ in batch:
            reads.hgetall(plan.location.entity_key(entity, key))
        current = reads.execute()
        writes = client.pipeline(transaction=False)
        for (entity, key, value), fields in zip(batch, current):
            tally = counts.setdefault(entity, [0, 0, 0, 0])
            tally[0] += value is not None
            served = value_at(fields, plan.current, plan.committed) if plan.current is not None else None
            redis_key = plan.location.entity_key(entity, key)
            if value == served:
                tally[2] += value is not None
            else:
                writes.hset(redis_key, str(plan.version), value if value is not None else "")
                tally[1 if value is not None else 3] += 1
            stale = plan.prune(fields)
            if stale:
                writes.hdel(redis_key, *stale)
        writes.execute()
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= WRITE_BATCH:
            flush()
    if batch:
        flush()
    return counts


def write_partition(plan: PublishPlan):
    """A mapInPandas function: each executor writes its partition with pipelines and yields its counts."""

    def run(frames: Iterator) -> Iterator:
        import pandas as pd

        client = plan.location.client()
        totals: dict[str, list[int]] = {}
        for frame in frames:
            values = frame["value"].where(frame["value"].notna(), None)
            counts = write_rows(plan, zip(frame["entity"], frame["key"], values), client)
            for entity, numbers in counts.items():
                totals[entity] = [a + b for a, b in zip(totals.get(entity, [0, 0, 0, 0]), numbers)]
        yield pd.DataFrame(
            [(e, *n) for e, n in totals.items()], columns=["entity", "rows", "rewritten", "unchanged", "removed"]
        )

    return run


WRITE_COUNTS_SCHEMA = "entity string, rows long, rewritten long, unchanged long, removed long"


def begin(location: RedisLocation, client) -> PublishPlan:
    """Take a new version number and describe the current state for the writers."""

    def read():
        pipe = client.pipeline(transaction=False)
        pipe.incr(location.key("next"))
        pipe.get(location.key("pointer"))
        pipe.smembers(location.key("committed"))
        pipe.lrange(location.key("kept"), 0, -1)
        return pipe.execute()

    version, pointer, committed, kept = guarded(location, read)
    return PublishPlan(
        location,
        int(version),
        int(pointer) if pointer is not None else None,
        frozenset(int(v) for v in committed),
        min((int(v) for v in kept), default=None),
    )


def commit(plan: PublishPlan, client, metadata: dict, keep_versions: int) -> list[int]:
    """Make `plan.version` the served one in one MULTI/EXEC (metadata, committed, pointer, kept); then
    drop the metadata of versions beyond `keep_versions`. Returns the versions dropped."""
    location = plan.location

    def flip():
        pipe = client.pipeline(transaction=True)
        pipe.hset(location.key("version", plan.version), mapping={k: json.dumps(v) for k, v in metadata.items()})
        pipe.sadd(location.key("committed"), plan.version)
        pipe.set(location.key("pointer"), plan.version)
        pipe.lpush(location.key("kept"), plan.version)
        pipe.lrange(location.key("kept"), keep_versions, -1)
        pipe.ltrim(location.key("kept"), 0, keep_versions - 1)
        dropped = [int(v) for v in pipe.execute()[4]]
        if dropped:
            client.delete(*[location.key("version", v) for v in dropped])
        return dropped

    return guarded(location, flip)


@dataclass
class Published:
    version: int
    date: str
    defaults: dict[str, dict]
    features: list[str]
    committed: frozenset[int]
    metadata: dict = field(default_factory=dict)


class OnlineStore:
    """Reads of published values: one pipelined round trip per lookup, version state cached until the
    pointer moves."""

    def __init__(self, location: RedisLocation, client=None):
        self.location = location
        self.client = client or connect(location)
        self._published: dict[int, Published] = {}
        self._committed: frozenset[int] = frozenset()

    def _describe(self, version: int) -> Published:
        if version not in self._published or version not in self._committed:

            def read():
                pipe = self.client.pipeline(transaction=False)
                pipe.hgetall(self.location.key("version", version))
                pipe.smembers(self.location.key("committed"))
                return pipe.execute()

            meta, committed = guarded(self.location, read)
            if not meta:
                raise OnlineStoreEmpty(
                    f"version {version} is not kept in the online store {self.location.address} "
                    f"namespace {self.location.namespace}"
                )
            self._committed = frozenset(int(v) for v in committed)
            self._published[version] = Published(
                version,
                json.loads(meta["date"]),
                json.loads(meta["defaults"]),
                json.loads(meta["features"]),
                self._committed,
                {k: json.loads(v) for k, v in meta.items()},
            )
        return self._published[version]

    def pointer(self) -> int:
        value = guarded(self.location, lambda: self.client.get(self.location.key("pointer")))
        if value is None:
            raise OnlineStoreEmpty(
                f"nothing is published in the online store {self.location.address} namespace "
                f"{self.location.namespace}: run recpipe publish-features first"
            )
        return int(value)

    def kept(self) -> list[Published]:
        versions = guarded(self.location, lambda: self.client.lrange(self.location.key("kept"), 0, -1))
        return [self._describe(int(v)) for v in versions]

    def published(self, version: int | None = None) -> Published:
        return self._describe(self.pointer() if version is None else version)

    def lookup(
        self,
        requests: list[tuple[str, str]],
        version: int | None = None,
    ) -> tuple[Published, list[dict | None]]:
        """[(entity, key)] -> their decoded values at `version` (default: the served one; None: absent).
        Without a version the pointer is read in the same round trip."""

        def read():
            pipe = self.client.pipeline(transaction=False)
            if version is None:
                pipe.get(self.location.key("pointer"))
            for entity, key in requests:
                pipe.hgetall(self.location.entity_key(entity, key))
            return pipe.execute()

        answers = guarded(self.location, read)
        if version is None:
            pointer, answers = answers[0], answers[1:]
            if pointer is None:
                self.pointer()  # raises OnlineStoreEmpty
            at = int(pointer)
        else:
            at = version
        published = self._describe(at)
        values = []
        for fields in answers:
            value = value_at(fields, at, published.committed)
            values.append(json.loads(value) if value is not None else None)
        return published, values
