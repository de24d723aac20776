"""The Generator's stream pacing on a real engine (no Ray): after the first chunk, at most one
chunk per interval, and the same text as the unpaced answer; a replica's streams together
within their chunk budget."""

import time

from deployments.stream_pacing import ChunkBudget, merged
from models.config import SampleConfig
from tests.unit.test_engine import run


class SlowRunner:
    """The tiny model's runner, 1 ms a step: the engine then delivers a chunk every few
    characters, as a loaded replica does."""

    def __init__(self, runner):
        self.runner = runner

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def step(self, slots, ids):
        time.sleep(0.001)
        return self.runner.step(slots, ids)


def stream(engine, sample: SampleConfig, interval: float):
    async def chunks():
        budget = ChunkBudget(interval, 0)
        return [chunk async for _, chunk in merged([engine.submit(sample)], budget) if chunk]
    return chunks()


def test_paced_streams_send_fewer_chunks_of_the_same_text(runner_factory):
    sample = SampleConfig(prime="ab", max_length=300, seed=3)

    async def go(engine):
        reference = await engine.submit(sample).result()
        unpaced = await stream(engine, sample, 0.0)
        started = time.perf_counter()
        paced = await stream(engine, sample, 0.05)
        return reference, unpaced, paced, time.perf_counter() - started

    reference, unpaced, paced, seconds = run(go, lambda: SlowRunner(runner_factory()))
    assert "".join(unpaced) == "".join(paced) == reference
    assert len(paced) <= seconds / 0.05 + 2  # the first at once, then one per interval
    assert len(paced) < len(unpaced)


def test_several_paced_streams_each_end(runner_factory):
    samples = [SampleConfig(prime="a", max_length=60, seed=s) for s in range(3)]

    async def go(engine):
        references = [await engine.submit(s).result() for s in samples]
        texts, ended = ["", "", ""], []
        async for index, chunk in merged([engine.submit(s) for s in samples],
                                         ChunkBudget(0.02, 0)):
            if chunk is None:
                ended.append(index)
            else:
                texts[index] += chunk
        return references, texts, ended

    references, texts, ended = run(go, lambda: SlowRunner(runner_factory()))
    assert texts == references
    assert sorted(ended) == [0, 1, 2]


def test_a_replicas_open_streams_share_its_chunk_budget(runner_factory):
    """Eight streams open on a budget of 40 chunks a second: each stream's interval is 0.2 s
    rather than the 0.01 s minimum, so together they send ~40 chunks a second, not ~800."""
    samples = [SampleConfig(prime="a", max_length=400, seed=s) for s in range(8)]
    budget = ChunkBudget(0.01, 40)

    async def go(engine):
        references = [await engine.submit(s).result() for s in samples]
        budget.opened(len(samples))
        assert budget.interval() == 8 / 40
        started = time.perf_counter()
        texts, chunks = [""] * 8, 0
        async for index, chunk in merged([engine.submit(s) for s in samples], budget):
            if chunk is not None:
                texts[index] += chunk
                chunks += 1
        budget.closed(len(samples))
        return references, texts, chunks, time.perf_counter() - started

    references, texts, chunks, seconds = run(go, lambda: SlowRunner(runner_factory()))
    assert texts == references
    assert seconds > 0.4  # long enough for the bound to show (400 steps of >= 1 ms)
    assert chunks <= 40 * seconds + 8 + 8  # the budget's, the first of each, the last of each
    assert budget.interval() == 0.01  # every stream closed: back to the minimum
