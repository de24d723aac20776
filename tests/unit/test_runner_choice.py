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
from models.runner_choice import RUNNER_SETTINGS, build_runner, choose_runner
from models.tf_runner import TFStepRunner


def test_auto_follows_the_device_and_explicit_settings_win():
    assert choose_runner("auto", gpu=True) == "tensorflow"
    assert choose_runner("auto", gpu=False) == "compiled"
    for gpu in (True, False):
        for setting in ("compiled", "numpy", "tensorflow"):
            assert choose_runner(setting, gpu=gpu) == setting
    assert choose_runner("auto") == ("tensorflow" if gpu_visible() else "compiled")
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
    assert auto.name == choose_runner("auto")  # compiled on a CPU


def test_app_args_take_only_known_runner_settings():
    assert AppArgs().runner == "auto"
    for setting in RUNNER_SETTINGS:
        assert AppArgs(runner=setting).runner == setting
    with pytest.raises(ValidationError):
        AppArgs(runner="gpu")
