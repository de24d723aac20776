"""--mixed_precision (a GPU option, exercised here on the CPU): the training step keeps loss and
logits in float32 and scales the loss so float16 gradients do not flush to zero, and a
checkpoint trained that way serves with either step runner."""

import dataclasses
import os
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.artifacts import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, load_charrnn, write_json
from models.charrnn import build_charrnn
from models.config import CharRNNConfig, RunConfig
from models.runner import StepRunner
from models.tf_runner import TFStepRunner
from models.vocab import Vocab
from trainers.charrnn import per_example_loss
from trainers.loop import build_optimizer, gradient_step

VOCAB = Vocab.from_text("abcdefghijklmnopqrstuvwxyz \n", 100)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def changed_fraction_after_one_step(mixed: bool, config: CharRNNConfig, batch) -> tuple:
    """(dtype of the loss, share of the weights one Adam step changed): Adam moves every weight
    whose gradient is not zero, so the share is the share of gradients that did not flush."""
    keras.utils.set_random_seed(0)
    model = build_charrnn(config)
    before = [w.numpy().copy() for w in model.trainable_variables]
    optimizer = build_optimizer(RunConfig(mixed_precision=mixed, learning_rate=1e-3), model)
    # The loss is averaged over the global batch (4 workers x 64 sequences): the smaller each
    # replica's share, the smaller its float16 gradients.
    task = SimpleNamespace(per_example_loss=per_example_loss, global_batch_size=256)
    loss = tf.function(lambda x, y: gradient_step(model, optimizer, task, x, y))(*batch)
    changed = sum(int((w.numpy() != b).sum()) for w, b in zip(model.trainable_variables, before,
                                                                strict=True))
    return loss.dtype, changed / sum(b.size for b in before), model


def test_mixed_precision_step_keeps_float32_loss_and_no_gradient_flushes(mixed_precision):
    config = CharRNNConfig(vocab_size=VOCAB.size, lstm_size=64, num_layers=2)
    rng = np.random.default_rng(0)
    batch = [tf.constant(rng.integers(0, VOCAB.size, (16, 30)), tf.int32) for _ in range(2)]
    loss_dtype, changed, model = changed_fraction_after_one_step(True, config, batch)
    assert model.get_layer("rnn_0").compute_dtype == "float16"
    assert model(batch[0]).dtype == tf.float32 and loss_dtype == tf.float32
    assert all(w.dtype == "float32" for w in model.trainable_variables)
    assert changed > 0.999
    # What the loss scaling prevents: the same step unscaled (plain Adam, as the loop had it)
    # leaves a sizeable share of the weights unmoved (measured: 18%).
    _, changed_unscaled, _ = changed_fraction_after_one_step(False, config, batch)
    assert changed_unscaled < 0.95


def test_mixed_precision_checkpoint_serves_with_either_runner(tmp_path, mixed_precision):
    config = CharRNNConfig(vocab_size=VOCAB.size, cell="lstm", lstm_size=16, num_layers=2,
                           use_embedding=True, embedding_size=8)
    trained = build_charrnn(config)
    rng = np.random.default_rng(3)
    for weight in trained.weights:
        weight.assign(rng.normal(0, 0.4, weight.shape).astype(np.float32))
    ids = rng.integers(0, VOCAB.size, (3, 10)).astype(np.int32)
    mixed_logits = np.asarray(trained(ids, training=False))
    trained.save_weights(os.path.join(tmp_path, WEIGHTS_FILE))  # saved under mixed_float16
    write_json(tmp_path, CONFIG_FILE, {"kind": "charrnn", "model": dataclasses.asdict(config)})
    (tmp_path / VOCAB_FILE).write_text(VOCAB.to_json(), encoding="utf-8")

    keras.mixed_precision.set_global_policy("float32")  # as in a serving replica
    served, _, vocab = load_charrnn(str(tmp_path))
    assert vocab == VOCAB
    for loaded, saved in zip(served.weights, trained.weights, strict=True):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())  # float32 both sides
    float32_logits = np.asarray(served(ids, training=False))
    runners = [StepRunner.from_model(served, config),
               TFStepRunner.from_model(served, config, jit_compile=False),
               TFStepRunner.from_model(served, config, jit_compile=True)]
    for runner in runners:
        runner.allocate(4)
    slots = np.array([3, 0, 1])
    for t in range(ids.shape[1]):
        numpy_logits, *tf_logits = [runner.step(slots, ids[:, t]) for runner in runners]
        np.testing.assert_allclose(numpy_logits, float32_logits[:, t], atol=1e-4)
        np.testing.assert_allclose(numpy_logits, mixed_logits[:, t], atol=3e-2)  # float16 math
        for logits in tf_logits:
            np.testing.assert_allclose(logits, numpy_logits, rtol=1e-5, atol=1e-5)
