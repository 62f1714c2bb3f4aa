"""Score rows with a SavedModel in a process that has only TensorFlow and NumPy (no recpipe, no Keras
model code): what TF Serving will do. Run by training.export.parity_in_fresh_process.

    python -I parity_check.py SAVED_MODEL_DIR INPUTS.npz OUTPUT.npy
"""

import sys

import numpy as np
import tensorflow as tf


def main(saved_model: str, inputs: str, output: str) -> None:
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    with np.load(inputs) as arrays:
        features = {name: tf.constant(arrays[name], dtype=spec.dtype) for name, spec in specs.items()}
    np.save(output, serve(**features)["probability"].numpy())


if __name__ == "__main__":
    main(*sys.argv[1:4])
