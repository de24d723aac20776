"""A small model's fused steps on the engine's thread alone against split by rows over the
cores, on idle cores and on cores kept busy by other processes (as a Generator's are by the HTTP
path): what `models/compiled_runner.py`'s MIN_ROWS_PER_CORE is chosen from.

    python -m benchmarks.bench_split            # or: make bench-split (~1 min)

For the reference 2x128 one-hot LSTM, at 2 to 16 rows, each form runs fused steps for a second;
the figures are microseconds a step of the wall clock and of the process's CPU (every thread,
the split's workers too). The busy cores run one process per core that computes for ~10 ms and
sleeps for ~1 ms, a stand-in for the proxy, ingress and load generator.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np

import models.compiled_runner as compiled_runner
from benchmarks import shakespeare_vocab
from models.charrnn import build_charrnn
from models.config import CharRNNConfig
from sampling.fused_steps import run_fused_steps
from sampling.sampler import random_key
from sampling.scheduler import Sequence
from sampling.slots import SlotTable

ROWS = (2, 4, 6, 8, 12, 16)
STEPS_PER_CALL = 32
ALONE = 1 << 30  # a MIN_ROWS_PER_CORE no batch reaches: every call on one thread


def busy_core(stop) -> None:
    """Compute ~10 ms, sleep ~1 ms, until `stop` is set."""
    while not stop.is_set():
        until = time.perf_counter() + 0.01
        while time.perf_counter() < until:
            pass
        time.sleep(0.001)


def runner_and_table(rows: int):
    vocab = shakespeare_vocab()
    config = CharRNNConfig(vocab_size=vocab.size, num_layers=2, lstm_size=128)
    runner = compiled_runner.CompiledStepRunner.from_model(build_charrnn(config), config)
    runner.allocate(rows)
    table = SlotTable(rows)
    for slot in range(rows):
        sequence = Sequence(prompt_ids=[1], max_length=10**9, temperature=0.8,
                            key=random_key(slot), slot=slot)
        table.load(sequence)
    return runner, table


def step_costs(runner, table, rows: int, min_rows_per_core: int,
               seconds: float = 1.0) -> tuple[float, float]:
    """(wall, CPU) microseconds a fused step of `rows` rows, over `seconds` of calls."""
    compiled_runner.MIN_ROWS_PER_CORE = min_rows_per_core
    slots = np.arange(rows)
    run_fused_steps(runner, table, slots, STEPS_PER_CALL)  # the parallel pool started
    steps, cpu, started = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        run_fused_steps(runner, table, slots, STEPS_PER_CALL)
        steps += STEPS_PER_CALL
    wall = time.perf_counter() - started
    return wall / steps * 1e6, (time.process_time() - cpu) / steps * 1e6


def measure(runner, table, label: str) -> None:
    print(label, flush=True)
    for rows in ROWS:
        alone_wall, alone_cpu = step_costs(runner, table, rows, ALONE)
        split_wall, split_cpu = step_costs(runner, table, rows, 1)
        print(f"  {rows:2d} rows: one thread {alone_cpu:6.1f} CPU / {alone_wall:6.1f} wall, "
              f"split {split_cpu:6.1f} / {split_wall:6.1f} us a step "
              f"(split CPU x{split_cpu / alone_cpu:.2f})", flush=True)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    shipped = compiled_runner.MIN_ROWS_PER_CORE
    runner, table = runner_and_table(max(ROWS))
    print(f"{runner.cores} cores for the split; shipped: split from "
          f"{shipped * runner.cores} rows ({shipped} a core)")
    try:
        measure(runner, table, "idle cores:")
        stop = multiprocessing.Event()
        burners = [multiprocessing.Process(target=busy_core, args=(stop,), daemon=True)
                   for _ in range(runner.cores)]
        for burner in burners:
            burner.start()
        try:
            measure(runner, table, f"every core busy with other work ({len(burners)} processes):")
        finally:
            stop.set()
            for burner in burners:
                burner.join()
    finally:
        compiled_runner.MIN_ROWS_PER_CORE = shipped


if __name__ == "__main__":
    main()
