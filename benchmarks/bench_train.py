"""Training benchmark: throughput with 1 and 2 workers, validation loss against wall-clock time.

    python -m benchmarks.bench_train [--minutes_a 9] [--minutes_b 20]   # or: make bench-train

On tinyshakespeare with the last 5% held out (--val_frac 0.05), through the real trainer
(`python -m trainers.charrnn`, Ray Train), for (a) the reference's default model (2x128 LSTM,
one-hot, num_seqs 32, num_steps 50, learning rate 0.01) and (b) a larger model of ours. Every
figure comes from the metrics the trainer reported with its checkpoints (step, elapsed_s,
items_per_s, val_loss...): the registered version's metrics for the best checkpoint, and the
metrics of every checkpoint for the validation curve and the throughput. Writes
benchmarks/results/training.json and training.png.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks import RESULTS, SHARED_DATA, run_trainer
from models.artifacts import HISTORY_FILE

# (a) The reference's default model and hyperparameters.
REFERENCE_DEFAULT = ["--lstm_size", "128", "--num_layers", "2", "--num_seqs", "32",
                     "--num_steps", "50", "--learning_rate", "0.01", "--train_keep_prob", "0.5"]
# (b) A larger model of ours.
OURS = ["--lstm_size", "256", "--num_layers", "2", "--use_embedding", "--embedding_size", "64",
        "--num_seqs", "32", "--num_steps", "64", "--learning_rate", "0.004", "--lr_decay", "0.1",
        "--train_keep_prob", "0.9"]


def train(storage: str, name: str, model_flags: list[str], workers: int, minutes: float,
          eval_every: int) -> dict:
    from registry import Registry, Settings

    flags = ["--input_file", str(SHARED_DATA / "tinyshakespeare.txt"), "--name", name,
             "--val_frac", "0.05", "--max_steps", "10000000", "--max_minutes", str(minutes),
             "--save_every_n", str(eval_every), "--log_every_n", str(eval_every),
             "--num_workers", str(workers), "--cpus_per_worker", str(2 // workers),
             "--storage", storage, *model_flags]
    registry = Registry(Settings.from_env(storage=storage))
    started = time.perf_counter()
    if ready_run(registry, name) is None:  # else reuse the finished run
        run_trainer("charrnn", flags)
    wall = time.perf_counter() - started
    best = registry.get_version(name, 1).metrics  # the registered (best) checkpoint's metrics
    curve = [{"step": int(m["step"]), "minutes": m["elapsed_s"] / 60,
              "chars_per_s": m["items_per_s"], "val_loss": m["val_loss"]}
             for m in checkpoint_metrics(registry, name, 1)]
    # Throughput after the first window, which includes graph tracing.
    steady = [point["chars_per_s"] for point in curve[1:]] or [curve[0]["chars_per_s"]]
    return {"name": name, "workers": workers, "flags": model_flags, "params": best["params"],
            "wall_s": wall, "chars_per_s": sum(steady) / len(steady), "curve": curve,
            "best_val_loss": best.get("val_loss")}


def checkpoint_metrics(registry, name: str, version: int) -> list[dict]:
    """The metrics the trainer reported with each checkpoint of the version, in order (the
    version's history.json)."""
    _, directory = registry.fetch_version(name, version)
    with open(os.path.join(directory, HISTORY_FILE), encoding="utf-8") as f:
        return json.load(f)["history"]


def ready_run(registry, name: str):
    try:
        record = registry.get_version(name, 1)
    except Exception:  # noqa: BLE001 - not trained yet
        return None
    return record if record.status == "ready" else None


def loss_at(curve: list[dict], minutes: float) -> float | None:
    """Best validation loss reached by `minutes` of training."""
    seen = [p["val_loss"] for p in curve if p["minutes"] <= minutes + 1e-9]
    return min(seen) if seen else None


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        if len(run["curve"]) > 2:
            ax.plot([p["minutes"] for p in run["curve"]], [p["val_loss"] for p in run["curve"]],
                    label=f"{run['name']} ({run['workers']} worker)")
    ax.axhline(1.60, color="gray", ls=":", label="target (b) 1.60 @ 9 min")
    ax.axhline(1.55, color="gray", ls="--", label="target (b) 1.55 @ 20 min")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_ylim(1.3, 2.6)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes_a", type=float, default=9.0)
    parser.add_argument("--minutes_b", type=float, default=20.0)
    parser.add_argument("--minutes_throughput", type=float, default=1.5)
    parser.add_argument("--storage", default=None,
                        help="storage of an earlier run: its finished runs are reused")
    args = parser.parse_args(argv)
    storage = args.storage or tempfile.mkdtemp(prefix="rnnserve-bench-")
    runs = [
        train(storage, "ref-default-1w", REFERENCE_DEFAULT, 1, args.minutes_a, 200),
        train(storage, "ref-default-2w", REFERENCE_DEFAULT, 2, args.minutes_throughput, 200),
        train(storage, "ours-1w", OURS, 1, args.minutes_b, 200),
        train(storage, "ours-2w", OURS, 2, args.minutes_throughput, 100),
    ]
    reference_default, ours = runs[0], runs[2]
    summary = {
        "ref_default_1w_chars_per_s": reference_default["chars_per_s"],
        "ref_default_2w_chars_per_s": runs[1]["chars_per_s"],
        # 18,200 chars/s: the reference's own TF1 code on this machine (BENCHMARKS.md).
        "ref_default_vs_reference_code_18200": reference_default["chars_per_s"] / 18_200,
        "ref_default_val_at_1.6_min": loss_at(reference_default["curve"], 1.6),
        "ref_default_val_at_9_min": loss_at(reference_default["curve"], 9),
        "ours_1w_chars_per_s": ours["chars_per_s"],
        "ours_2w_chars_per_s": runs[3]["chars_per_s"],
        "ours_val_at_9_min": loss_at(ours["curve"], 9),
        "ours_val_at_20_min": loss_at(ours["curve"], 20),
    }
    for run in runs:
        print(f"{run['name']}: {run['params']:,} params, {run['workers']} worker(s), "
              f"{run['chars_per_s']:,.0f} train chars/s, best val_loss {run['best_val_loss']:.3f} "
              f"nats ({run['best_val_loss'] / 0.6931:.3f} bits/char)")
    for key, value in summary.items():
        print(f"  {key}: {value:.3f}" if value is not None else f"  {key}: n/a")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps(
        {"machine": f"{os.cpu_count()} cores", "summary": summary, "runs": runs}, indent=2))
    plot(runs, RESULTS / "training.png")
    print(f"wrote {RESULTS / 'training.json'} and training.png")


if __name__ == "__main__":
    main()
