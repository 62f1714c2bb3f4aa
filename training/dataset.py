"""Parquet shards of the samples -> tf.data, one pyarrow record batch at a time.

Never the whole split in memory: a generator reads record batches (`chunk_rows` rows) from the shards
of one split (`<samples artifact>/parquet/split=<split>/*.parquet`) and converts them with
`training.inputs.arrow_to_arrays`. For training, rows pass a shuffle buffer: record batches are
gathered until `shuffle_buffer` rows are held, and a random permutation of them is emitted in batches;
the shard order is reshuffled every epoch (seeded). The buffer works on whole numpy columns: tf.data's
own unbatch → shuffle → batch costs ~10x more per row with ~80 feature tensors.
tf.data then prefetches the batches while the model trains.

With `encode` (a model's preprocessing, `training.models.build_split`), the raw features of each block are
encoded by a parallel tf.data map before rebatching: lookups, hashing, buckets and normalization run on
tf.data's threads while the model core trains on the encoded batches of the block before.

Elements are `(features, label, weight)`; `extra` columns (e.g. user_id for GAUC) can be added to the
features dict for evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

from training.inputs import ModelInput, arrow_to_arrays, split_files

TF_DTYPES = {"float32": tf.float32, "int64": tf.int64, "string": tf.string}


def record_batches(
    files: list[Path], columns: list[str], chunk_rows: int, seed: int | None = None, epoch: int = 0
) -> Iterator[pa.RecordBatch]:
    for path in shard_order(files, seed, epoch):
        yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns)


def shard_order(files: list[Path], seed: int | None, epoch: int) -> list[Path]:
    """The shards in the order an epoch reads them: as given, or shuffled by (seed, epoch)."""
    order = list(files)
    if seed is not None:
        np.random.default_rng([seed, epoch]).shuffle(order)
    return order


def block_rows(batch_size: int) -> int:
    """Rows per element the shuffle buffer emits: whole batches, about 8,192 rows."""
    return max(1, 8192 // batch_size) * batch_size


def _concat(parts: list[tuple]) -> tuple:
    features = {name: np.concatenate([p[0][name] for p in parts]) for name in parts[0][0]}
    return features, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def _take(part: tuple, rows) -> tuple:
    return {name: values[rows] for name, values in part[0].items()}, part[1][rows], part[2][rows]


def shuffled_batches(parts: Iterator[tuple], buffer_rows: int, batch_size: int, rng: np.random.Generator):
    """Windowed shuffle: gather record batches until `buffer_rows` rows are held, emit a random
    permutation of them in whole batches, carry the last partial batch into the next window; at the end
    emit what is left. Each row is emitted exactly once and copied twice (gather, permute)."""
    pending, held = [], 0
    for part in parts:
        pending.append(part)
        held += len(part[1])
        if held < buffer_rows:
            continue
        merged = _take(_concat(pending), rng.permutation(held))
        emit = held // batch_size * batch_size
        for start in range(0, emit, batch_size):
            yield _take(merged, slice(start, start + batch_size))
        pending, held = [_take(merged, slice(emit, held))], held - emit
    if held:
        merged = _take(_concat(pending), rng.permutation(held))
        for start in range(0, held, batch_size):
            yield _take(merged, slice(start, start + batch_size))


def _converted(batch: pa.RecordBatch, inputs: list[ModelInput], extra: dict[str, tf.DType]) -> tuple:
    """One record batch of the samples -> (features, label, weight) as numpy arrays."""
    features = arrow_to_arrays(batch, inputs)
    for name, dtype in extra.items():
        features[name] = batch.column(name).to_numpy(zero_copy_only=False).astype(dtype.as_numpy_dtype)
    label = batch.column("label").to_numpy(zero_copy_only=False).astype(np.float32)
    weight = pc.fill_null(batch.column("weight").cast(pa.float32()), 1.0).to_numpy(zero_copy_only=False)
    return features, label, weight


def _signature(inputs: list[ModelInput], extra: dict[str, tf.DType]):
    features = {i.name: tf.TensorSpec((None, *i.shape), TF_DTYPES[i.dtype], i.name) for i in inputs}
    features.update({name: tf.TensorSpec((None,), dtype, name) for name, dtype in extra.items()})
    return (features, tf.TensorSpec((None,), tf.float32, "label"), tf.TensorSpec((None,), tf.float32, "weight"))


# tf.data's autotuning off for every dataset here: with it on, the start of an epoch after the first
# (making the epoch's iterator) stalled for 1.5-19 s in 5 of 8 epoch starts of a kept split on the
# 200-day samples (1.1M rows, 4 runs of 3 epochs; 0.1-0.2 s otherwise), and for 6-7 s in 2 of 5
# streamed 2-epoch runs, inside TensorFlow, in Keras's epoch loop. Off: no stall seen, the same batches,
# the same streamed start-up and examples/s; AUTOTUNE then means a parallel call per core and a
# prefetch buffer that grows by itself (docs/training-performance.md: "The stall").
_OPTIONS = tf.data.Options()
_OPTIONS.autotune.enabled = False


def make_dataset(
    parquet_root: str | Path | None,
    split: str,
    inputs: list[ModelInput],
    batch_size: int = 1024,
    shuffle_buffer: int = 0,
    seed: int = 0,
    chunk_rows: int = 8192,
    extra: dict[str, tf.DType] | None = None,
    files: list[Path] | None = None,
    encode=None,
    keep_encoded: bool = False,
) -> tf.data.Dataset:
    """One pass over `split` (or the given Parquet `files`) per iteration; shuffled when `shuffle_buffer` > 0.
    encode: a Keras model (raw features dict -> encoded dict) applied to the features in a parallel map;
    `extra` columns are passed through beside its outputs. keep_encoded (with encode): shuffled, the
    split's first epoch streams and keeps each encoded row in memory, and every later epoch gathers its
    rows in the order streaming would give them (`_kept_encoded`); unshuffled (a valid split), the first
    full pass is cached in memory and later passes replay it."""
    if files is None:
        assert parquet_root is not None, "make_dataset reads a split of parquet_root, or the given files"
        files = split_files(parquet_root, split)
    else:
        files = list(files)
    if encode is not None and keep_encoded and shuffle_buffer > 0 and not extra:
        return _kept_encoded(files, inputs, batch_size, shuffle_buffer, seed, chunk_rows, encode)
    extra = extra or {}
    columns = [i.name for i in inputs] + list(extra) + ["label", "weight"]
    epochs = iter(range(1 << 30))  # the generator is re-entered once per epoch: a new shard order each time

    def converted(epoch: int):
        for batch in record_batches(files, columns, chunk_rows, seed if shuffle_buffer else None, epoch):
            yield _converted(batch, inputs, extra)

    def generate():
        epoch = next(epochs)
        if shuffle_buffer > 0:  # shuffled blocks of whole batches: few, large elements cross into TensorFlow
            yield from shuffled_batches(
                converted(epoch), shuffle_buffer, block_rows(batch_size), np.random.default_rng([seed, epoch, 1])
            )
        else:
            yield from converted(epoch)

    dataset = tf.data.Dataset.from_generator(generate, output_signature=_signature(inputs, extra))
    if encode is not None:
        names = [i.name for i in inputs]

        @tf.autograph.experimental.do_not_convert  # no Python control flow on tensors: nothing to convert
        def encoded(features, label, weight):
            out = dict(encode({n: features[n] for n in names}, training=False))
            out.update({name: features[name] for name in extra})
            return out, label, weight

        dataset = dataset.map(encoded, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if keep_encoded and shuffle_buffer == 0:  # the same blocks in the same order every pass
            dataset = dataset.cache()
    return dataset.rebatch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_OPTIONS)


def encoded_row_bytes(encode) -> int:
    """Bytes one row takes in a kept split (`_kept_encoded`): each output of the preprocessing model
    `encode` (its dtype's size times its per-row shape), plus the label and the weight (float32) and
    the byte that says the row is written."""
    outputs = encode.outputs.values() if isinstance(encode.outputs, dict) else encode.outputs
    return 9 + sum(np.dtype(t.dtype).itemsize * int(np.prod(t.shape[1:], dtype=np.int64)) for t in outputs)


_ROW = "row__in_split"  # each row's number in the split (file order), beside the features of a kept split


class _Packing:
    """Where each encoded output lives in a kept split: the outputs of one dtype side by side as the
    columns of one matrix (one variable, rows in file order). A block packs and unpacks in a few ops per
    dtype (a stack of its per-row scalars, then a concat; a split, then an unstack), so a kept block
    costs one scatter and one gather per dtype."""

    def __init__(self, encode):
        shapes = {name: tuple(t.shape[1:]) for name, t in encode.output.items()}
        dtypes = {name: tf.as_dtype(t.dtype) for name, t in encode.output.items()}
        self.shapes = shapes
        self.groups: dict[str, tuple[list[str], list[str]]] = {}  # dtype name: (per-row scalars, the others)
        for name, shape in shapes.items():
            self.groups.setdefault(dtypes[name].name, ([], []))[1 if shape else 0].append(name)

    def _width(self, name: str) -> int:
        return int(np.prod(self.shapes[name], dtype=np.int64))

    def variables(self, rows: int) -> dict[str, tf.Variable]:
        """Uninitialized (tf.raw_ops.Empty: no pass over the memory before the first batch); a row is
        read only after it was written (`_kept_encoded`'s `written`)."""
        widths = {
            dtype: len(scalars) + sum(map(self._width, others)) for dtype, (scalars, others) in self.groups.items()
        }
        return {
            dtype: tf.Variable(
                tf.raw_ops.Empty(shape=(rows, width), dtype=tf.as_dtype(dtype), init=False), trainable=False
            )
            for dtype, width in widths.items()
        }

    def pack(self, values: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        packed = {}
        for dtype, (scalars, others) in self.groups.items():
            parts = [tf.stack([values[n] for n in scalars], axis=1)] if scalars else []
            parts += [
                tf.reshape(values[n], (-1, self._width(n))) if len(self.shapes[n]) > 1 else values[n] for n in others
            ]
            packed[dtype] = tf.concat(parts, axis=1) if len(parts) > 1 else parts[0]
        return packed

    def unpack(self, packed: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        values: dict[str, tf.Tensor] = {}
        for dtype, (scalars, others) in self.groups.items():
            widths = ([len(scalars)] if scalars else []) + [self._width(n) for n in others]
            parts = tf.split(packed[dtype], widths, axis=1) if len(widths) > 1 else [packed[dtype]]
            if scalars:
                values.update(zip(scalars, tf.unstack(parts.pop(0), num=len(scalars), axis=1)))
            for name, part in zip(others, parts):
                values[name] = tf.reshape(part, (-1, *self.shapes[name])) if len(self.shapes[name]) > 1 else part
        return values


def _kept_encoded(files, inputs, batch_size, shuffle_buffer, seed, chunk_rows, encode) -> tf.data.Dataset:
    """The split kept encoded in memory, filled by its first epoch: that epoch streams (the same Parquet
    reads, shuffle buffer and parallel encoding map as `make_dataset`) and also writes each encoded row
    into variables at its row number (`_Packing`); every later epoch finds every row written and gathers
    its rows from them in the graph, in exactly the order streaming would give (the same shard shuffle
    and shuffle buffer, run on row numbers instead of rows: same seeds, same record-batch sizes). No
    Parquet read, conversion or encoding after the first epoch, no pass before it, the same batches as
    streaming. An epoch that ends early leaves rows unwritten: the next one streams (and writes) again."""
    sizes, offsets, total = {}, {}, 0  # each file's record-batch sizes and first row, in file order
    for path in files:
        sizes[path] = [b.num_rows for b in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=["label"])]
        offsets[path], total = total, total + sum(sizes[path])
    if total == 0:  # an empty split: nothing to keep
        return make_dataset(None, "train", inputs, batch_size, shuffle_buffer, seed, chunk_rows, files=files)
    packing = _Packing(encode)
    kept = packing.variables(total)  # the encoded outputs by dtype, and (below) each row's label and weight
    kept["targets"] = tf.Variable(tf.raw_ops.Empty(shape=(total, 2), dtype=tf.float32, init=False), trainable=False)
    written = tf.Variable(tf.zeros((total,), tf.int8), trainable=False)  # 1 once a row is in `kept`
    columns = [i.name for i in inputs] + ["label", "weight"]
    sample: dict[str, np.ndarray] = {}  # one row of raw features, from the first block read
    empty = np.zeros((0,), np.float32)
    epochs = iter(range(1 << 30))

    def numbered(epoch: int, read: bool):  # record batches in the epoch's shard order, with their row numbers
        for path in shard_order(files, seed, epoch):
            first = offsets[path]
            batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns) if read else None
            for size in sizes[path]:
                rows = np.arange(first, first + size, dtype=np.int64)
                first += size
                if batches is None:
                    yield {_ROW: rows}, rows, rows
                    continue
                features = _converted(next(batches), inputs, {})
                features[0][_ROW] = rows
                if not sample:
                    sample.update((name, values[:1]) for name, values in features[0].items())
                yield features

    def generate():
        epoch = next(epochs)
        read = int(tf.reduce_min(written)) == 0  # a row not written yet: stream this epoch and write
        rng = np.random.default_rng([seed, epoch, 1])
        blocks = shuffled_batches(numbered(epoch, read), shuffle_buffer, block_rows(batch_size), rng)
        if read:
            yield from blocks
            return
        pending = []  # later epochs: 8 blocks of row numbers per element (whole batches, so the same batches)
        for features, _, _ in blocks:
            pending.append(features[_ROW])
            if len(pending) == 8:
                yield {**sample, _ROW: np.concatenate(pending)}, empty, empty
                pending = []
        if pending:
            yield {**sample, _ROW: np.concatenate(pending)}, empty, empty

    @tf.autograph.experimental.do_not_convert  # autograph would convert _Packing's methods call by call
    def fill_or_gather(features, label, weight):
        """The block's first `filled` rows come with their features (all of a first epoch's block): they
        are encoded and written; the rest (all of a later epoch's element) are gathered. A later epoch's
        element carries one sample row of features instead, encoded and dropped: no tf.cond (its first
        trace added ~0.4 s to start-up) and no 0-row block for the preprocessing (HashedCrossing fails)."""
        rows, filled = features[_ROW], tf.size(label)
        out = encode({i.name: features[i.name] for i in inputs}, training=False)
        packed = {d: block[:filled] for d, block in packing.pack(out).items()}
        packed["targets"] = tf.stack([label, weight], axis=1)
        writes = [kept[d].scatter_update(tf.IndexedSlices(block, rows[:filled])) for d, block in packed.items()]
        writes.append(written.scatter_update(tf.IndexedSlices(tf.ones_like(rows[:filled], tf.int8), rows[:filled])))
        with tf.control_dependencies(writes):
            blocks = {d: tf.concat([packed[d], tf.gather(kept[d], rows[filled:])], 0) for d in kept}
        label, weight = tf.unstack(blocks.pop("targets"), num=2, axis=1)
        values = packing.unpack(blocks)
        return {name: values[name] for name in encode.output}, label, weight

    dataset = tf.data.Dataset.from_generator(generate, output_signature=_signature(inputs, {_ROW: tf.int64}))
    dataset = dataset.map(fill_or_gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.rebatch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_OPTIONS)
