"""The engine's top_p, stop strings and logprobs (what /v1/completions asks of it), no Ray."""

import asyncio

import numpy as np
import pytest

from models.config import SampleConfig, parse_config
from sampling.stops import release_held
from tests.unit.test_engine import run

# ---- release_held ------------------------------------------------------------------------


@pytest.mark.parametrize("held, stops, expected", [
    ("abc", ("x",), (3, False)),             # nothing can start a stop string: all out
    ("ab", ("bc",), (1, False)),             # "b" may grow into "bc": held back
    ("abc", ("bc",), (1, True)),             # "bc" completed: "a" out, "bc" dropped
    ("ab", ("ab", "b"), (0, True)),          # both end here; the longer starts first
    ("aaa", ("aaab",), (0, False)),          # the whole tail is still a prefix
    ("xaab", ("aaab",), (4, False)),         # "aab" is no prefix of it: all out
    ("", ("a",), (0, False)),
])
def test_release_held(held, stops, expected):
    assert release_held(held, stops) == expected


def test_stop_strings_are_bounded_where_they_are_defined():
    with pytest.raises(ValueError, match="at most 4"):
        SampleConfig(stop=("a", "b", "c", "d", "e"))
    with pytest.raises(ValueError, match="1 to 64"):
        SampleConfig(stop=("",))
    assert parse_config(SampleConfig, {"stop": "\n\n"}).stop == ("\n\n",)
    assert parse_config(SampleConfig, {"stop": ["a", "bc"]}).stop == ("a", "bc")


# ---- the engine ----------------------------------------------------------------------------


def _text(runner_factory, **sample):
    return run(lambda e: e.submit(SampleConfig(**sample)).result(), runner_factory)


def test_a_stop_string_ends_the_text_before_it_and_frees_the_slot(runner_factory):
    free = _text(runner_factory, prime="ab", max_length=300, seed=7)
    stop = next(free[i:i + 2] for i in range(20, len(free) - 1) if free[i:i + 2].strip())
    cut = free.index(stop)

    async def go(engine):
        stopped = engine.submit(SampleConfig(prime="ab", max_length=300, seed=7, stop=(stop,)))
        queued = engine.submit(SampleConfig(max_length=5))  # waits for the one slot
        text = await stopped.result()
        return stopped, text, await asyncio.wait_for(queued.result(), 5)

    stopped, text, queued = run(go, runner_factory, max_batch=1)
    assert text == free[:cut] and stopped.reason == "stop"
    assert stopped.sequence.generated == cut + len(stop)  # retired at once, not at 300
    assert len(queued) == 5


def test_streamed_text_with_stop_strings_is_the_whole_text(runner_factory):
    """Held-back characters are never taken back: the chunks add up to the answer."""
    sample = SampleConfig(prime="a", max_length=400, seed=3, stop=("ha", "zzz", "e e"))

    async def go(engine):
        chunks = [c async for c in engine.submit(sample)]
        return chunks, await engine.submit(sample).result()

    chunks, text = run(go, runner_factory)
    assert "".join(chunks) == text
    assert not any(s in text for s in sample.stop)


def test_at_the_length_held_back_text_is_delivered(runner_factory):
    free = _text(runner_factory, prime="ab", max_length=40, seed=11)
    # A stop string that starts with the last character but never completes.
    held = _text(runner_factory, prime="ab", max_length=40, seed=11, stop=(free[-1] + "☃",))
    assert held == free


def test_same_seed_same_text_with_top_p_and_stops_whatever_shares_the_batch(runner_factory):
    request = SampleConfig(prime="abc", max_length=60, top_p=0.7, seed=5, stop=("hh",))

    async def crowded(engine):
        others = [engine.submit(SampleConfig(prime="h", max_length=n, seed=n, top_p=0.3))
                  for n in (5, 80)]
        text = await engine.submit(request).result()
        await asyncio.gather(*(o.result() for o in others))
        return text

    assert run(lambda e: e.submit(request).result(), runner_factory) == run(crowded,
                                                                           runner_factory)


def test_top_p_narrows_the_choice(runner_factory):
    """A tiny nucleus is the most likely character alone: greedy, like top_k=1."""
    greedy = _text(runner_factory, prime="abc", max_length=30, top_k=1)
    assert _text(runner_factory, prime="abc", max_length=30, top_p=0.0, seed=1) == greedy
    assert _text(runner_factory, prime="abc", max_length=30, top_p=1e-9, seed=2) == greedy
    assert _text(runner_factory, prime="abc", max_length=60, top_p=0.9, seed=3) != \
        _text(runner_factory, prime="abc", max_length=60, top_p=0.9, seed=4)


def test_logprobs_per_character_with_the_top_alternatives(runner_factory):
    async def go(engine):
        handle = engine.submit(SampleConfig(prime="ab", max_length=25, seed=2, logprobs=3))
        return handle, await handle.result()

    handle, text = run(go, runner_factory)
    assert len(handle.logprobs) == len(text) == 25
    for char, (chosen, top) in zip(text, handle.logprobs, strict=True):
        assert len(top) == 3 and chosen <= 0
        values = [lp for _, lp in top]
        assert values == sorted(values, reverse=True)
        assert sum(np.exp(values)) <= 1 + 1e-9
        assert chosen <= values[0] + 1e-12
        if char in dict(top):
            assert dict(top)[char] == pytest.approx(chosen)
    greedy = run(lambda e: _logprobs_of(e, SampleConfig(prime="ab", max_length=10, top_k=1,
                                                        logprobs=1)), runner_factory)
    # Greedy picks the most likely character, so it is its own top-1 alternative.
    assert all(top[0][1] == pytest.approx(chosen) for chosen, top in greedy)


async def _logprobs_of(engine, sample):
    handle = engine.submit(sample)
    await handle.result()
    return handle.logprobs


def test_no_logprobs_unless_asked(runner_factory):
    async def go(engine):
        handle = engine.submit(SampleConfig(max_length=10))
        await handle.result()
        return handle.logprobs

    assert run(go, runner_factory) == []


def test_stopped_text_keeps_its_logprobs_aligned(runner_factory):
    free = _text(runner_factory, prime="ab", max_length=200, seed=9)
    stop = free[30:32]

    async def go(engine):
        handle = engine.submit(SampleConfig(prime="ab", max_length=200, seed=9, stop=(stop,),
                                            logprobs=0))
        return handle, await handle.result()

    handle, text = run(go, runner_factory)
    assert handle.reason == "stop" and len(handle.logprobs) == len(text) == free.index(stop)
