"""The sampling engine on a tiny real model: lengths, seeds, streaming, cancel (no Ray)."""

import asyncio
import threading
import time

import pytest

from models.compiled_runner import CompiledStepRunner
from models.config import SampleConfig
from models.vocab import UNKNOWN
from sampling import QueueFull, SamplingEngine
from sampling import engine as engine_module
from tests.unit.conftest import ENGINE_VOCAB as VOCAB


def fuses_steps(runner) -> bool:
    """Only the compiled runner splitting its rows fuses steps (sampling/fused_steps.py)."""
    return isinstance(runner, CompiledStepRunner) and not runner.splits_units


def run(coroutine_factory, runner_factory, **engine_args):
    async def main():
        engine = SamplingEngine(runner_factory(), VOCAB, **engine_args)
        task = asyncio.create_task(engine.run())
        try:
            return await coroutine_factory(engine)
        finally:
            engine.close()
            await asyncio.wait_for(task, 5)
    return asyncio.run(main())


def test_every_request_gets_exactly_its_length(runner_factory):
    lengths = [1, 7, 30, 3, 64, 2]

    async def go(engine):
        handles = [engine.submit(SampleConfig(prime="ab", max_length=n)) for n in lengths]
        return [await h.result() for h in handles]

    texts = run(go, runner_factory, max_batch=4)
    assert [len(t) for t in texts] == lengths
    assert all(UNKNOWN not in t and set(t) <= set(VOCAB.chars) for t in texts)


@pytest.mark.parametrize("lengths", [(5, 50), tuple(range(5, 65, 5))])
def test_same_seed_same_text_whatever_shares_the_batch(runner_factory, lengths):
    """Two or twelve others in the batch: the compiled runner's products are then GEMVs per
    row or GEMMs, as it measured at load (models/compiled_cells.py: `add_product`), and the rows
    split over the cores."""
    request = SampleConfig(prime="abc", max_length=40, temperature=0.9, top_k=5, seed=123)

    async def alone(engine):
        return await engine.submit(request).result()

    async def crowded(engine):
        others = [engine.submit(SampleConfig(prime="h", max_length=n, seed=n)) for n in lengths]
        text = await engine.submit(request).result()
        await asyncio.gather(*(o.result() for o in others))
        return text

    first = run(alone, runner_factory)
    assert first == run(crowded, runner_factory)
    different = run(lambda e: e.submit(SampleConfig(prime="abc", max_length=40, seed=124))
                    .result(), runner_factory)
    assert different != first


@pytest.mark.parametrize("count", [2, 4])
def test_fused_steps_give_the_text_of_single_steps(runner_factory, monkeypatch, count):
    """The compiled runner runs several sampled steps per call (sampling/fused_steps.py); the
    text for a seed is the one that single steps give, whatever the sampling settings, with
    the rows on one thread (2) or split over the cores (4)."""
    requests = [SampleConfig(prime="ab", max_length=300, seed=seed, temperature=temperature,
                             top_k=top_k, top_p=top_p)
                for seed, temperature, top_k, top_p in [(1, 1.0, 0, 1.0), (2, 0.7, 3, 1.0),
                                                        (3, 1.3, 0, 0.8), (4, 0.9, 5, 0.5)]
                ][:count]

    async def go(engine):
        return await asyncio.gather(*(engine.submit(r).result() for r in requests))

    fused_calls = []
    run_fused = engine_module.run_fused_steps
    monkeypatch.setattr(engine_module, "run_fused_steps",
                        lambda *a: fused_calls.append(a[-1]) or run_fused(*a))
    fused = run(go, runner_factory)
    if not fuses_steps(runner_factory()):
        assert not fused_calls
        return
    # Several steps per call, every one of them fused: the prime's "a" is fed by the prefill
    # before the first call, which feeds its "b" and samples.
    assert max(fused_calls) > 1 and sum(fused_calls) == 300
    monkeypatch.setattr(SamplingEngine, "_fusable", lambda self, batch: False)
    assert run(go, runner_factory) == fused
    assert [len(t) for t in fused] == [300] * count and len(set(fused)) == count


