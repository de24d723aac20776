"""Which step runner serves a model: the TensorFlow runner where TensorFlow sees a GPU, the
NumPy runner otherwise. On a CPU the NumPy step is as fast or faster at serving batch sizes and
compiles nothing at load (BENCHMARKS.md, Step runners); on a GPU the TensorFlow step is what
puts the work on the device."""

from __future__ import annotations

from typing import Literal, get_args

from models.config import CharRNNConfig
from models.devices import gpu_visible
from models.runner import StepRunner
from models.step_cells import StepWeights
from models.tf_runner import TFStepRunner

RunnerSetting = Literal["auto", "numpy", "tensorflow"]
RUNNER_SETTINGS: tuple[str, ...] = get_args(RunnerSetting)


def choose_runner(setting: str = "auto", gpu: bool | None = None) -> str:
    """'numpy' or 'tensorflow': the setting itself unless it is 'auto', then by device
    (`gpu` None: ask TensorFlow)."""
    if setting not in RUNNER_SETTINGS:
        raise ValueError(f"runner must be one of {', '.join(RUNNER_SETTINGS)}, not {setting!r}")
    if setting != "auto":
        return setting
    return "tensorflow" if (gpu_visible() if gpu is None else gpu) else "numpy"


def build_runner(model, config: CharRNNConfig, setting: str = "auto"):
    """The chosen runner for a loaded Keras char-RNN; it has `name` and `device` for logs."""
    weights = StepWeights.from_model(model, config)
    if choose_runner(setting) == "tensorflow":
        return TFStepRunner(weights)
    return StepRunner(weights)
