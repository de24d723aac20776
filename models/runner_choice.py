"""Which step runner serves a model: the TensorFlow runner where TensorFlow sees a GPU, the
compiled runner on a CPU.

On a GPU the TensorFlow step is what puts the work on the device. On a CPU the compiled
runner (models/compiled_runner.py: one GIL-free call a step, or several with the engine's fused
steps, spread over every core by rows or, for a big model, by units) beat both others at every
size measured (BENCHMARKS.md, Sampling engine; engine at 64 streams, 2x128: ~125-200k chars/s
against NumPy's ~70-120k and TensorFlow's ~40-60k; 2x512: ~13-15k against ~9k and ~8-9k).
The NumPy runner stays as the reference that needs no compiler, and `numpy`/`tensorflow` force
either."""

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
RUNNERS = {"compiled": CompiledStepRunner, "numpy": StepRunner, "tensorflow": TFStepRunner}


def choose_runner(setting: str = "auto", gpu: bool | None = None) -> str:
    """The setting itself unless it is 'auto', then by device (`gpu` None: ask TensorFlow)."""
    if setting not in RUNNER_SETTINGS:
        raise ValueError(f"runner must be one of {', '.join(RUNNER_SETTINGS)}, not {setting!r}")
    if setting != "auto":
        return setting
    return "tensorflow" if (gpu_visible() if gpu is None else gpu) else "compiled"


def build_runner(model, config: CharRNNConfig, setting: str = "auto"):
    """The chosen runner for a loaded Keras char-RNN; it has `name` and `device` for logs."""
    return RUNNERS[choose_runner(setting)](StepWeights.from_model(model, config))
