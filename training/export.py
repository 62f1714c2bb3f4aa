"""SavedModels for TF Serving: the serving signature, warmup requests and the parity check.

Contract (what the serving team relies on; derived from the feature spec through training.inputs):

    signature  serving_default
    inputs     one tensor per model feature, named as in schemas/features.yaml:
               float32 [None] (NaN = missing), int64 [None] (-1 = missing), string [None] ("" = missing),
               list features int64/string [None, N] padded with -1 / ""
    outputs    probability: float32 [None, 1]
    assets.extra/tf_serving_warmup_requests   PredictionLog records built from real test rows
    assets.extra/model_card.json              features, data versions, cut points, metrics, code version

All preprocessing (lookups, hashing, buckets, normalization, crosses) and the GBDT leaf encoder are
layers of the Keras model, so they are in the graph.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.dataset import TF_DTYPES
from training.inputs import ModelInput

SIGNATURE = "serving_default"
OUTPUT = "probability"
WARMUP_FILE = "tf_serving_warmup_requests"
PARITY_SCRIPT = Path(__file__).with_name("parity_check.py")


def input_specs(inputs: list[ModelInput]) -> dict[str, tf.TensorSpec]:
    return {i.name: tf.TensorSpec((None, *i.shape), TF_DTYPES[i.dtype], name=i.name) for i in inputs}


def write_saved_model(model: keras.Model, inputs: list[ModelInput], path: Path) -> None:
    """`serving_default`: raw named features in, {"probability": [None, 1]} out."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=lambda features: {OUTPUT: model(features, training=False)},
        input_signature=[input_specs(inputs)],
    )
    archive.write_out(str(path), verbose=False)


def to_tensors(arrays: dict[str, np.ndarray], inputs: list[ModelInput]) -> dict[str, tf.Tensor]:
    return {i.name: tf.constant(arrays[i.name], dtype=TF_DTYPES[i.dtype]) for i in inputs}


def warmup_records(
    arrays: dict[str, np.ndarray],
    inputs: list[ModelInput],
    model_name: str,
    count: int = 100,
    batch_sizes: tuple[int, ...] = (1, 8, 32),
) -> list[bytes]:
    """Up to `count` serialized PredictionLog records, each a PredictRequest of real rows (batch sizes cycle)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    rows, records, start = len(next(iter(arrays.values()))), [], 0
    for n in range(count):
        size = min(batch_sizes[n % len(batch_sizes)], rows)
        if size == 0:
            break
        take = np.arange(start, start + size) % rows
        start += size
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE))
        for i in inputs:
            request.inputs[i.name].CopyFrom(tf.make_tensor_proto(arrays[i.name][take], dtype=TF_DTYPES[i.dtype]))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def write_warmup(saved_model: Path, records: list[bytes]) -> Path:
    target = saved_model / "assets.extra" / WARMUP_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for record in records:
            writer.write(record)
    return target


def parity_in_fresh_process(saved_model: Path, arrays: dict[str, np.ndarray], work: Path) -> np.ndarray:
    """Reload the SavedModel in a new Python process that imports only TensorFlow and NumPy, score the
    rows through `serving_default`, and return its probabilities."""
    inputs = work / "parity_inputs.npz"
    outputs = work / "parity_outputs.npy"
    # numpy's stubs match the ** mapping against savez's keyword allow_pickle (bool)
    np.savez(inputs, **{k: (v.astype(bytes) if v.dtype == object else v) for k, v in arrays.items()})  # type: ignore[arg-type]
    result = subprocess.run(
        [sys.executable, "-I", str(PARITY_SCRIPT), str(saved_model), str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the parity process failed: {result.stderr.strip().splitlines()[-1:]}")
    return np.load(outputs)
