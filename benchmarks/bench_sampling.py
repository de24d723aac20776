"""Sampling throughput: FLOP ceiling vs a per-request baseline vs the continuous-batching engine.

    python -m benchmarks.bench_sampling            # or: make bench-sampling
    python -m benchmarks.bench_sampling --ceiling  # only the 64-stream ceiling check (~1 min)

For the 2x512 LSTM (tinyshakespeare vocabulary) and the reference's default 2x128 one-hot LSTM,
in one run on this machine: (a) the FLOP ceiling, measured matmul GFLOP/s divided by the
model's FLOPs per character; (b) the baseline, 64 requests served one at a time, each sampling
its own sequence with a compiled (tf.function) batch-1 step, no cross-request batching;
(c) the engine with 1..256 concurrent streams, once with each step runner (compiled, NumPy,
and TensorFlow on whatever device TensorFlow picks: on a CPU-only machine this shows the TF
runner's per-step overhead); the cold start of a model no replica holds, per runner; and
(d) a long prime: the time to first character of a 1,000-character prime arriving while 32
other streams generate, with the engine's prefill off (one prime character per shared step)
and at several budgets, and what it costs the other streams.
Weights are random: speed does not depend on their values. Writes
benchmarks/results/sampling.json (with the device each runner ran on) and
benchmarks/results/sampling.png.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import RESULTS, SHARED_DATA, shakespeare_vocab
from benchmarks.baseline import PerRequestSampler
from models import blas
from models.charrnn import build_charrnn
from models.config import CharRNNConfig, SampleConfig
from models.devices import gpu_visible
from models.runner_choice import build_runner, choose_runner
from models.step_cells import StepWeights
from models.tf_runner import TFStepRunner
from models.vocab import Vocab
from sampling import SamplingEngine
from sampling.engine import DEFAULT_PREFILL_CHARS


class HostOnlyRunner:
    """A runner that returns the same logits at once: what is left is the engine's host-side
    work per step (scheduling, sampling, delivering text), the ceiling any device runner stays
    under, however fast its step."""

    name, device = "none (constant logits)", "none"

    def __init__(self, vocab_size: int):
        self.logits = np.random.default_rng(0).normal(size=vocab_size).astype(np.float32)

    def allocate(self, slots: int) -> None:
        pass

    def reset(self, slot: int) -> None:
        pass

    def step(self, slots: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.logits, (len(slots), len(self.logits)))

    def prefill(self, slot: int, ids: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.logits, (len(ids), len(self.logits)))


def runner_variants(model, config: CharRNNConfig) -> dict:
    """label -> runner factory: compiled, NumPy, TensorFlow as a replica would run it on this
    device, and TensorFlow with XLA the other way (on a CPU XLA is off by default; measured
    here)."""
    served = build_runner(model, config, "tensorflow")
    other = not served.jit_compile
    return {"compiled": lambda m: build_runner(m, config, "compiled"),
            "numpy": lambda m: build_runner(m, config, "numpy"),
            "tensorflow": lambda m: build_runner(m, config, "tensorflow"),
            f"tensorflow, XLA {'on' if other else 'off'}":
                lambda m: TFStepRunner.from_model(m, config, jit_compile=other)}


def matmul_gflops(batch: int, units: int, seconds: float = 2.0, windows: int = 10) -> float:
    """float32 GEMM throughput at the shape of one recurrent step: the best of `windows`
    windows, since other work on a shared machine only ever slows a window down, the windows
    alternating one BLAS thread (what the runners use) and one per core, and each timing both
    BLAS builds in the process (NumPy's, and the compiled kernels' of models/blas.py): the
    ceiling is the machine's best at that shape, whichever thread count and build give it."""
    from threadpoolctl import threadpool_limits

    a = np.random.rand(batch, units).astype(np.float32)
    b = np.random.rand(units, 4 * units).astype(np.float32)
    out = np.empty((batch, 4 * units), np.float32)
    products = (lambda: np.matmul(a, b, out=out), lambda: blas.gemm(a, b, out, 0.0))
    best = 0.0
    for window in range(windows):
        with threadpool_limits(1 if window % 2 else os.cpu_count(), user_api="blas"):
            for product in products:
                for _ in range(10):
                    product()
                count, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds / windows / len(products):
                    for _ in range(20):
                        product()
                    count += 20
                best = max(best, count / (time.perf_counter() - started))
    return best * 2 * a.shape[0] * a.shape[1] * b.shape[1] / 1e9


