"""TF Serving REST request and response bodies, for trying requests against a SavedModel offline.

Request formats (https://www.tensorflow.org/tfx/serving/api_rest):
    row       {"signature_name": "serving_default", "instances": [{"feature": value, ...}, ...]}
    columnar  {"signature_name": "serving_default", "inputs": {"feature": [value, ...], ...}}
Responses: row → {"predictions": [...]} (one entry per instance), columnar → {"outputs": [...]};
with a single output tensor its name is left out, as TF Serving does.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: TensorFlow is imported lazily
    import tensorflow as tf


class RequestError(ValueError):
    """A request body that TF Serving would reject too."""


class ModelError(ValueError):
    """A SavedModel directory TensorFlow cannot load (e.g. a damaged saved_model.pb)."""


def _tensorflow():
    """TensorFlow, imported only once a request is known to be well formed, with the C++ start-up lines
    it writes straight to stderr (oneDNN, CUDA; TF_CPP_MIN_LOG_LEVEL does not silence them) discarded."""
    if "tensorflow" not in sys.modules:
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return sys.modules["tensorflow"]


def request_columns(body: dict) -> tuple[dict[str, list], str]:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if "instances" in body and "inputs" in body:
        raise RequestError("give either 'instances' (row format) or 'inputs' (columnar format), not both")
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise RequestError("'instances' must be a non-empty list of objects, one per row, keyed by input name")
        names = set(rows[0])
        uneven = [i for i, r in enumerate(rows) if set(r) != names]
        if uneven:
            raise RequestError(f"instance {uneven[0]} has different input names than instance 0")
        return {name: [r[name] for r in rows] for name in rows[0]}, "row"
    if "inputs" in body:
        columns = body["inputs"]
        if not isinstance(columns, dict) or not columns:
            raise RequestError("'inputs' must be a non-empty object of input name -> list of values")
        lengths = {name: len(values) for name, values in columns.items() if isinstance(values, list)}
        if len(set(lengths.values())) > 1:
            first, n = next(iter(lengths.items()))
            other, m = next((name, length) for name, length in lengths.items() if length != n)
            raise RequestError(
                f"inputs of different lengths: {first} has {n} values, {other} has {m}; "
                f"every input needs one value per row"
            )
        return dict(columns), "columnar"
    raise RequestError("a request needs 'instances' (row format) or 'inputs' (columnar format)")


def request_tensors(columns: dict[str, list], specs: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
    tf = _tensorflow()
    missing = sorted(set(specs) - set(columns))
    unknown = sorted(set(columns) - set(specs))
    if missing or unknown:
        raise RequestError(f"inputs do not match the signature: missing {missing}, unknown {unknown}")
    tensors = {}
    for name, spec in specs.items():
        try:
            tensor = tf.constant(columns[name], dtype=spec.dtype)
        except (TypeError, ValueError) as error:
            raise RequestError(
                f"input {name}: values are not {spec.dtype.name}: {str(error).splitlines()[0]}"
            ) from None
        if not spec.shape.is_compatible_with(tensor.shape):
            raise RequestError(f"input {name}: shape {tensor.shape.as_list()} does not fit {spec.shape.as_list()}")
        tensors[name] = tensor
    return tensors


def response(outputs: dict[str, np.ndarray], request_format: str) -> dict:
    values = {name: np.asarray(v).tolist() for name, v in outputs.items()}
    body = next(iter(values.values())) if len(values) == 1 else values
    if request_format == "row":
        if len(values) > 1:  # one object per instance, keyed by output name
            body = [dict(zip(values, row)) for row in zip(*values.values())]
        return {"predictions": body}
    return {"outputs": body}


def predict(saved_model_dir: str, body: dict, signature: str | None = None) -> dict:
    columns, request_format = request_columns(body)  # a malformed body fails before TensorFlow loads
    tf = _tensorflow()
    try:
        loaded = tf.saved_model.load(saved_model_dir)
    except Exception as error:  # OSError (unparsable saved_model.pb), ValueError, tf.errors.OpError, ...
        raise ModelError(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__) from None
    name = signature or body.get("signature_name", "serving_default")
    if name not in loaded.signatures:
        raise RequestError(f"signature '{name}' not found; the model has {sorted(loaded.signatures)}")
    serve = loaded.signatures[name]
    outputs = serve(**request_tensors(columns, serve.structured_input_signature[1]))
    return response({k: v.numpy() for k, v in outputs.items()}, request_format)
