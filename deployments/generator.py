"""Generator deployment: multiplexed char-RNN models, each with a continuous-batching engine.

A replica keeps up to `max_models_per_replica` models loaded (LRU, via @serve.multiplexed);
the ingress routes each request with the version's model id (`name:version@digest`, never
reused), so requests for one model land on replicas that already hold it. Each loaded model
owns a SamplingEngine whose loop runs one batched step for every active sequence of that
model; this class only adapts the engine to Serve (requests, streaming, metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve

from deployments.errors import Overloaded
from deployments.metrics import GeneratorMetrics
from deployments.model_cache import LoadedModels, model_tags
from deployments.stream_pacing import ChunkBudget, merged
from models.artifacts import load_charrnn
from models.config import SampleConfig
from models.devices import enable_gpu_memory_growth
from models.runner_choice import build_runner
from registry import Registry, Settings
from sampling import QueueFull, SamplingEngine

logger = logging.getLogger("ray.serve")


@serve.deployment
class Generator:
    def __init__(self, settings: dict, max_models_per_replica: int, max_batch: int,
                 max_waiting: int, generation_timeout_s: float, runner: str,
                 stream_interval_s: float, stream_chunks_per_s: float, prefill_chars: int):
        """The engine settings' defaults live in `deployments.app.AppArgs`."""
        enable_gpu_memory_growth()
        self.registry = Registry(Settings.from_env(**settings))
        self.max_batch, self.max_waiting = max_batch, max_waiting
        self.chunk_budget = ChunkBudget(stream_interval_s, stream_chunks_per_s)
        self.prefill_chars = prefill_chars
        self.runner_setting = runner  # auto: models/runner_choice.py
        self.generation_timeout_s = generation_timeout_s
        self.metrics = GeneratorMetrics()
        self.engines = LoadedModels(self.registry, self._start_engine, SamplingEngine.close)
        self._engine_loops: set[asyncio.Task] = set()
        self._forget_task = asyncio.get_event_loop().create_task(self.engines.forget_deleted())

        async def load(model_id: str):
            return await self.engines.load(model_id)

        # Decorated here (not on the class) so the cache size comes from serve_config.yaml.
        self.get_model = serve.multiplexed(max_num_models_per_replica=max_models_per_replica)(load)

    async def _start_engine(self, model_id: str, directory: str) -> SamplingEngine:
        """A model's engine, its loop running until the engine is closed (on release, the
        sequences already admitted finish first: an evicted model fails no request)."""
        started = time.perf_counter()
        tags = model_tags(model_id)
        model, config, vocab = await asyncio.to_thread(load_charrnn, directory)
        runner = await asyncio.to_thread(build_runner, model, config, self.runner_setting)
        # Off the event loop too: the TF runner compiles its step for every batch bucket here.
        engine = await asyncio.to_thread(
            SamplingEngine, runner, vocab, max_batch=self.max_batch,
            max_waiting=self.max_waiting, prefill_chars=self.prefill_chars,
            on_finish=lambda reason: self.metrics.requests_finished.inc(
                tags={**tags, "reason": reason}))
        loop = asyncio.get_running_loop().create_task(engine.run())
        self._engine_loops.add(loop)
        loop.add_done_callback(self._engine_loops.discard)
        seconds = time.perf_counter() - started
        logger.info("model %s loaded in %.2f s: %s runner on %s (runner setting %s)", model_id,
                    seconds, runner.name, runner.device, self.runner_setting)
        self.metrics.model_load_seconds.observe(seconds, tags={**tags, "runner": runner.name})
        return engine

    async def _engine(self) -> tuple[str, SamplingEngine]:
        model_id = serve.get_multiplexed_model_id()
        counter = self.metrics.cache_hits if model_id in self.engines else self.metrics.cache_misses
        counter.inc(tags=model_tags(model_id))
        await self.get_model(model_id)
        return model_id, self.engines.get(model_id)

    def _submit(self, engine: SamplingEngine, model_id: str, sample: SampleConfig):
        try:
            handle = engine.submit(sample, deadline_s=self.generation_timeout_s)
        except QueueFull as error:
            raise Overloaded(f"model {model_id} is busy: {error}") from None
        self.metrics.queue_depth.set(engine.queue_depth, tags=model_tags(model_id))
        return handle

    def _record(self, model_id: str, engine: SamplingEngine, handle, chars: int) -> None:
        tags = model_tags(model_id)
        self.metrics.chars.inc(chars, tags=tags)
        calls = engine.drain_occupancy()
        for occupancy in calls:
            self.metrics.batch_occupancy.observe(occupancy, tags=tags)
        if calls:  # a counter takes only positive steps
            self.metrics.sampling_calls.inc(len(calls), tags=tags)
            self.metrics.batch_sequences.inc(sum(calls), tags=tags)
        self.metrics.queue_depth.set(engine.queue_depth, tags=tags)
        if handle.first_char_at is not None:
            self.metrics.time_to_first_char.observe(handle.first_char_at - handle.submitted_at,
                                                    tags=tags)
            if chars > 1 and handle.finished_at is not None:
                per_char = (handle.finished_at - handle.first_char_at) / (chars - 1)
                self.metrics.char_latency.observe(per_char, tags=tags)

    async def generate(self, sample: SampleConfig) -> dict:
        return (await self.generate_many([sample]))[0]

    async def generate_many(self, samples: list[SampleConfig]) -> list[dict]:
        """Several generations of one model submitted together, so they share batched steps
        (the OpenAI route's prompts and `n`). One answer per sample, in order."""
        model_id, engine = await self._engine()
        handles = self._submit_all(engine, model_id, samples)
        try:
            texts = await asyncio.gather(*(handle.result() for handle in handles))
        finally:
            for handle in handles:
                handle.cancel()  # no-op when finished; frees the slot if this call was cancelled
        for handle, text in zip(handles, texts, strict=True):
            self._record(model_id, engine, handle, len(text))
        if any(handle.reason == "error" for handle in handles):
            raise RuntimeError(f"sampling failed for model {model_id} (see the replica's log)")
        return [_answer(sample, handle, text)
                for sample, handle, text in zip(samples, handles, texts, strict=True)]

    def _submit_all(self, engine: SamplingEngine, model_id: str, samples: list[SampleConfig]):
        """All of them or none: past a full queue the ones already queued are cancelled."""
        handles = []
        try:
            for sample in samples:
                handles.append(self._submit(engine, model_id, sample))
        except Overloaded:
            for handle in handles:
                handle.cancel()
            raise
        return handles

    async def stream(self, sample: SampleConfig):
        """Yield text chunks as they are sampled; a client that goes away cancels the sequence
        (this generator is closed), which frees its batch slot at the next step."""
        async for event in self.stream_events([sample]):
            if event.get("text"):
                yield event["text"]

    async def stream_events(self, samples: list[SampleConfig]):
        """Several generations streamed together, as events in the order they are sampled:
        `{"index", "text", "logprobs"}` (logprobs: one entry per character, or None; a
        sample's first event with logprobs also has `prompt_logprobs`, one per prime
        character, the first None), then
        one `{"index", "finish_reason"}` per sample. Closing it cancels every sequence."""
        model_id, engine = await self._engine()
        handles = self._submit_all(engine, model_id, samples)
        sent = [0] * len(handles)
        self.chunk_budget.opened(len(handles))
        try:
            async for index, chunk in merged(handles, self.chunk_budget):
                handle = handles[index]
                if chunk is None:
                    if handle.reason == "error":
                        raise RuntimeError(f"sampling failed for model {model_id}")
                    yield {"index": index, "finish_reason": handle.reason}
                    continue
                start, sent[index] = sent[index], sent[index] + len(chunk)
                logprobs = (handle.logprobs[start:sent[index]]
                            if samples[index].logprobs is not None else None)
                event = {"index": index, "text": chunk, "logprobs": logprobs}
                if start == 0 and logprobs is not None:  # the prompt's, complete by now
                    event["prompt_logprobs"] = handle.prompt_logprobs
                yield event
        finally:
            self.chunk_budget.closed(len(handles))
            for index, handle in enumerate(handles):
                handle.cancel()
                self._record(model_id, engine, handle, sent[index])


def _answer(sample: SampleConfig, handle, text: str) -> dict:
    answer = {"text": sample.prime + text, "generated": text, "generated_chars": len(text),
              "finish_reason": handle.reason,
              "time_to_first_char_s": _seconds(handle.first_char_at, handle.submitted_at)}
    if sample.logprobs is not None:
        answer["logprobs"] = _logprob_entries(handle.logprobs)
        answer["prompt_logprobs"] = _logprob_entries(handle.prompt_logprobs)
    return answer


def _logprob_entries(entries: list) -> list:
    """The engine's (chosen, alternatives) entries as JSON-ready lists (None stays None)."""
    return [None if entry is None else [entry[0], list(entry[1])] for entry in entries]


def _seconds(end: float | None, start: float) -> float | None:
    return None if end is None else round(end - start, 4)