def baseline_chars_per_s(model, config: CharRNNConfig, requests: int, length: int) -> float:
    """The reference's design: each request runs its own loop of compiled batch-1 steps."""
    sampler = PerRequestSampler(model, config)
    started = time.perf_counter()
    for request in range(requests):
        for _ in sampler.sample([1], length, np.random.default_rng(request)):
            pass
    return requests * length / (time.perf_counter() - started)


def step_microseconds(runner, batch: int, repeats: int = 5, steps: int = 20) -> float:
    """The runner's step alone (no sampling, no engine), best of `repeats`: on a shared
    machine the fastest repeat is the one least disturbed by other work."""
    runner.allocate(batch)
    slots, ids = np.arange(batch), np.ones(batch, np.int64)
    for _ in range(3):
        runner.step(slots, ids)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            runner.step(slots, ids)
        best = min(best, (time.perf_counter() - started) / steps)
    return best * 1e6


def engine_chars_per_s(runner, vocab: Vocab, streams: int, length: int) -> float:
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


def best_engine_chars_per_s(runner, vocab: Vocab, streams: int, length: int,
                            tries: int = 2) -> float:
    """The better of `tries` runs: other work on a shared machine only ever slows a run down."""
    return max(engine_chars_per_s(runner, vocab, streams, length) for _ in range(tries))


def long_prime_run(runner, vocab: Vocab, prefill_chars: int, others: int = 32,
                   prime_chars: int = 1000, other_length: int = 1500) -> dict:
    """`others` streams generate; once each has its first character, a request with a
    `prime_chars` prime arrives. Its time to first character, and the others' aggregate chars/s
    from its arrival until they finish (a window that holds the whole prime either way)."""
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    prime = text[:prime_chars]

    async def main():
        engine = SamplingEngine(runner, vocab, max_batch=64, prefill_chars=prefill_chars)
        loop = asyncio.create_task(engine.run())
        chunks: list[list[tuple[float, int]]] = [[] for _ in range(others)]  # (when, chars)

        async def read(handle, into):
            async for chunk in handle:
                into.append((time.perf_counter(), len(chunk)))

        readers = [asyncio.create_task(read(engine.submit(SampleConfig(
            prime="A", max_length=other_length, seed=i)), into)) for i, into in enumerate(chunks)]
        while not all(chunks):
            await asyncio.sleep(0.001)
        long = engine.submit(SampleConfig(prime=prime, max_length=20, seed=1))
        arrived = time.perf_counter()
        await asyncio.gather(long.result(), *readers)
        finished = max(into[-1][0] for into in chunks)
        engine.close()
        await loop
        after = sum(n for into in chunks for when, n in into if when >= arrived)
        return {"first_char_s": long.first_char_at - arrived,
                "others_chars_per_s": after / (finished - arrived)}

    return asyncio.run(main())


def long_prime(make_runner, model, vocab: Vocab, budgets: list[int], rounds: int) -> dict:
    """`long_prime_run` with the prefill off (0) and at each budget, the settings alternating
    `rounds` times (a shared machine's load drifts); the median of each."""
    runs = {budget: [] for budget in budgets}
    for _ in range(rounds):
        for budget in budgets:
            runs[budget].append(long_prime_run(make_runner(model), vocab, budget))
    return {budget: {key: float(np.median([r[key] for r in results])) for key in results[0]}
            for budget, results in runs.items()}


