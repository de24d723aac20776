"""Accelerator setup shared by every replica that runs TensorFlow."""

from __future__ import annotations


def enable_gpu_memory_growth() -> None:
    """Several models share a GPU replica: let TensorFlow grow memory instead of taking it all."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU in this process (in a Ray replica: the GPUs Ray gave it,
    through CUDA_VISIBLE_DEVICES)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
