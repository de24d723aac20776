# rnnserve: `make run` starts the app on embedded defaults, `make test` runs the test suite.
# Both create ./.venv and install the project into it first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
SHARED ?= $(abspath ../shared)
export RNNSERVE_SHARED_DATA ?= $(SHARED)/data
# Ray's Prometheus export port and the HTTP port of the Serve app.
METRICS_PORT ?= 8080
HTTP_PORT ?= 8000

.PHONY: run stop test test-cluster test-autoscaler bench-cluster bench-attack test-unit lint fuzz bench bench-train bench-sampling bench-split bench-classifier bench-e2e loadtest system-deps clean

$(BIN)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The compiled kernels' machine code (the compiled runner's, the sampler's, the engine's fused
# steps), built into numba's cache once per change of them, so no process that serves or
# tests has to wait ~25 s for a compile.
# The old cache goes first: numba checks only the file that defines a kernel, so the fused
# steps' cached code would outlive a change to the cells or the sampler it calls.
# compiled_runner.py and fused_steps.py hold the `compile_kernels` that make runs.
KERNELS := models/blas.py models/compiled_cells.py models/compiled_runner.py \
  sampling/sampler.py sampling/fused_steps.py
$(BIN)/.kernels: $(BIN)/.installed $(KERNELS)
	rm -f $(addsuffix __pycache__/*.nbi,$(sort $(dir $(KERNELS)))) \
	  $(addsuffix __pycache__/*.nbc,$(sort $(dir $(KERNELS))))
	$(PY) -c "from sampling.fused_steps import compile_kernels; compile_kernels()"
	touch $@

READY := $(BIN)/.installed $(BIN)/.kernels

venv: $(READY)

system-deps:
	bash scripts/system-deps.sh

# Ray 2.60 turns token auth on for a head started where ~/.ray/auth_token exists (any earlier
# local ray.init() writes one), but its CLI clients (serve deploy/shutdown, ray status) send the
# token only in token mode: say it explicitly so the head and the clients agree.
# (loadtest/run_load.py, behind `make loadtest` and `bench-e2e`, does the same for itself.)
run stop: export RAY_AUTH_MODE ?= token

# Serve's proxy on each node refuses a declared body larger than any route accepts before it
# reads a byte (deployments/proxy_guard.py). `ray start` passes this to the proxy; the cap is
# RNNSERVE_PROXY_MAX_BODY_BYTES if set, else derived from serve_config.yaml's max_upload_bytes
# (not repeated here, so the two cannot drift apart). A reused running head keeps its own.
# (loadtest/run_load.py, behind loadtest, bench-e2e and bench-attack, sets it for its own head.)
run run-ha: export RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH ?= deployments.proxy_guard:middlewares

# Replicas take RNNSERVE_* from the head's environment: a running head is reused only if it was
# started with this shell's settings (scripts/head_settings.py keeps a hash of each).
HEAD_SETTINGS := $(HOME)/.ray/rnnserve-head.json

run: $(READY)
	$(BIN)/ray get-auth-token --generate >/dev/null  # makes ~/.ray/auth_token once, if missing
	if $(BIN)/ray start --head --disable-usage-stats --include-dashboard=true \
	  --dashboard-host 127.0.0.1 --metrics-export-port $(METRICS_PORT) 2>/dev/null; then \
	  $(PY) scripts/head_settings.py record $(HEAD_SETTINGS); \
	else \
	  $(PY) scripts/head_settings.py check $(HEAD_SETTINGS) && echo "(reusing the running Ray head)"; \
	fi
	@echo "Serve app:   http://127.0.0.1:$(HTTP_PORT)/   (API docs at /docs)"
	@echo "Dashboard:   http://127.0.0.1:8265/   metrics: http://127.0.0.1:$(METRICS_PORT)/metrics"
	$(BIN)/serve run serve_config.yaml

stop:
	-$(BIN)/serve shutdown -y
	-$(BIN)/ray stop
	rm -f $(HEAD_SETTINGS)

test: $(READY) system-deps
	$(PY) -m pytest -q -p no:cacheprovider --timeout 1500 tests

# Issue 15: a simulated multi-node Ray cluster (ray.cluster_utils.Cluster: a 0-CPU head and
# 1-CPU worker nodes) in a pytest run of its own: training and serving across nodes, nodes lost.
# It shares the machine with other Ray instances (own ports and temp dir; kills only its own).
test-cluster: $(READY)
	RNNSERVE_CLUSTER_TESTS=1 $(PY) -m pytest -q -p no:cacheprovider --timeout 900 tests/cluster

# Issue 15: Ray's real autoscaler (its fake multi-node provider) launching and removing nodes
# of cluster.yaml's types on this machine, the registry in PostgreSQL: a GPU node for a
# `--use_gpu` training job, a serving node for a Generator replica Serve adds under load. A
# pytest run of its own (this process joins one Ray cluster); own ports and temp dir (~4 min).
test-autoscaler: $(READY) system-deps
	RNNSERVE_AUTOSCALER_TESTS=1 $(PY) -m pytest -q -p no:cacheprovider --timeout 900 tests/autoscaler

test-unit: $(READY)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

fuzz: $(READY) system-deps
	RNNSERVE_FUZZ_EXAMPLES=300 $(PY) -m pytest -q -p no:cacheprovider tests/integration/test_fuzz.py

lint: $(READY)
	$(BIN)/ruff check .

bench: bench-train bench-sampling bench-classifier bench-e2e

bench-train: $(READY)
	$(PY) -m benchmarks.bench_train

bench-sampling: $(READY)
	$(PY) -m benchmarks.bench_sampling

# A small model's fused steps on one thread against split over the cores, idle and busy (~1 min).
bench-split: $(READY)
	$(PY) -m benchmarks.bench_split

bench-classifier: $(READY)
	$(PY) -m benchmarks.bench_classifier

loadtest: $(READY)
	$(PY) -m loadtest.run_load --users 32 --seconds 60

bench-e2e: $(READY)
	$(PY) -m loadtest.run_load --users 8,32,64 --seconds 40 --rounds 2 --floor --naive

# Issue 13: generate latency idle and while another client sends oversized bodies and upload
# bombs in a loop (benchmarks/results/attack.json, BENCHMARKS.md). Starts the app like loadtest.
bench-attack: export RAY_AUTH_MODE ?= token
bench-attack: $(READY)
	$(PY) -m benchmarks.bench_attack

# Issue 15: a node lost in training and under serving load on a simulated cluster (the helpers
# of test-cluster), one run: benchmarks/results/cluster.json and cluster.png (BENCHMARKS.md).
# Issue 20: then the GCS of a Redis-backed head restarted under load (the helpers of test-ha).
bench-cluster: $(READY) system-deps
	$(PY) -m benchmarks.bench_cluster

# Issue 20: a highly available head. `make run-ha` is `make run` with GCS fault tolerance: a
# local redis-server (Debian's, from system-deps; append-only file on, data in storage/redis,
# port REDIS_PORT) keeps the GCS's state, so a GCS restarted with the same command line
# reloads it. RNNSERVE_REDIS_PASSWORD, if set, protects Redis: it reaches redis-server on stdin
# and the head as --redis-password, and is never written to a file. `make stop-ha` stops Serve
# and Ray (as `make stop`), deletes the cluster's state from that Redis and stops it.
# `make test-ha` (tests/ha): a GCS restart under load on a Redis-backed head of its own, the
# same on a head without Redis, a whole head restarted on Redis, and Redis itself killed and
# restarted (~15-17 min here).
.PHONY: run-ha stop-ha test-ha
REDIS_PORT ?= 6390
REDIS_DIR := $(abspath storage/redis)
REDIS_CLI = REDISCLI_AUTH="$$RNNSERVE_REDIS_PASSWORD" redis-cli -p $(REDIS_PORT)
run-ha stop-ha: export RAY_AUTH_MODE ?= token

run-ha: $(READY)
	command -v redis-server >/dev/null || bash scripts/system-deps.sh
	mkdir -p $(REDIS_DIR)
	if [ "$$($(REDIS_CLI) ping 2>/dev/null)" = PONG ]; then echo "(reusing redis on :$(REDIS_PORT))"; \
	else { [ -z "$$RNNSERVE_REDIS_PASSWORD" ] || printf 'requirepass "%s"\n' "$$RNNSERVE_REDIS_PASSWORD"; } \
	  | redis-server - --port $(REDIS_PORT) --bind 127.0.0.1 --dir $(REDIS_DIR) --appendonly yes \
	    --appendfsync everysec --daemonize yes --pidfile $(REDIS_DIR)/redis.pid --logfile redis.log; \
	  for i in $$(seq 50); do [ "$$($(REDIS_CLI) ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done; fi
	$(BIN)/ray get-auth-token --generate >/dev/null
	RAY_REDIS_ADDRESS=127.0.0.1:$(REDIS_PORT) $(BIN)/ray start --head --disable-usage-stats \
	  --include-dashboard=true --dashboard-host 127.0.0.1 --metrics-export-port $(METRICS_PORT) \
	  $${RNNSERVE_REDIS_PASSWORD:+--redis-password="$$RNNSERVE_REDIS_PASSWORD"} 2>/dev/null \
	  || echo "(a Ray head is running already: reusing it, with GCS fault tolerance only if run-ha started it)"
	@echo "GCS state:   redis 127.0.0.1:$(REDIS_PORT) (append-only file in $(REDIS_DIR))"
	@echo "Serve app:   http://127.0.0.1:$(HTTP_PORT)/   (API docs at /docs)"
	$(BIN)/serve run serve_config.yaml

stop-ha:
	-$(BIN)/serve shutdown -y
	-$(BIN)/ray stop
	-[ ! -f $(REDIS_DIR)/redis.pid ] || { $(REDIS_CLI) flushall >/dev/null; $(REDIS_CLI) shutdown; }

test-ha: $(READY) system-deps
	RNNSERVE_HA_TESTS=1 $(PY) -m pytest -q -s -p no:cacheprovider --timeout 900 tests/ha

clean:
	rm -rf $(VENV) storage results