def cold_start_seconds(model, config: CharRNNConfig, vocab: Vocab, make_runner) -> float:
    """Saved weights -> rebuilt model -> runner (the TF one compiles its step for every batch
    bucket up to 64) -> first character of a request."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.weights.h5")
        model.save_weights(path)

        async def first_char() -> float:
            started = time.perf_counter()
            fresh = build_charrnn(config)
            fresh.load_weights(path)
            engine = SamplingEngine(make_runner(fresh), vocab, max_batch=64)
            loop = asyncio.create_task(engine.run())
            handle = engine.submit(SampleConfig(prime="ROMEO:", max_length=1))
            await handle.result()
            engine.close()
            await loop
            return handle.first_char_at - started

        return asyncio.run(first_char())


def bench_model(label: str, config: CharRNNConfig, vocab: Vocab, streams: list[int],
                baseline: bool, quick: bool, long_prime_budgets: list[int] = ()) -> dict:
    model = build_charrnn(config)
    flops = StepWeights.from_model(model, config).flops_per_char()
    gflops = matmul_gflops(64, config.lstm_size)
    ceiling = gflops * 1e9 / flops
    result = {"model": label, "params": model.count_params(), "flops_per_char": flops,
              "matmul_gflops": gflops, "ceiling_chars_per_s": ceiling, "runners": {}}
    length = 200 if quick else 400
    for label, make_runner in runner_variants(model, config).items():
        runner = make_runner(model)
        result["runners"][label] = {
            "device": runner.device, "jit_compile": getattr(runner, "jit_compile", None),
            "step_us": {n: step_microseconds(runner, n) for n in (1, 4, 8, 64, 256)},
            # Best of 5: a small model's 64-stream run lasts ~0.15 s, one host stall from half.
            "engine": {n: best_engine_chars_per_s(runner, vocab, n, 2000 if n == 1 else length,
                                                  tries=5)
                       for n in streams},
            "cold_start_first_char_s": cold_start_seconds(model, config, vocab, make_runner)}
    if long_prime_budgets:  # on the runner a replica picks here (`runner: auto`)
        result["long_prime"] = {"runner": choose_runner(), "by_budget": long_prime(
            lambda m: build_runner(m, config, "auto"), model, vocab, long_prime_budgets,
            rounds=1 if quick else 3)}
    if baseline:
        result["baseline_64_requests_chars_per_s"] = baseline_chars_per_s(
            model, config, 16 if quick else 64, 50 if quick else 100)
    return result


def ceiling_check(configs: dict, rounds: int = 3) -> None:
    """Issue 18.4's figures alone: per model and step runner (compiled, its rows or units over
    every core and the engine's steps fused; NumPy on its one BLAS thread; TensorFlow on every
    core), the GEMM ceiling, the runner's step at batch 64 and the engine at 64 streams, in
    each of `rounds` rounds (models alternating). Each runner is measured in a process of its
    own, with its own ceiling, as a replica runs one kind of runner: in one process, the
    compiled runner measured after the TensorFlow runner's engine had run there was slower
    (2x512 engine at 61-74% of the ceiling against 75-90% in a fresh process, BENCHMARKS.md,
    Sampling engine, stop 26). Each figure is a best of several (the ceiling of 10 GEMM
    windows, the step of 5 repeats, the engine of 5 runs): on a shared machine other work only
    ever slows a measurement down. The runner `auto` picks on this machine is marked."""
    print(f"load averages at the start: {os.getloadavg()}")
    auto = choose_runner()
    for round_ in range(rounds):
        for label, config in configs.items():
            figures = []
            for setting in ("compiled", "numpy", "tensorflow"):
                ceiling, step, engine = in_fresh_process(runner_against_ceiling, config, setting)
                figures.append(f"{setting}{' (auto)' if setting == auto else ''}: ceiling "
                               f"{ceiling:,.0f}, runner step {step:,.0f} ({step / ceiling:.0%}), "
                               f"engine {engine:,.0f} ({engine / ceiling:.0%})")
            print(f"round {round_ + 1} {time.strftime('%H:%M:%S')} {label} (chars/s): "
                  + "; ".join(figures), flush=True)
    print(f"load averages at the end: {os.getloadavg()}")


def runner_against_ceiling(config: CharRNNConfig, setting: str) -> tuple[float, float, float]:
    """In this process: the GEMM ceiling for a model of `config` (random weights), the step
    of its `setting` runner alone at batch 64, and its engine at 64 streams, in chars/s."""
    model = build_charrnn(config)
    ceiling = (matmul_gflops(64, config.lstm_size) * 1e9
               / StepWeights.from_model(model, config).flops_per_char())
    runner = build_runner(model, config, setting)
    step = 64 / step_microseconds(runner, 64) * 1e6
    engine = best_engine_chars_per_s(runner, shakespeare_vocab(), 64, 400, tries=5)
    return ceiling, step, engine


def in_fresh_process(function, *arguments):
    """`function(*arguments)` in a new Python process (spawned: nothing of this one's state)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *arguments).result()


def report(result: dict) -> None:
    print(f"\n{result['model']}: {result['params']:,} params, {result['flops_per_char'] / 1e6:.2f}"
          f" MFLOP/char, matmul {result['matmul_gflops']:.1f} GFLOP/s -> ceiling "
          f"{result['ceiling_chars_per_s']:,.0f} chars/s")
    base = result.get("baseline_64_requests_chars_per_s")
    if base:
        print(f"  baseline (64 requests, one at a time, compiled batch-1 step): {base:,.0f} chars/s")
    for setting, run in result["runners"].items():
        xla = "" if run["jit_compile"] is None else f", XLA {'on' if run['jit_compile'] else 'off'}"
        print(f"  {setting.split(',')[0]} runner on {run['device']}{xla}:")
        print("    step alone (best of 5): " + ", ".join(
            f"batch {n} {us:,.0f} us" for n, us in run["step_us"].items()))
        for n, rate in run["engine"].items():
            extra = f", {rate / base:.1f}x baseline" if base else ""
            print(f"    engine {n:>3} streams: {rate:>9,.0f} chars/s "
                  f"({rate / result['ceiling_chars_per_s']:.0%} of ceiling{extra})")
        print(f"    cold start to first char: {run['cold_start_first_char_s'] * 1000:.0f} ms")
    if "long_prime" in result:
        report_long_prime(result["long_prime"])


def report_long_prime(long_prime_result: dict) -> None:
    runs = long_prime_result["by_budget"]
    off = runs[0]
    print(f"  long prime ({long_prime_result['runner']} runner): 1,000-char prime arriving "
          "while 32 streams generate")
    for budget, run in runs.items():
        setting = "prefill off" if budget == 0 else f"prefill {budget} chars/step"
        print(f"    {setting:>24}: first char {run['first_char_s'] * 1000:>7,.0f} ms "
              f"({off['first_char_s'] / run['first_char_s']:.1f}x faster than off), others "
              f"{run['others_chars_per_s']:>7,.0f} chars/s "
              f"({run['others_chars_per_s'] / off['others_chars_per_s'] - 1:+.1%})")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4))
    for ax, result in zip(np.atleast_1d(axes), results, strict=True):
        for setting, run in result["runners"].items():
            streams = [int(n) for n in run["engine"]]
            ax.plot(streams, list(run["engine"].values()), "o-",
                    label=f"engine, {setting} runner ({run['device']})")
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
    parser.add_argument("--ceiling", type=int, nargs="?", const=3, metavar="ROUNDS",
                        help="only the 64-stream engine and runner against the GEMM ceiling")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]  # the machine is shared: how busy it was, for the record
    vocab = shakespeare_vocab()
    big = CharRNNConfig(vocab_size=vocab.size, num_layers=2, lstm_size=512)
    reference_default = CharRNNConfig(vocab_size=vocab.size, num_layers=2, lstm_size=128)
    if args.ceiling:
        ceiling_check({"2x512": big, "2x128 one-hot": reference_default}, args.ceiling)
        return
    results = [
        bench_model("2x512 LSTM", big, vocab, [1, 8, 64, 256], baseline=True, quick=args.quick,
                    long_prime_budgets=[0, 16, DEFAULT_PREFILL_CHARS, 256, 1000]),
        bench_model("2x128 LSTM one-hot (reference default)", reference_default, vocab, [1, 64],
                    baseline=True, quick=args.quick),
    ]
    host_ceiling = {n: best_engine_chars_per_s(HostOnlyRunner(vocab.size), vocab, n, 200)
                    for n in (64, 256, 1024)}
    for result in results:
        report(result)
    print("\nengine with a runner that costs nothing (host-side ceiling of any runner): "
          + ", ".join(f"{n} streams {rate:,.0f} chars/s" for n, rate in host_ceiling.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{os.cpu_count()} cores, {'a' if gpu_visible() else 'no'} GPU visible to TensorFlow"
    load = [load_before, os.getloadavg()[0]]
    print(f"machine: {machine}; 1-min load average {load[0]:.1f} at the start, {load[1]:.1f} at "
          "the end")
    (RESULTS / "sampling.json").write_text(json.dumps(
        {"machine": machine, "load_average_1min": load, "results": results,
         "engine_host_ceiling_chars_per_s": host_ceiling}, indent=2))
    plot(results, RESULTS / "sampling.png")
    print(f"\nwrote {RESULTS / 'sampling.json'} and sampling.png")


if __name__ == "__main__":
    main()
