"""Char-RNN training on real Ray Train + TensorFlow: registration, reload, worker failure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import psutil
import pytest

from tests.conftest import REPO, TEMP_DIR, wait_for

pytestmark = pytest.mark.integration

SMALL_MODEL = ["--lstm_size", "48", "--num_layers", "2", "--num_seqs", "16", "--num_steps", "32",
               "--learning_rate", "0.01", "--log_every_n", "5"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shakespeare) -> str:
    path = tmp_path_factory.mktemp("corpus") / "shakespeare-slice.txt"
    path.write_text(shakespeare[:40_000], encoding="utf-8")
    return str(path)


def start_trainer(ray_cluster, *args: str) -> subprocess.Popen:
    """The trainer as a user runs it: `python -m trainers.charrnn ...` against the cluster."""
    env = {**ray_cluster["env"], "RAY_ADDRESS": ray_cluster["address"]}
    return subprocess.Popen([sys.executable, "-m", "trainers.charrnn", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def test_two_workers_register_a_ready_version_that_reloads_to_the_same_loss(
        ray_cluster, registry, corpus):
    from models.artifacts import load_charrnn
    from trainers.charrnn_data import split_corpus, validation_loss

    finish(start_trainer(ray_cluster, "--input_file", corpus, "--name", "two-workers",
                         "--num_workers", "2", "--max_steps", "30", "--save_every_n", "15",
                         "--lr_decay", "0.1", "--max_minutes", "30", *SMALL_MODEL))
    record, directory = registry.fetch_version("two-workers")
    assert record.status == "ready" and record.version == 1
    assert sorted(os.listdir(directory)) == ["config.json", "heldout.txt", "history.json",
                                             "metrics.json", "model.weights.h5", "vocab.json"]
    with open(os.path.join(directory, "history.json")) as f:
        history = json.load(f)["history"]
    assert [m["step"] for m in history] == [15, 30]  # both checkpoints, the kept one among them
    assert record.metrics["val_loss"] == min(m["val_loss"] for m in history)
    assert registry.get_alias("two-workers", "production") == 1
    for key in ("train_loss", "val_loss", "val_bpc", "items_per_s", "step", "params"):
        assert key in record.metrics, key
    assert record.metrics["step"] == 30

    model, config, vocab = load_charrnn(directory)
    with open(corpus, encoding="utf-8") as f:
        _, val = split_corpus(vocab.encode(f.read()), 0.1, 16, 32)
    assert validation_loss(model, val)["val_loss"] == pytest.approx(
        record.metrics["val_loss"], abs=1e-4)
    logs = registry.read_logs("two-workers", 1)
    assert any(line.startswith("step 30/30") for line in logs)
    assert any("promoted version 1 to production" in line for line in logs)
    # The workers agreed on a cosine schedule that ends at lr_decay * learning_rate.
    rates = [float(m[1]) for line in logs if (m := re.search(r" lr ([-+.e\d]+)$", line))]
    assert len(rates) == 6 and rates == sorted(rates, reverse=True) and rates[0] < 0.01
    assert rates[-1] == pytest.approx(0.001, rel=0.01)


def test_a_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, registry, corpus):
    process = start_trainer(ray_cluster, "--input_file", corpus, "--name", "survivor",
                            "--num_workers", "2", "--max_steps", "1500", "--save_every_n", "50",
                            "--max_failures", "2", *SMALL_MODEL)

    def checkpointed_step():
        try:
            lines = registry.read_logs("survivor", 1)
        except Exception:  # noqa: BLE001 - the version may not exist yet
            return None
        steps = [int(m.group(1)) for line in lines
                 if (m := re.match(r"checkpoint: step (\d+)", line))]
        return max(steps) if steps else None

    # Ray Train learns of a reported checkpoint when its controller next polls the workers: a
    # worker killed within that moment restarts the run from the checkpoint before. So the
    # kill comes two checkpoints later, when the first one is surely on the controller's books.
    wait_for(lambda: (checkpointed_step() or 0) >= 150, 300, what="three checkpoints")
    # This run's worker processes: children of this session's raylet (other Ray instances on
    # the machine have their own), titled by Ray after the actor class.
    raylet = next(p for p in psutil.process_iter(["cmdline"])
                  if "raylet" in " ".join(p.info["cmdline"] or [])
                  and TEMP_DIR in " ".join(p.info["cmdline"] or []))
    workers = [c for c in raylet.children(recursive=True)
               if (c.cmdline() or [""])[0].startswith("ray::RayTrainWorker")]
    assert len(workers) == 2, workers
    victim = workers[-1]
    victim.kill()
    victim.wait(10)

    finish(process)
    record = registry.get_version("survivor", 1)
    logs = registry.read_logs("survivor", 1)
    # The registered version is the best checkpoint by validation loss, not always the last.
    assert record.status == "ready" and 50 <= record.metrics["step"] <= 1500
    assert any(line.startswith("step 1500/1500") for line in logs)
    resumed = [int(m.group(1)) for line in logs
               if (m := re.match(r"resumed from checkpoint at step (\d+)", line))]
    assert resumed and resumed[0] >= 50, "no resume from a checkpoint:\n" + "\n".join(logs[-60:])


def test_init_from_continues_training_and_refuses_new_characters(ray_cluster, registry, corpus,
                                                                  tmp_path, capsys):
    import sampling.__main__ as sample

    finish(start_trainer(ray_cluster, "--input_file", corpus, "--name", "two-workers",
                         "--init_from", "two-workers:1", "--max_steps", "10",
                         "--save_every_n", "10", *SMALL_MODEL))
    record = registry.get_version("two-workers", 2)
    assert record.status == "ready" and record.params["init_from"] == "two-workers:1"
    logs = registry.read_logs("two-workers", 2)
    assert any("continuing from two-workers:1" in line for line in logs)
    # Continuing from a trained model starts far below a fresh model's loss (~ln(vocab)).
    first = next(line for line in logs if line.startswith("step 5/10"))
    assert float(first.split()[3]) < 3.7

    snowy = tmp_path / "snow.txt"
    snowy.write_text(open(corpus, encoding="utf-8").read() + " ☃ ∞", encoding="utf-8")
    process = start_trainer(ray_cluster, "--input_file", str(snowy), "--name", "two-workers",
                            "--init_from", "two-workers", *SMALL_MODEL)
    process.communicate(timeout=120)
    assert process.returncode == 2
    failed = registry.get_version("two-workers", 3)
    assert failed.status == "failed"
    assert any("outside the model's vocabulary: '☃∞'" in line
               for line in registry.read_logs("two-workers", 3))

    # The offline sampler loads the production version from the same registry.
    assert sample.main(["--name", "two-workers", "--prime", "ROMEO:", "--max_length", "40",
                        "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and "ROMEO:" in out
    assert len(out[out.index("ROMEO:"):-1]) == len("ROMEO:") + 40  # print adds one newline


def test_ray_job_submit_cli_trains_a_ready_version(ray_cluster, registry, corpus):
    """What a user types: `ray job submit --working-dir . -- python -m trainers.charrnn ...`."""
    from tests.conftest import BIN

    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_cluster["dashboard"],
         "--working-dir", ".", "--", "python", "-m", "trainers.charrnn", "--input_file", corpus,
         "--name", "submitted", "--max_steps", "20", "--save_every_n", "10", *SMALL_MODEL],
        cwd=REPO, env=ray_cluster["env"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "succeeded" in result.stdout.lower()
    record = registry.get_version("submitted", 1)
    assert record.status == "ready" and record.job_id  # the job id Ray gave the driver
