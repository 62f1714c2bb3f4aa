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


def _signature(inputs: list[ModelInput], extra: dict[str, tf.DType]):
    features = {i.name: tf.TensorSpec((None, *i.shape), TF_DTYPES[i.dtype], i.name) for i in inputs}
    features.update({name: tf.TensorSpec((None,), dtype, name) for name, dtype in extra.items()})
    return (features, tf.TensorSpec((None,), tf.float32, "label"), tf.TensorSpec((None,), tf.float32, "weight"))


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
    `extra` columns are passed through beside its outputs. keep_encoded (with encode): shuffled, the split
    is encoded once, now, and held in memory, and every epoch gathers its rows in the order streaming
    would give them (`_kept_encoded`); unshuffled (a valid split), the first full pass is cached in memory
    and later passes replay it."""
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
            features = arrow_to_arrays(batch, inputs)
            for name, dtype in extra.items():
                features[name] = batch.column(name).to_numpy(zero_copy_only=False).astype(dtype.as_numpy_dtype)
            label = batch.column("label").to_numpy(zero_copy_only=False).astype(np.float32)
            weight = pc.fill_null(batch.column("weight").cast(pa.float32()), 1.0).to_numpy(zero_copy_only=False)
            yield features, label, weight

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

        def encoded(features, label, weight):
            out = dict(encode({n: features[n] for n in names}, training=False))
            out.update({name: features[name] for name in extra})
            return out, label, weight

        dataset = dataset.map(encoded, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if keep_encoded and shuffle_buffer == 0:  # the same blocks in the same order every pass
            dataset = dataset.cache()
    return dataset.rebatch(batch_size).prefetch(tf.data.AUTOTUNE)


def encoded_row_bytes(encode) -> int:
    """Bytes one row takes in a kept split (`_kept_encoded`): each output of the preprocessing model
    `encode` (its dtype's size times its per-row shape), plus the label and the weight (float32)."""
    outputs = encode.outputs.values() if isinstance(encode.outputs, dict) else encode.outputs
    return 8 + sum(np.dtype(t.dtype).itemsize * int(np.prod(t.shape[1:], dtype=np.int64)) for t in outputs)


# tf.data's autotuning off for a kept split: with it on, the start of an epoch after the first (a new
# iterator over the gathers from the kept tensors) stalled for 1.5-19 s in 5 of 8 epoch starts on the
# 200-day samples (1.1M rows, 4 runs of 3 epochs; 0.1-0.2 s otherwise), inside TensorFlow, in Keras's
# epoch loop. Off: no stall in the same 4 runs, the same batches; AUTOTUNE then means a parallel call
# per core and a prefetch buffer that grows by itself (docs/training-performance.md: "The stall").
_KEPT_OPTIONS = tf.data.Options()
_KEPT_OPTIONS.autotune.enabled = False


def _kept_encoded(files, inputs, batch_size, shuffle_buffer, seed, chunk_rows, encode) -> tf.data.Dataset:
    """The split encoded once (one pass in file order, now) and held as tensors; each epoch gathers the
    rows in the graph in exactly the order the streaming path gives them: the same shard shuffle and
    the same shuffle buffer, run on row numbers instead of rows (same seeds, same record-batch sizes).
    No Parquet read, conversion or encoding after the first pass, and the same batches as streaming."""
    blocks = list(make_dataset(None, "train", inputs, 8192, 0, seed, chunk_rows, files=files, encode=encode))
    if not blocks:  # an empty split: nothing to keep
        return make_dataset(None, "train", inputs, batch_size, shuffle_buffer, seed, chunk_rows, files=files)
    kept = tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *blocks)
    sizes, offsets, start = {}, {}, 0  # each file's record-batch sizes and first row, in file order
    for path in files:
        sizes[path] = [b.num_rows for b in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=["label"])]
        offsets[path], start = start, start + sum(sizes[path])
    epochs = iter(range(1 << 30))

    def row_numbers(epoch: int):
        for path in shard_order(files, seed, epoch):
            first = offsets[path]
            for size in sizes[path]:
                rows = np.arange(first, first + size, dtype=np.int64)
                first += size
                yield {}, rows, rows

    def generate():
        epoch = next(epochs)
        rng = np.random.default_rng([seed, epoch, 1])
        for _, rows, _ in shuffled_batches(row_numbers(epoch), shuffle_buffer, block_rows(batch_size), rng):
            yield rows

    order = tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec((None,), tf.int64))
    gathered = order.map(
        lambda rows: tf.nest.map_structure(lambda t: tf.gather(t, rows), kept),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return gathered.rebatch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_KEPT_OPTIONS)
