# CryptoLake — `make help` lists the targets. Every target sets up what it needs first.
SHELL := bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
# Local stack overrides: `make run SOURCE=simulator`.
SOURCE ?= auto
# Files for `make replay FILES="BTCUSDT-trades-2024-01-01.zip …"`.
FILES ?=
PYTEST_ARGS ?=

.PHONY: help setup run test test-unit lint format bench-producer bench-gaps bench-klines bench-alerts bench-replay bench-backfill bench-freshness \
	bench-api bench-operator kube replay backfill monitor maintenance rebuild api kafka minio clean distclean \
	crd crd-upgrade chart-lint dashboards docs images cluster-up cluster-down cluster-status test-e2e

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

setup: ## install everything (Debian, PyPI, Maven Central, Go module proxy); idempotent, fast when warm
	@./tools/setup.sh

run: setup ## the local stack: Kafka + producer (live, else simulator) + Spark jobs + API/dashboard on :8000
	@CRYPTOLAKE_SOURCE=$(SOURCE) $(BIN)/cryptolake-stack run

test: setup ## every test: unit, and integration against real Kafka, MinIO and Spark
	@$(BIN)/pytest $(PYTEST_ARGS)

test-unit: setup ## only the tests that need no service
	@$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

lint: setup ## ruff (lint + format check) and mypy (strict on the shared contract)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy common/src producer/src jobs/src api/src operator/src alerts/src tools/stack/src

format: setup ## apply ruff's formatting and safe fixes
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

bench-producer: setup ## producer throughput: simulator flood → parse → real Kafka (last line: producer_trades_per_s=N)
	@$(BIN)/python benchmarks/bench_producer.py

bench-gaps: setup ## gap recovery: drops at 500 trades/s → time to close a gap, recovered trades/s, added CPU (last line: gap_close_s=S recovered_per_s=N added_cpu_pct=P)
	@$(BIN)/python benchmarks/bench_gaps.py

bench-klines: setup ## kline checks: a day of Gold candles against the simulator's klines (last line: kline_check_s_per_market_day=S cpu_s_per_market_day=S …)
	@$(BIN)/python benchmarks/bench_klines.py

bench-alerts: setup ## alerts: Gold commit → webhook latency and evaluation cost, 20 markets × 10 rules (last line: alert_latency_p50_s=S alert_latency_p95_s=S evaluation_ms_mean=MS)
	@$(BIN)/python benchmarks/bench_alerts.py

bench-replay: setup ## backlog replay: 2M trades in Kafka → Bronze, Silver, Gold caught up (last line: replay_trades_per_s=N)
	@$(BIN)/python benchmarks/bench_replay.py

bench-backfill: setup ## backfill: 2M trades in Binance dump files → every table, no broker (last line: backfill_trades_per_s=N)
	@$(BIN)/python benchmarks/bench_backfill.py

bench-freshness: setup ## freshness at 2,000 trades/s: p95 of visible − event time (last line: silver_p95_s=S gold_p95_s=S)
	@$(BIN)/python benchmarks/bench_freshness.py

bench-api: setup ## API: wrk on /v1/candles (1,440 bars, 100 connections) + commit-to-API latency (last line: candles_p99_ms=N rps=N)
	@$(BIN)/python benchmarks/bench_api.py

bench-operator: setup ## operator: CR → all children, spec change → observedGeneration, on a source-built control plane (last line: children_s=S generation_s=S)
	@$(BIN)/python benchmarks/bench_operator.py

replay: setup ## publish Binance trade dumps into the local broker: make replay FILES="…"
	@test -n "$(FILES)" || { echo 'usage: make replay FILES="BTCUSDT-trades-2024-01-01.zip …"'; exit 2; }
	@$(BIN)/cryptolake-producer replay $(FILES)

backfill: setup ## load Binance dumps into every table of .local/lakehouse, no broker (stop `make run` first): make backfill FILES="…"
	@test -n "$(FILES)" || { echo 'usage: make backfill FILES="BTCUSDT-trades-2024-01-01.zip …"'; exit 2; }
	@CRYPTOLAKE_TABLE_ROOT=$${CRYPTOLAKE_TABLE_ROOT:-.local/lakehouse} $(BIN)/python -m cryptolake.jobs backfill $(FILES)

