"""The serving runner is chosen by the `runner` setting, and by device and model size when it is
`auto`."""

import pytest
from pydantic import ValidationError

from deployments.app import AppArgs
from models.charrnn import build_charrnn
from models.compiled_runner import CompiledStepRunner
from models.config import CharRNNConfig
from models.devices import gpu_visible
from models.runner import StepRunner
from models.runner_choice import LARGE_MODEL_FLOPS_PER_CHAR, RUNNER_SETTINGS, build_runner, choose_runner
from models.tf_runner import TFStepRunner


def test_auto_follows_the_device_and_the_model_size_and_explicit_settings_win():
    small, large = LARGE_MODEL_FLOPS_PER_CHAR - 1, LARGE_MODEL_FLOPS_PER_CHAR
    assert choose_runner("auto", gpu=True, flops_per_char=small) == "tensorflow"
    assert choose_runner("auto", gpu=False, flops_per_char=small) == "numpy"
    assert choose_runner("auto", gpu=False, flops_per_char=large) == "tensorflow"
    for gpu in (True, False):
        for setting in ("compiled", "numpy", "tensorflow"):
            assert choose_runner(setting, gpu=gpu) == setting
    assert choose_runner("auto") == ("tensorflow" if gpu_visible() else "numpy")
    with pytest.raises(ValueError, match="runner must be one of"):
        choose_runner("cuda")


def test_build_runner_makes_the_chosen_runner():
    config = CharRNNConfig(vocab_size=11, lstm_size=8, num_layers=1)
    model = build_charrnn(config)
    numpy_runner = build_runner(model, config, "numpy")
    tf_runner = build_runner(model, config, "tensorflow")
    compiled_runner = build_runner(model, config, "compiled")
    assert isinstance(compiled_runner, CompiledStepRunner) and compiled_runner.name == "compiled"
    assert isinstance(numpy_runner, StepRunner) and numpy_runner.name == "numpy"
    assert isinstance(tf_runner, TFStepRunner) and tf_runner.name == "tensorflow"
    assert tf_runner.device == ("GPU:0" if gpu_visible() else "CPU:0")
    auto = build_runner(model, config)
    assert auto.name == choose_runner("auto")  # a small model: NumPy on a CPU


def test_auto_serves_a_large_model_with_tensorflow_on_a_cpu_too():
    """The 2x512 LSTM is past the size where TensorFlow's matmuls on every core beat one BLAS
    thread (BENCHMARKS.md); the 2x128 reference model is not."""
    for units, large in ((512, True), (128, False)):
        config = CharRNNConfig(vocab_size=66, lstm_size=units, num_layers=2)
        runner = build_runner(build_charrnn(config), config)
        assert runner.name == ("tensorflow" if large or gpu_visible() else "numpy")


def test_app_args_take_only_known_runner_settings():
    assert AppArgs().runner == "auto"
    for setting in RUNNER_SETTINGS:
        assert AppArgs(runner=setting).runner == setting
    with pytest.raises(ValidationError):
        AppArgs(runner="gpu")
