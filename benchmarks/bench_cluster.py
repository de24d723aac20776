"""Cluster benchmark (issue 15): a node lost in training and a node lost under serving load, on a
simulated cluster of this machine, measured in one run. `make bench-cluster`.

The cluster is `ray.cluster_utils.Cluster`: a head with 0 CPUs (GCS, dashboard, Serve
controller, the Ingress replicas, a proxy) and two worker nodes of 1 CPU; nodes die with
`remove_node(..., allow_graceful=False)` (every process of the node is killed) and a spare node
joins at once, as an autoscaler or a replacement machine would. It runs beside other Ray
instances (own ports and temp dir) and the same helpers as `make test-cluster`.

1. Training: `python -m trainers.charrnn --num_workers 2` (a tiny LSTM) on the two worker
   nodes; after two checkpoints, the node of one worker dies. Figures: the step resumed from,
   steps trained twice, time until two workers run again, the run's total time.
2. Serving: the trained model behind the real Serve app (one Generator replica per worker
   node); a closed-loop load of 10 clients (1 streaming), 800 characters per request, a fresh
   connection each; the node of one Generator replica dies. Figures: requests failed by kind,
   the longest request, time until two Generator replicas run again; a timeline of nodes,
   replicas, requests/s and failures (plot).
3. The autoscaler, on a cluster of its own after the first is gone (benchmarks/
   cluster_autoscaler.py): a GPU node launched for a `--use_gpu` job and removed when idle;
   a serving node added for the replica Serve adds under load, and removed after it.
4. Head loss (benchmarks/cluster_head_loss.py), on a Redis-backed head of its own: the GCS
   killed under a generate load and restarted 15 s later; requests served and failed during
   the outage, time until the cluster takes new work again. `--head-loss-only` runs just this
   part and updates its entry in cluster.json.

Writes benchmarks/results/cluster.json and cluster.png.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import RESULTS, cluster_autoscaler, cluster_head_loss
from tests.cluster.simcluster import (
    TEMP_ROOT,
    Load,
    SimCluster,
    cluster_serve_config,
    corpus_slice,
    deploy,
    free_port,
    node_loss_under_load,
    registry_errors,
    registry_for,
    running,
    summarize_loss,
    train_and_lose_a_node,
    wait_until,
)

SAVE_EVERY, LOG_EVERY, MAX_STEPS = 400, 25, 2000
CLIENTS, STREAM_CLIENTS, MAX_LENGTH = 10, 1, 800


def warm_up(url: str, model: str) -> None:
    """Concurrent requests (more than one replica admits) so both replicas load the model."""
    load = Load(url, model, clients=8, stream_clients=0, max_length=400)
    threads = [threading.Thread(target=lambda i=i: [load.request(False, 100 * i + j)
                                                     for j in range(3)]) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def series(result: dict, bin_s: float = 1.0) -> dict:
    """Per-second completions and failures (by the time a request ended), from the load's
    start, and the sampled node/replica timeline, all in seconds since the load began."""
    t0 = result["t0"]
    bins = int((result["t_end"] - t0) / bin_s) + 1
    ok, failed = [0] * bins, [0] * bins
    for o in result["outcomes"]:
        index = min(int((o.ended - t0) / bin_s), bins - 1)
        if index < 0:
            continue
        (ok if o.kind == "ok" else failed)[index] += 1
    return {
        "bin_s": bin_s,
        "t": [round(i * bin_s, 2) for i in range(bins)],
        "ok_per_s": [n / bin_s for n in ok],
        "failed_per_s": [n / bin_s for n in failed],
        "timeline": [{"t": round(t - t0, 2), "nodes": nodes, "generator_replicas": replicas}
                     for t, nodes, replicas in result["timeline"]],
        "kill_at_s": round(result["t_kill"] - t0, 2),
    }


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = data["serving"]["series"]
    autoscaler = isinstance(data.get("autoscaler"), dict)
    fig, axes = plt.subplots(4 if autoscaler else 2, 1, figsize=(9, 12 if autoscaler else 6))
    top, bottom = axes[0], axes[1]
    bottom.sharex(top)
    tl = s["timeline"]
    top.step([p["t"] for p in tl], [p["nodes"] for p in tl], where="post",
             label="nodes alive (as the GCS sees them)")
    top.step([p["t"] for p in tl], [p["generator_replicas"] for p in tl], where="post",
             label="Generator replicas running")
    top.set_ylabel("count")
    top.set_ylim(0, max(p["nodes"] for p in tl) + 2)  # room above the lines for the legend
    top.legend(loc="upper right", ncol=2)
    bottom.bar(s["t"], s["ok_per_s"], width=s["bin_s"], align="edge", label="ok requests/s")
    bottom.bar(s["t"], s["failed_per_s"], width=s["bin_s"], align="edge", color="red",
               bottom=s["ok_per_s"], label="failed requests/s")
    bottom.set_ylabel("requests/s")
    bottom.set_xlabel("seconds since the load began")
    bottom.legend(loc="upper right")
    for axis in (top, bottom):
        axis.axvline(s["kill_at_s"], color="black", linestyle="--", linewidth=1)
    summary = data["serving"]["summary"]
    ns = summary["non_streaming"]
    top.set_title(f"Node of a Generator replica killed at the dashed line. Non-streaming requests "
                  f"failed: {ns['connection']} reset by the lost node's proxy,\n{ns['http']} "
                  f"answered 500 by a surviving one; two replicas running again after "
                  f"{summary['replicas_back_after_s']} s", fontsize=9)
    if autoscaler:
        cluster_autoscaler.plot(axes[2], axes[3], data["autoscaler"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="rnc-bench-"))
    corpus = corpus_slice(work)
    storage = work / "storage"
    storage.mkdir()
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]  # the machine is shared: how busy it was, for the record
    sim = SimCluster(storage, workers=2, head_resources={"ingress": 2})
    try:
        cluster_up_s = time.monotonic() - started
        registry = registry_for(sim)
        run = train_and_lose_a_node(sim, registry, corpus, "survivor", max_steps=MAX_STEPS,
                                    save_every_n=SAVE_EVERY, log_every_n=LOG_EVERY)
        if run.returncode != 0 or registry.get_version("survivor", 1).status != "ready":
            raise RuntimeError("training did not survive the node loss:\n" + run.output[-3000:])
        training = {
            "max_steps": MAX_STEPS, "save_every_n": SAVE_EVERY, "log_every_n": LOG_EVERY,
            "workers": 2, "step_logged_at_loss": run.step_at_kill,
            "latest_checkpoint_at_loss": run.checkpoint_at_kill,
            "resumed_at_step": run.resumed_at[0] if run.resumed_at else None,
            "steps_lost": run.steps_lost if run.resumed_at else None,
            "workers_running_again_after_s": (None if run.regrouped_after_s is None
                                              else round(run.regrouped_after_s, 2)),
            "run_seconds": round(run.seconds, 1),
            "registered": registry.get_version("survivor", 1).status,
        }
        print("training:", training, flush=True)

        url = deploy(sim, cluster_serve_config(free_port()), work)
        wait_until(lambda: running("Generator") == 2 and running("Ingress") == 2, 120,
                   what="2 Generator and 2 Ingress replicas")
        warm_up(url, "survivor")
        result = node_loss_under_load(sim, url, "survivor", clients=CLIENTS,
                                      stream_clients=STREAM_CLIENTS, max_length=MAX_LENGTH,
                                      before_s=8, after_s=8)
        summary = summarize_loss(result)
        print("serving:", summary, flush=True)
        data = {
            "command": "make bench-cluster",
            "machine": f"{os.cpu_count()} CPUs, shared; Ray simulated nodes on one host",
            "cluster": {"head_cpus": 0, "worker_nodes": 2, "cpus_per_worker_node": 1,
                        "cluster_up_s": round(cluster_up_s, 1)},
            "training": training,
            "serving": {
                "load": {"clients": CLIENTS, "streaming_clients": STREAM_CLIENTS,
                         "max_length": MAX_LENGTH, "fresh_connection_per_request": True},
                "summary": summary,
                "series": series(result),
                # SQLite on the shared storage, read by replicas on every node under the load
                "database_error_mentions": len(registry_errors(sim, result["outcomes"])),
            },
        }
    finally:
        sim.shutdown()
        shutil.rmtree(TEMP_ROOT, ignore_errors=True)  # this run's Ray files
    data["autoscaler"] = cluster_autoscaler.measure(work, corpus)
    data["head_loss"] = cluster_head_loss.measure(work)
    data["total_seconds"] = round(time.monotonic() - started, 1)
    data["load_average_1min"] = {"start": load_at_start, "end": os.getloadavg()[0]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(data, indent=2) + "\n")
    plot(data, RESULTS / "cluster.png")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {RESULTS / 'cluster.json'} and cluster.png", flush=True)


def head_loss_only() -> None:
    """Measure the head loss alone and put it into the last cluster.json, the rest kept."""
    work = Path(tempfile.mkdtemp(prefix="rnc-bench-"))
    try:
        head_loss = cluster_head_loss.measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("head loss:", head_loss, flush=True)
    path = RESULTS / "cluster.json"
    data = json.loads(path.read_text())
    data["head_loss"] = head_loss
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote head_loss into {path}", flush=True)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--plot-only"]:  # redraw the plot from the last cluster.json
        plot(json.loads((RESULTS / "cluster.json").read_text()), RESULTS / "cluster.png")
    elif sys.argv[1:] == ["--head-loss-only"]:
        head_loss_only()
    else:
        main()
