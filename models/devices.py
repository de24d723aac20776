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


def use_full_float32_matmuls() -> None:
    """TensorFlow multiplies float32 matrices in TF32 (10-bit mantissa) on Ampere and newer
    GPUs by default: logits off by ~1e-3, so a seed would sample different text on a GPU
    replica than on a CPU one (and the Ingress retries a request on any replica). Full float32
    costs little here: a serving step is bound by launches and memory, not FLOPs."""
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)
