"""The TensorFlow step runner computes what the NumPy runner computes (real TF, on the CPU):
same logits step by step while sequences join and leave, same sampled text through the engine."""

import asyncio

import numpy as np
import pytest

from models.charrnn import build_charrnn
from models.config import CharRNNConfig, SampleConfig
from models.runner import StepRunner
from models.tf_runner import TFStepRunner, bucket_size
from models.vocab import Vocab
from sampling import SamplingEngine

SLOTS = 9  # buckets 1, 2, 4, 8, 16: the batches below cross every boundary


def random_model(config: CharRNNConfig, seed: int = 0):
    model = build_charrnn(config)
    rng = np.random.default_rng(seed)
    for weight in model.weights:  # non-zero biases too, so every term is checked
        weight.assign(rng.normal(0, 0.4, weight.shape).astype(np.float32))
    return model


def join_and_leave_schedule(rng: np.random.Generator, steps: int = 24):
    """(slots to reset, active slots, ids) per step: batch sizes 1..SLOTS in a shuffled order,
    different subsets each time, and slots restarting (reset) now and then."""
    sizes = rng.permutation(np.resize(np.arange(1, SLOTS + 1), steps))
    for size in sizes:
        active = rng.choice(SLOTS, size, replace=False)
        restarted = [int(slot) for slot in active if rng.random() < 0.15]
        yield restarted, active, rng.integers(0, 23, size)


def test_bucket_sizes_are_powers_of_two():
    assert [bucket_size(n) for n in (1, 2, 3, 4, 5, 8, 9, 1000, 1024)] == [
        1, 2, 4, 4, 8, 8, 16, 1024, 1024]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("use_embedding", [False, True], ids=["one_hot", "embedding"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_tf_runner_matches_numpy_runner(cell, use_embedding, jit_compile):
    config = CharRNNConfig(vocab_size=23, cell=cell, num_layers=2, lstm_size=16,
                           use_embedding=use_embedding, embedding_size=8)
    model = random_model(config)
    numpy_runner = StepRunner.from_model(model, config)
    tf_runner = TFStepRunner.from_model(model, config, jit_compile=jit_compile)
    numpy_runner.allocate(SLOTS)
    tf_runner.allocate(SLOTS)
    used = set()
    for restarted, active, ids in join_and_leave_schedule(np.random.default_rng(1)):
        for slot in restarted:
            numpy_runner.reset(slot)
            tf_runner.reset(slot)
        expected = numpy_runner.step(active, ids)
        np.testing.assert_allclose(tf_runner.step(active, ids), expected, rtol=1e-5, atol=1e-5)
        used.update(int(slot) for slot in active)
    assert tf_runner.vocab_size == 23 and tf_runner.flops_per_char() == numpy_runner.flops_per_char()
    # Pad rows only ever touched the scratch row: every slot's state is the NumPy runner's.
    state = tf_runner.state.numpy()[:SLOTS]
    expected_state = np.concatenate([part for parts in numpy_runner.state for part in parts], 1)
    np.testing.assert_allclose(state, expected_state, rtol=1e-5, atol=1e-5)
    assert used  # the schedule did run steps


@pytest.mark.parametrize("use_embedding", [False, True], ids=["one_hot", "embedding"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_prefill_is_the_steps_of_one_sequence_on_either_runner(cell, use_embedding):
    """A prefill of many ids gives the logits and state of feeding them one step at a time,
    in a slot whose neighbours run batched steps in between."""
    config = CharRNNConfig(vocab_size=23, cell=cell, num_layers=2, lstm_size=16,
                           use_embedding=use_embedding, embedding_size=8)
    model = random_model(config)
    stepped, numpy_runner = StepRunner.from_model(model, config), StepRunner.from_model(model,
                                                                                         config)
    tf_runner = TFStepRunner.from_model(model, config)
    rng = np.random.default_rng(3)
    for runner in (stepped, numpy_runner, tf_runner):
        runner.allocate(SLOTS)
    for chunk in (rng.integers(0, 23, 17), rng.integers(0, 23, 1), rng.integers(0, 23, 9)):
        expected = np.concatenate([stepped.step(np.array([4]), chunk[i:i + 1])
                                   for i in range(len(chunk))])
        np.testing.assert_allclose(numpy_runner.prefill(4, chunk), expected, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(tf_runner.prefill(4, chunk), expected, rtol=1e-5, atol=1e-5)
        neighbours, ids = np.array([0, 5, 8]), rng.integers(0, 23, 3)
        expected = stepped.step(neighbours, ids)
        np.testing.assert_allclose(numpy_runner.step(neighbours, ids), expected, rtol=1e-5)
        np.testing.assert_allclose(tf_runner.step(neighbours, ids), expected, rtol=1e-5,
                                   atol=1e-5)
    assert tf_runner._prefill.experimental_get_tracing_count() == 1


def test_step_is_traced_once_for_every_batch_size():
    config = CharRNNConfig(vocab_size=23, lstm_size=8, num_layers=1)
    runner = TFStepRunner.from_model(random_model(config), config)
    runner.allocate(SLOTS)
    for size in range(1, SLOTS + 1):
        runner.step(np.arange(size), np.ones(size, np.int64))
    assert runner._step.experimental_get_tracing_count() == 1


VOCAB = Vocab.from_text("abcdefgh \n", 100)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_engine_gives_the_same_text_with_either_runner(cell):
    """Seeded requests of different lengths sharing a small batch (so they join and leave
    mid-way, and the batch size crosses bucket boundaries) sample identical text."""
    config = CharRNNConfig(vocab_size=VOCAB.size, cell=cell, lstm_size=16, num_layers=2)
    model = random_model(config, seed=2)
    requests = [SampleConfig(prime=prime, max_length=length, temperature=0.9, top_k=top_k,
                             seed=seed)
                for seed, (prime, length, top_k) in enumerate(
                    [("ab", 40, 0), ("h", 7, 5), ("", 25, 3), ("cab", 60, 0), ("g", 3, 0),
                     ("fe", 33, 4), ("a", 18, 0)])]

    def texts(runner):
        async def main():
            engine = SamplingEngine(runner, VOCAB, max_batch=5)
            loop = asyncio.create_task(engine.run())
            handles = [engine.submit(request) for request in requests]
            result = [await handle.result() for handle in handles]
            engine.close()
            await asyncio.wait_for(loop, 5)
            return result
        return asyncio.run(main())

    numpy_texts = texts(StepRunner.from_model(model, config))
    assert [len(t) for t in numpy_texts] == [r.max_length for r in requests]
    assert texts(TFStepRunner.from_model(model, config)) == numpy_texts
