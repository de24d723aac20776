"""Sampling throughput: FLOP ceiling vs a per-request baseline vs the continuous-batching engine.

    python -m benchmarks.bench_sampling            # or: make bench-sampling

For the 2x512 LSTM (tinyshakespeare vocabulary) and the reference's default 2x128 one-hot LSTM,
in one run on this machine: (a) the FLOP ceiling, measured matmul GFLOP/s divided by the
model's FLOPs per character; (b) the baseline, 64 requests served one at a time, each sampling
its own sequence with a compiled (tf.function) batch-1 step, no cross-request batching;
(c) the engine with 1..256 concurrent streams; and the cold start of a model no replica holds.
Weights are random: speed does not depend on their values. Writes
benchmarks/results/sampling.json and benchmarks/results/sampling.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import RESULTS, SHARED_DATA
from benchmarks.baseline import PerRequestSampler
from models.charrnn import build_charrnn
from models.config import CharRNNConfig, SampleConfig
from models.runner import StepRunner
from models.vocab import Vocab
from sampling import SamplingEngine


def matmul_gflops(batch: int, units: int, seconds: float = 2.0) -> float:
    """float32 GEMM throughput at the shape of one recurrent step."""
    a = np.random.rand(batch, units).astype(np.float32)
    b = np.random.rand(units, 4 * units).astype(np.float32)
    for _ in range(10):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(20):
            a @ b
        count += 20
    return count * 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - started) / 1e9


def baseline_chars_per_s(model, config: CharRNNConfig, requests: int, length: int) -> float:
    """The reference's design: each request runs its own loop of compiled batch-1 steps."""
    sampler = PerRequestSampler(model, config)
    started = time.perf_counter()
    for request in range(requests):
        for _ in sampler.sample([1], length, np.random.default_rng(request)):
            pass
    return requests * length / (time.perf_counter() - started)


def engine_chars_per_s(runner: StepRunner, vocab: Vocab, streams: int, length: int) -> float:
    async def main():
        engine = SamplingEngine(runner, vocab, max_batch=max(64, streams), max_waiting=4096)
        loop = asyncio.create_task(engine.run())
        started = time.perf_counter()
        handles = [engine.submit(SampleConfig(prime="A", max_length=length, seed=i))
                   for i in range(streams)]
        texts = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - started
        engine.close()
        await loop
        return sum(len(t) for t in texts) / elapsed

    return asyncio.run(main())


def cold_start_seconds(model, config: CharRNNConfig, vocab: Vocab) -> float:
    """Saved weights -> rebuilt model -> runner -> first character of a request."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.weights.h5")
        model.save_weights(path)

        async def first_char() -> float:
            started = time.perf_counter()
            fresh = build_charrnn(config)
            fresh.load_weights(path)
            engine = SamplingEngine(StepRunner.from_model(fresh, config), vocab, max_batch=64)
            loop = asyncio.create_task(engine.run())
            handle = engine.submit(SampleConfig(prime="ROMEO:", max_length=1))
            await handle.result()
            engine.close()
            await loop
            return handle.first_char_at - started

        return asyncio.run(first_char())


def bench_model(label: str, config: CharRNNConfig, vocab: Vocab, streams: list[int],
                baseline: bool, quick: bool) -> dict:
    model = build_charrnn(config)
    runner = StepRunner.from_model(model, config)
    flops = runner.flops_per_char()
    gflops = matmul_gflops(64, config.lstm_size)
    ceiling = gflops * 1e9 / flops
    result = {"model": label, "params": model.count_params(), "flops_per_char": flops,
              "matmul_gflops": gflops, "ceiling_chars_per_s": ceiling, "engine": {}}
    length = 200 if quick else 400
    for n in streams:
        result["engine"][n] = engine_chars_per_s(runner, vocab, n, 2000 if n == 1 else length)
    if baseline:
        result["baseline_64_requests_chars_per_s"] = baseline_chars_per_s(
            model, config, 16 if quick else 64, 50 if quick else 100)
    result["cold_start_first_char_s"] = cold_start_seconds(model, config, vocab)
    return result


def report(result: dict) -> None:
    print(f"\n{result['model']}: {result['params']:,} params, {result['flops_per_char'] / 1e6:.2f}"
          f" MFLOP/char, matmul {result['matmul_gflops']:.1f} GFLOP/s -> ceiling "
          f"{result['ceiling_chars_per_s']:,.0f} chars/s")
    base = result.get("baseline_64_requests_chars_per_s")
    if base:
        print(f"  baseline (64 requests, one at a time, compiled batch-1 step): {base:,.0f} chars/s")
    for n, rate in result["engine"].items():
        extra = f", {rate / base:.1f}x baseline" if base else ""
        print(f"  engine {n:>3} streams: {rate:>9,.0f} chars/s "
              f"({rate / result['ceiling_chars_per_s']:.0%} of ceiling{extra})")
    print(f"  cold start to first char: {result['cold_start_first_char_s'] * 1000:.0f} ms")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4))
    for ax, result in zip(np.atleast_1d(axes), results, strict=True):
        streams = [int(n) for n in result["engine"]]
        ax.plot(streams, list(result["engine"].values()), "o-", label="engine")
        ax.axhline(result["ceiling_chars_per_s"], color="gray", ls="--", label="FLOP ceiling")
        if result.get("baseline_64_requests_chars_per_s"):
            ax.axhline(result["baseline_64_requests_chars_per_s"], color="red", ls=":",
                       label="baseline (per-request loop)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("chars/s (aggregate)")
        ax.set_title(result["model"])
        ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (for smoke tests)")
    args = parser.parse_args(argv)
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    vocab = Vocab.from_text(text, 3500)
    big = CharRNNConfig(vocab_size=vocab.size, num_layers=2, lstm_size=512)
    reference_default = CharRNNConfig(vocab_size=vocab.size, num_layers=2, lstm_size=128)
    results = [
        bench_model("2x512 LSTM", big, vocab, [1, 8, 64, 256], baseline=True, quick=args.quick),
        bench_model("2x128 LSTM one-hot (reference default)", reference_default, vocab, [1, 64],
                    baseline=True, quick=args.quick),
    ]
    for result in results:
        report(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sampling.json").write_text(json.dumps(
        {"machine": f"{os.cpu_count()} cores", "results": results}, indent=2))
    plot(results, RESULTS / "sampling.png")
    print(f"\nwrote {RESULTS / 'sampling.json'} and sampling.png")


if __name__ == "__main__":
    main()
