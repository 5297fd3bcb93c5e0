"""Which backend Keras runs on, and on what device: a run records both, and the few
TensorFlow-only options check the first. Keras 3 trains the same models on TensorFlow
(the default), JAX or PyTorch: `KERAS_BACKEND=jax` needs no TensorFlow installed."""

from __future__ import annotations

import json
import os
from pathlib import Path


def keras_backend() -> str:
    """The backend Keras runs on, read as Keras reads it (KERAS_BACKEND, else
    ~/.keras/keras.json, else tensorflow) without importing Keras."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def device() -> str:
    """What the run trains on: the first accelerator the Keras backend sees (e.g. 'NVIDIA
    H200'), else 'cpu'. Asks the backend, which a run has imported already."""
    backend = keras_backend()
    try:
        if backend == "jax":
            import jax

            first = jax.devices()[0]
            return first.device_kind if first.platform != "cpu" else "cpu"
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return "cpu"
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    except Exception as error:  # noqa: BLE001 - a device query must not fail the run
        return f"unknown ({type(error).__name__})"
