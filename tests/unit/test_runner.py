"""The host step runners (NumPy, and compiled with numba, its step split over the cores by rows
or by units) reproduce the Keras network step by step (no Ray)."""

import numpy as np
import pytest

from models.charrnn import build_charrnn
from models.compiled_cells import GEMV_ROWS, add_product, tanh_array
from models.compiled_runner import CompiledStepRunner, units_split_pays
from models.config import CharRNNConfig
from models.step_cells import StepWeights
from tests.unit.conftest import HOST_RUNNERS


@pytest.mark.parametrize("build", HOST_RUNNERS.values(), ids=HOST_RUNNERS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("use_embedding", [False, True])
def test_runner_matches_keras_logits(build, cell, use_embedding):
    config = CharRNNConfig(vocab_size=23, cell=cell, num_layers=2, lstm_size=16,
                           use_embedding=use_embedding, embedding_size=8)
    model = build_charrnn(config)
    rng = np.random.default_rng(0)
    for weight in model.weights:  # non-zero biases too, so every term is checked
        weight.assign(rng.normal(0, 0.3, weight.shape).astype(np.float32))
    ids = rng.integers(0, 23, size=(3, 12)).astype(np.int32)
    expected = np.asarray(model(ids, training=False))

    runner = build(model, config)
    runner.allocate(5)
    slots = np.array([4, 0, 2])  # arbitrary slots: rows must not mix
    for t in range(ids.shape[1]):
        logits = runner.step(slots, ids[:, t])
        np.testing.assert_allclose(logits, expected[:, t], atol=1e-4)

    # A long prime through `prefill` ends in the state the steps reach, with their logits.
    runner.allocate(5)
    prefilled = runner.prefill(3, ids[0])
    np.testing.assert_allclose(prefilled, expected[0], atol=1e-4)
    sequence = list(ids[0])
    for char_id in rng.integers(0, 23, size=4):  # then single steps go on from that state
        sequence.append(char_id)
        expected_next = np.asarray(model(np.array([sequence]), training=False))[0, -1]
        np.testing.assert_allclose(runner.step(np.array([3]), np.array([char_id]))[0],
                                   expected_next, atol=1e-4)


@pytest.mark.parametrize("build", HOST_RUNNERS.values(), ids=HOST_RUNNERS)
def test_reset_clears_only_that_slot(build):
    config = CharRNNConfig(vocab_size=10, lstm_size=8, num_layers=1)
    runner = build(build_charrnn(config), config)
    runner.allocate(2)
    slots, ids = np.array([0, 1]), np.array([3, 4])
    first = runner.step(slots, ids)
    runner.reset(0)
    again = runner.step(slots, ids)
    np.testing.assert_array_equal(again[0], first[0])  # slot 0 starts over from zero state
    assert not np.allclose(again[1], first[1])  # slot 1 went on from its state


@pytest.mark.parametrize("split_units", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_batch_split_over_the_cores_gives_each_row_its_own_sequence(split_units, cell):
    """The compiled step spreads a large batch over the cores (by rows, or by units), a lone
    row runs on the calling thread alone: each row's logits are those of the same sequence
    stepped alone."""
    config = CharRNNConfig(vocab_size=30, lstm_size=32, num_layers=2, cell=cell)
    model = build_charrnn(config)
    batched, alone = (CompiledStepRunner.from_model(model, config, split_units=split_units)
                      for _ in range(2))
    batched.allocate(64)
    alone.allocate(64)
    rng = np.random.default_rng(2)
    slots = rng.permutation(64)
    for _ in range(3):
        ids = rng.integers(1, 30, size=64)
        logits = batched.step(slots, ids)
        for row in (0, 31, 32, 63):
            np.testing.assert_allclose(logits[row], alone.step(slots[row:row + 1],
                                                               ids[row:row + 1])[0], atol=1e-6)


def test_only_a_big_model_splits_its_units():
    """By units from 2x256 up (a layer's recurrent weights 1 MiB or more, measured faster at
    every batch size), by rows below, where fused steps gain more (BENCHMARKS.md)."""
    for units, expected in ((128, False), (256, True), (512, True)):
        config = CharRNNConfig(vocab_size=30, lstm_size=units, num_layers=2)
        weights = StepWeights.from_model(build_charrnn(config), config)
        assert units_split_pays(weights, cores=2) == expected
        assert not units_split_pays(weights, cores=1)  # one core: nothing to split
    assert not units_split_pays(weights, cores=3)  # 512 units do not split evenly in three


def test_the_compiled_tanh_is_within_float32_rounding():
    x = np.concatenate([np.linspace(-30, 30, 200_001, dtype=np.float32),
                        np.array([0.0, -0.0, 1e-30, -1e-30, 1e4, -1e4, np.float32(3.4e38)],
                                 np.float32)])
    np.testing.assert_allclose(tanh_array(x), np.tanh(x.astype(np.float64)), rtol=0, atol=3e-7)


@pytest.mark.parametrize("rows", [1, 3, GEMV_ROWS])
@pytest.mark.parametrize("units", [64, 256])
def test_the_compiled_product_is_the_same_as_gemvs_or_one_gemm(rows, units):
    """A product of a few rows runs as a GEMV per row or as one GEMM, whichever the runner
    measured faster at load: the same product either way, within float32 rounding."""
    rng = np.random.default_rng(rows)
    w = rng.standard_normal((units, 4 * units)).astype(np.float32)
    x = rng.standard_normal((rows, units)).astype(np.float32)
    start = rng.standard_normal((rows, 4 * units)).astype(np.float32)
    exact = start + x.astype(np.float64) @ w
    for gemv_rows in (rows, 0):  # GEMVs, then a GEMM
        out = start.copy()
        add_product(x, w, out, gemv_rows)  # accumulates into `out`
        np.testing.assert_allclose(out, exact, rtol=1e-4, atol=1e-3)