def test_a_grown_batch_gets_fewer_fused_steps_a_call(runner_factory, monkeypatch):
    """The fused steps' pace is measured on the last calls' batch: when 63 sequences join one
    that ran alone, the next call plans its steps as if a step cost 64 times the lone one's,
    rather than running as many steps as fit at the lone pace (each then costing far more)."""
    engine = SamplingEngine(runner_factory(), VOCAB)
    if not fuses_steps(engine.runner):
        return
    calls = []
    run_fused = engine_module.run_fused_steps
    monkeypatch.setattr(engine_module, "run_fused_steps",
                        lambda *a: calls.append((len(a[2]), a[-1])) or run_fused(*a))
    engine.submit(SampleConfig(max_length=5000, seed=1))
    for _ in range(20):
        engine.step()
    lone_pace = engine._fused_pace
    assert calls[-1][0] == 1 and calls[-1][1] > 1 and lone_pace > 0
    for seed in range(2, 65):
        engine.submit(SampleConfig(max_length=5000, seed=seed))
    engine.step()
    rows, steps = calls[-1]
    assert rows == 64
    assert steps == max(1, int(engine_module.FUSED_CALL_SECONDS / (lone_pace * 64)))
    assert steps < calls[-2][1]  # where the lone pace would have run as many as before
    engine.close()


def test_a_worker_kept_off_the_cores_still_runs_long_fused_calls(runner_factory, monkeypatch):
    """On cores shared with busier processes the worker waits to run; the fused steps' pace is
    the steps' own CPU time, so such waits (here a sleep inside each call) do not cut the calls
    down to a step or two, each paying the engine's Python again. Paced by the clock, 20 ms
    off the cores per call shrinks them to one step within a few calls."""
    engine = SamplingEngine(runner_factory(), VOCAB)
    if not fuses_steps(engine.runner):
        return
    calls = []
    run_fused = engine_module.run_fused_steps

    def descheduled(*arguments):
        time.sleep(0.02)  # off the cores, as a worker in the run queue
        calls.append(arguments[-1])
        return run_fused(*arguments)

    monkeypatch.setattr(engine_module, "run_fused_steps", descheduled)
    calls_made = 30
    # Longer than the calls can reach: the last one is not cut short by the sequence's end.
    engine.submit(SampleConfig(max_length=calls_made * engine_module.MAX_FUSED_STEPS + 1, seed=1))
    for _ in range(calls_made):
        engine.step()
    # The tiny model's step takes microseconds of CPU: once the pace has settled (a moving
    # average), each call is about as long as calls may be.
    assert min(calls[-4:]) >= engine_module.MAX_FUSED_STEPS // 2
    engine.close()


def test_streamed_chunks_concatenate_to_the_text(runner_factory):
    async def go(engine):
        chunks = [c async for c in engine.submit(SampleConfig(max_length=50, seed=5))]
        return chunks, await engine.submit(SampleConfig(max_length=50, seed=5)).result()

    chunks, text = run(go, runner_factory)
    assert len(chunks) >= 1 and "".join(chunks) == text and len(text) == 50


def test_cancel_frees_the_slot_for_a_waiting_request(runner_factory):
    async def go(engine):
        long = engine.submit(SampleConfig(max_length=10_000))
        queued = engine.submit(SampleConfig(max_length=5))
        async for _ in long:
            long.cancel()  # the client went away after its first chunk
            break
        text = await asyncio.wait_for(queued.result(), 5)
        await long.result()
        return long, text

    long, text = run(go, runner_factory, max_batch=1)
    assert long.reason == "cancelled" and long.sequence.generated < 10_000
    assert len(text) == 5


