"""How often a Generator replica's streams send a chunk.

Every chunk costs a hop from the Generator to the ingress and one to the proxy, and a wake-up
of each, whatever its size; a chunk that arrives alone costs them more than several that come
together. So a stream's first chunk goes out at once (time to first character), and after that
the text sampled meanwhile goes out together, at most one chunk per interval, on ticks every
stream of the replica shares. The interval is `min_interval_s` while few streams are open, and
grows with the replica's open streams so that together they send at most `chunks_per_s`
chunks a second: the CPU that chunks cost the path is bounded however many streams a replica
holds, and a loaded replica's text goes out in fewer, larger pieces instead of leaving less of
the machine for sampling.
"""

from __future__ import annotations

import asyncio
import math


class ChunkBudget:
    """The interval between a stream's chunks, shared by the streams of one replica."""

    def __init__(self, min_interval_s: float, chunks_per_s: float):
        """`chunks_per_s`: the replica's streams' chunks a second at most, together (0: no
        budget, every stream at `min_interval_s`)."""
        self.min_interval_s = min_interval_s
        self.chunks_per_s = chunks_per_s
        self.open_streams = 0

    def interval(self) -> float:
        if not self.chunks_per_s:
            return self.min_interval_s
        return max(self.min_interval_s, self.open_streams / self.chunks_per_s)

    def opened(self, count: int) -> None:
        self.open_streams += count

    def closed(self, count: int) -> None:
        self.open_streams -= count


async def paced(handle, budget: ChunkBudget):
    """The handle's text, the first chunk at once and then at most one chunk per tick of the
    budget's interval (the handle joins what was sampled meanwhile). The ticks are the
    multiples of the interval on the loop's clock, the same for every stream of the replica,
    so their chunks leave together and the ingress and the proxy take them in fewer wake-ups
    (measured: BENCHMARKS.md, end to end, stop 20)."""
    loop = asyncio.get_running_loop()
    sent_at = None
    while True:
        interval = budget.interval()
        if sent_at is not None and interval > 0:
            await asyncio.sleep((math.floor(sent_at / interval) + 1) * interval - loop.time())
        try:
            chunk = await handle.__anext__()
        except StopAsyncIteration:
            return
        sent_at = loop.time()
        yield chunk


async def merged(handles, budget: ChunkBudget):
    """(index, chunk) from several handles as chunks arrive (each paced by `budget`), then
    (index, None) as each ends. The caller counts them in the budget's open streams."""
    if len(handles) == 1:  # the common case, without a task and a queue in between
        async for chunk in paced(handles[0], budget):
            yield 0, chunk
        yield 0, None
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index, handle):
        async for chunk in paced(handle, budget):
            await queue.put((index, chunk))
        await queue.put((index, None))

    pumps = [asyncio.ensure_future(pump(i, h)) for i, h in enumerate(handles)]
    ended = 0
    try:
        while ended < len(handles):
            index, chunk = await queue.get()
            ended += chunk is None
            yield index, chunk
    finally:
        for task in pumps:
            task.cancel()
