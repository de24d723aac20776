"""Classifier benchmark: MNIST read row by row, 8,000 digits to train, the other 2,000 to test.

    python -m benchmarks.bench_classifier        # or: make bench-classifier

Trains through the real trainer (Ray Train) on the first 8,000 of the t10k digits (10% of them
held out for validation and checkpoint selection), then evaluates the registered version on the
last 2,000, which training never saw. Writes benchmarks/results/classifier.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from benchmarks import RESULTS, SHARED_DATA, run_trainer

MNIST = SHARED_DATA / "mnist"
CONFIG = ["--num_hidden", "128", "--num_layers", "1", "--dropout", "0.2", "--batch_size", "128",
          "--learning_rate", "0.002", "--lr_decay", "0.05", "--val_frac", "0.1", "--save_every_n", "250",
          "--log_every_n", "50", "--cpus_per_worker", "2"]


def main(argv: list[str] | None = None) -> None:
    from models.artifacts import load_classifier
    from registry import Registry, Settings
    from trainers.classifier_data import evaluate, prepare, read_idx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_steps", type=int, default=4000)
    parser.add_argument("--max_minutes", type=float, default=9.0)
    args = parser.parse_args(argv)

    images = read_idx((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())
    labels = read_idx((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    storage = tempfile.mkdtemp(prefix="rnnserve-bench-classifier-")
    train_file = os.path.join(storage, "train.npz")
    np.savez(train_file, x=images[:8000], y=labels[:8000])
    flags = [*CONFIG, "--max_steps", str(args.max_steps), "--max_minutes", str(args.max_minutes)]
    started = time.perf_counter()
    run_trainer("lstm_classifier",
                ["--input_file", train_file, "--name", "mnist", "--storage", storage, *flags])
    minutes = (time.perf_counter() - started) / 60
    record, directory = Registry(Settings.from_env(storage=storage)).fetch_version("mnist")
    model, _ = load_classifier(directory)
    x_test, y_test = prepare(images[8000:], labels[8000:], 10)
    test = evaluate(model, x_test, y_test)
    result = {"config": flags, "train_examples": 8000, "test_examples": 2000,
              "wall_minutes": minutes, "best_step": record.metrics["step"],
              "val_accuracy": record.metrics["val_accuracy"], "test_accuracy": test["val_accuracy"],
              "test_loss": test["val_loss"], "params": record.metrics["params"]}
    print(f"config: {' '.join(flags)}")
    print(f"wall time {minutes:.1f} min (incl. Ray start), best checkpoint at step "
          f"{result['best_step']}, validation accuracy {result['val_accuracy']:.2%}")
    print(f"TEST accuracy on the held-out 2,000 digits: {result['test_accuracy']:.2%} "
          f"(target >= 97% within 10 minutes)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "classifier.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