def test_the_worker_thread_ends_with_the_engine_and_the_loop_stays_responsive(runner_factory):
    """Steps run on the engine's own thread: while it generates, the event loop still gets
    its turns (a ticker keeps ticking), and after close() both run() and the thread end."""
    def workers():
        return {t for t in threading.enumerate() if t.name == "sampling-engine"}

    async def main():
        engine = SamplingEngine(runner_factory(), VOCAB, max_batch=8)
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(0)  # run() starts its worker
        mine = workers() - before
        ticks = []

        async def ticker():
            while True:
                ticks.append(asyncio.get_running_loop().time())
                await asyncio.sleep(0.001)

        ticking = asyncio.create_task(ticker())
        handles = [engine.submit(SampleConfig(max_length=10_000, seed=i)) for i in range(8)]
        texts = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 30)
        ticking.cancel()
        engine.close()
        await asyncio.wait_for(task, 5)
        return texts, ticks, mine

    before = workers()
    texts, ticks, mine = asyncio.run(main())
    assert [len(t) for t in texts] == [10_000] * 8
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) > 20 and max(gaps) < 0.5  # never shut out for a long stretch
    assert len(mine) == 1
    for thread in mine:
        thread.join(5)
        assert not thread.is_alive()


def test_deadline_stops_a_request(runner_factory):
    async def go(engine):
        # Short: the compiled runner's fused steps make this tiny model's 10,000 characters
        # in ~50 ms.
        handle = engine.submit(SampleConfig(max_length=10_000), deadline_s=0.005)
        text = await handle.result()
        return handle, text

    handle, text = run(go, runner_factory)
    assert handle.reason == "deadline" and len(text) < 10_000


def test_unknown_prime_chars_are_accepted_and_top_k_1_is_greedy(runner_factory):
    async def go(engine):
        a = await engine.submit(SampleConfig(prime="xyz☃", max_length=20, top_k=1)).result()
        b = await engine.submit(SampleConfig(prime="xyz☃", max_length=20, top_k=1, seed=9)).result()
        return a, b

    a, b = run(go, runner_factory)
    assert len(a) == 20 and a == b  # greedy decoding ignores the seed


def test_full_queue_is_refused(runner_factory):
    async def go(engine):
        # No await between the two: the engine loop has not admitted the first one yet.
        engine.submit(SampleConfig(max_length=5))
        with pytest.raises(QueueFull):
            engine.submit(SampleConfig(max_length=5))
        return True

    assert run(go, runner_factory, max_batch=1, max_waiting=1)


def test_a_failing_step_ends_its_requests_and_the_engine_serves_on(runner_factory):
    finished = []

    class FlakyRunner:
        """Wraps the real runner; its next step raises once (say, out of memory)."""

        def __init__(self, runner):
            self.runner, self.fail_next = runner, False

        def __getattr__(self, name):
            return getattr(self.runner, name)

        def step(self, slots, ids):
            if self.fail_next:
                self.fail_next = False
                raise MemoryError("simulated")
            return self.runner.step(slots, ids)

    flaky = FlakyRunner(runner_factory())

    async def go(engine):
        flaky.fail_next = True
        broken = engine.submit(SampleConfig(max_length=30))
        await asyncio.wait_for(broken.result(), 5)
        after = await asyncio.wait_for(engine.submit(SampleConfig(max_length=30)).result(), 5)
        return broken, after

    broken, after = run(go, lambda: flaky, on_finish=finished.append)
    assert broken.reason == "error" and len(after) == 30
    assert finished == ["error", "length"]



def test_a_failing_delivery_ends_every_request_with_an_error_and_the_engine_serves_on(
        runner_factory, monkeypatch):
    finished = []

    async def go(engine):
        real_deliver, failed = engine.deliver, []

        def deliver_failing_once():
            if not failed:
                failed.append(True)
                raise RuntimeError("simulated")
            real_deliver()
        monkeypatch.setattr(engine, "deliver", deliver_failing_once)
        broken = [engine.submit(SampleConfig(max_length=30, seed=i)) for i in range(3)]
        await asyncio.wait_for(asyncio.gather(*(h.result() for h in broken)), 5)
        after = await asyncio.wait_for(engine.submit(SampleConfig(max_length=30)).result(), 5)
        return broken, after, engine

    broken, after, engine = run(go, runner_factory, on_finish=finished.append)
    assert [handle.reason for handle in broken] == ["error"] * 3
    assert len(after) == 30 and finished == ["error"] * 3 + ["length"]
    assert engine.handles == {}  # nothing of the failed delivery left behind

