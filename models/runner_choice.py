"""Which step runner serves a model: the TensorFlow runner where TensorFlow sees a GPU, and on
a CPU for a large model; the NumPy runner for a small model on a CPU.

On a GPU the TensorFlow step is what puts the work on the device. On a CPU it depends on the
model's size (BENCHMARKS.md, Sampling engine): a small model's step is a few small matrix
products, where per-call overhead decides and NumPy's is the lowest (2x128 at 64 streams:
~410 us a step against TensorFlow's ~780); a large model's step is dominated by its matrix
products, where TensorFlow's oneDNN kernels on every core beat NumPy's one BLAS thread
(models/runner.py says why one: 2x512, ~3.1 ms against ~5.5; 2x384, ~2.2 against ~2.8;
2x256 about even)."""

from __future__ import annotations

from typing import Literal, get_args

from models.compiled_runner import CompiledStepRunner
from models.config import CharRNNConfig
from models.devices import gpu_visible
from models.runner import StepRunner
from models.step_cells import StepWeights
from models.tf_runner import TFStepRunner

RunnerSetting = Literal["auto", "compiled", "numpy", "tensorflow"]
RUNNER_SETTINGS: tuple[str, ...] = get_args(RunnerSetting)
# From this many FLOPs per character (2x384 LSTM: 3.6 M; 2x256: 1.6 M) `auto` picks the
# TensorFlow runner on a CPU too.
LARGE_MODEL_FLOPS_PER_CHAR = 2_500_000


def choose_runner(setting: str = "auto", gpu: bool | None = None,
                  flops_per_char: int = 0) -> str:
    """'numpy' or 'tensorflow': the setting itself unless it is 'auto', then by device (`gpu`
    None: ask TensorFlow) and, on a CPU, by the model's size."""
    if setting not in RUNNER_SETTINGS:
        raise ValueError(f"runner must be one of {', '.join(RUNNER_SETTINGS)}, not {setting!r}")
    if setting != "auto":
        return setting
    if gpu_visible() if gpu is None else gpu:
        return "tensorflow"
    return "tensorflow" if flops_per_char >= LARGE_MODEL_FLOPS_PER_CHAR else "numpy"


def build_runner(model, config: CharRNNConfig, setting: str = "auto"):
    """The chosen runner for a loaded Keras char-RNN; it has `name` and `device` for logs."""
    weights = StepWeights.from_model(model, config)
    choice = choose_runner(setting, flops_per_char=weights.flops_per_char())
    if choice == "tensorflow":
        return TFStepRunner(weights)
    if choice == "compiled":
        return CompiledStepRunner(weights)
    return StepRunner(weights)