monitor: setup ## rows, Delta version, latest event and freshness per table of .local/lakehouse (JSON=1 for JSON)
	@CRYPTOLAKE_TABLE_ROOT=$${CRYPTOLAKE_TABLE_ROOT:-.local/lakehouse} $(BIN)/python -m cryptolake.jobs monitor $(if $(JSON),--json)

maintenance: setup ## OPTIMIZE closed partitions and VACUUM every table of .local/lakehouse (streams stopped)
	@CRYPTOLAKE_TABLE_ROOT=$${CRYPTOLAKE_TABLE_ROOT:-.local/lakehouse} $(BIN)/python -m cryptolake.jobs maintenance

rebuild: setup ## recompute silver and gold of .local/lakehouse from bronze (stop `make run` first)
	@CRYPTOLAKE_TABLE_ROOT=$${CRYPTOLAKE_TABLE_ROOT:-.local/lakehouse} $(BIN)/python -m cryptolake.jobs rebuild

api: setup ## only the API and dashboard over .local/lakehouse (http://127.0.0.1:8000/)
	@CRYPTOLAKE_TABLE_ROOT=$${CRYPTOLAKE_TABLE_ROOT:-.local/lakehouse} $(BIN)/cryptolake-api

kube: setup ## a Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on loopback; prints KUBECONFIG
	@$(BIN)/cryptolake-stack kube

kafka: setup ## only the Kafka broker, in the foreground (127.0.0.1:9092)
	@$(BIN)/cryptolake-stack kafka

minio: setup ## only MinIO (S3), in the foreground (127.0.0.1:9000, data in .local/minio)
	@$(BIN)/cryptolake-stack minio

images: setup ## build every image offline (debootstrap base + buildah) into OCI archives in the cache; imported when the cluster runs
	@$(BIN)/cryptolake-stack images

cluster-up: setup ## a real single-node Kubernetes in the `cryptolake` netns, images built and imported; prints KUBECONFIG
	@$(BIN)/cryptolake-stack cluster up --images

cluster-down: ## stop the local cluster and every pod (state kept for a fast cluster-up)
	@$(BIN)/cryptolake-stack cluster down

cluster-status: ## what of the local cluster runs (exit 1 when not up)
	@$(BIN)/cryptolake-stack cluster status

test-e2e: setup ## only the e2e tier: chart + operator + the whole pipeline on the local cluster (--keep-cluster via PYTEST_ARGS)
	@$(BIN)/pytest -m e2e $(PYTEST_ARGS)

crd: setup ## regenerate the CRD from the operator's models into k8s/crd/ and the chart's crds/
	@$(BIN)/cryptolake-operator crd > k8s/crd/cryptopipelines.cryptolake.io.yaml
	@cp k8s/crd/cryptopipelines.cryptolake.io.yaml charts/cryptolake/crds/
	@echo "wrote k8s/crd/cryptopipelines.cryptolake.io.yaml and charts/cryptolake/crds/"

crd-upgrade: setup ## apply the chart's CRDs to $$KUBECONFIG's cluster (Helm never upgrades crds/): before helm upgrade
	@$(BIN)/kubectl apply --server-side --force-conflicts -f charts/cryptolake/crds/

chart-lint: setup ## helm lint --strict the chart with each charts/cryptolake/ci/*-values.yaml
	@for values in charts/cryptolake/ci/*-values.yaml; do \
	  $(BIN)/helm lint --strict charts/cryptolake --values $$values | grep -v '^$$' || exit 1; done

docs: setup ## regenerate docs/configuration.md from the settings classes (every variable, default, meaning)
	@$(BIN)/python docs/generate_configuration.py

dashboards: setup ## regenerate the Grafana dashboards' JSON (charts/cryptolake/dashboards/generate.py)
	@$(BIN)/python charts/cryptolake/dashboards/generate.py

clean: ## remove local state (.local: broker and MinIO data) and test caches
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache .hypothesis artifacts

distclean: clean ## also remove the virtualenv (the download cache in ~/.cache/cryptolake stays)
	rm -rf $(VENV)