LONG_PRIME = ("abc defgh \n" * 40)[:400]


@pytest.mark.parametrize("prefill_chars", [0, 7, 1000], ids=["off", "budget", "whole"])
def test_a_long_prime_gives_the_same_text_with_prefill_off_or_on(runner_factory, prefill_chars):
    """Prefill outside the shared step changes when prime characters are fed, not what
    follows from them, whatever else reads a prime or generates alongside."""
    request = SampleConfig(prime=LONG_PRIME, max_length=40, temperature=0.9, seed=8, logprobs=2)

    async def crowded(engine):
        others = [engine.submit(SampleConfig(prime=LONG_PRIME[:n], max_length=30, seed=n))
                  for n in (1, 5, 90)]
        handle = engine.submit(request)
        text = await handle.result()
        return text, handle.prompt_logprobs, await asyncio.gather(*(o.result() for o in others))

    alone = run(lambda e: e.submit(request).result(), runner_factory, prefill_chars=0)
    text, prompt_logprobs, others = run(crowded, runner_factory, prefill_chars=prefill_chars)
    assert text == alone
    assert len(prompt_logprobs) == len(LONG_PRIME) and prompt_logprobs[0] is None
    _, expected_logprobs, expected_others = run(crowded, runner_factory, prefill_chars=0)
    assert others == expected_others
    for entry, (chosen, top) in zip(prompt_logprobs[1:], expected_logprobs[1:], strict=True):
        assert entry[0] == pytest.approx(chosen, abs=1e-5) and len(entry[1]) == len(top) == 2


def test_a_cancelled_prefill_stops_within_one_step(runner_factory):
    """Each step feeds at most `prefill_chars` prime characters: a request cancelled while
    reading a long prime costs no more than that one step."""
    fed = []
    runner = runner_factory()
    prefill = runner.prefill
    runner.prefill = lambda slot, ids: fed.append(len(ids)) or prefill(slot, ids)

    async def go():
        engine = SamplingEngine(runner, VOCAB, prefill_chars=16)
        handle = engine.submit(SampleConfig(prime=LONG_PRIME, max_length=5))
        engine.step()
        handle.cancel()
        engine.step()
        engine.deliver()
        return handle, await handle.result()

    handle, text = asyncio.run(go())
    assert fed == [16] and handle.reason == "cancelled" and text == ""


def test_a_step_slower_than_a_hop_still_hands_over_every_few_steps(runner_factory):
    """A big model's step at a full batch takes about a hop: the worker still hands its text
    to the event loop only every MIN_HOP_STEPS steps, since each delivery shares the cores with
    the next step (sampling/engine.py)."""
    runner = runner_factory()

    class SlowRunner:
        def __getattr__(self, name):
            return getattr(runner, name)

        def step(self, slots, ids):
            threading.Event().wait(1.5 * engine_module.HOP_SECONDS)
            return runner.step(slots, ids)

    async def go(engine):
        deliveries, deliver = [], engine.deliver

        def counted():
            deliveries.append(1)
            deliver()

        engine.deliver = counted
        text = await engine.submit(SampleConfig(prime="a", max_length=24)).result()
        return text, len(deliveries)

    text, deliveries = run(go, SlowRunner)
    assert len(text) == 24
    # A hand-off per step would be 24; a hop of MIN_HOP_STEPS steps gives 24 / MIN_HOP_STEPS,
    # and the end one more.
    bound = 24 // engine_module.MIN_HOP_STEPS + 2
    assert bound < 24 and deliveries <= bound
