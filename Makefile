# recpipe: the two commands of the README. Both create .venv and install the pinned dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# Tests run in a shuffled order (pytest-randomly) so that none depends on another having run first;
# the seed is fixed for CI to be reproducible: `make test TEST_ORDER_SEED=$RANDOM` shuffles anew, and
# `.venv/bin/pytest -p no:randomly` runs the files in their written order.
TEST_ORDER_SEED ?= 20261126

AIRFLOW_VENV := .venv-airflow
AIRFLOW_INSTALLED := $(AIRFLOW_VENV)/.installed

MOTO_VENV := .venv-moto
MOTO_INSTALLED := $(MOTO_VENV)/.installed

.PHONY: demo test java redis-server redis airflow moto dist clean bench-cluster bench-snapshot bench-sparse bench-feast bench-online-feast bench-training bench-serving bench-soak bench-ingest bench-online bench-peers bench-gbdt-stage bench-200d

demo: java $(INSTALLED)
	$(BIN)/recpipe run --config conf/demo.yaml

test: java redis-server $(INSTALLED) $(AIRFLOW_INSTALLED) $(MOTO_INSTALLED)
	$(BIN)/ruff check jobs features training tests bench airflow_dags
	$(BIN)/ruff format --check jobs features training tests bench airflow_dags
	$(BIN)/mypy jobs features training
	$(BIN)/pytest -p randomly --randomly-seed=$(TEST_ORDER_SEED)

# Airflow in a virtualenv of its own: its pins never meet Spark's or TensorFlow's (and the Spark
# provider's pyspark-client would overwrite pyspark's files in a shared environment).
airflow: $(AIRFLOW_INSTALLED)

$(AIRFLOW_INSTALLED): airflow_dags/constraints-airflow.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install --quiet -c airflow_dags/constraints-airflow.txt \
	  apache-airflow==3.3.2 apache-airflow-providers-standard==1.21.0
	touch $@

# The online store's server (tests start their own on a free port). Installed only when missing; CI runs
# make test as root on a fresh machine (sudo is used when not root).
redis-server:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@redis-server --version

# A redis-server for people: on 127.0.0.1, a free port (REDIS_PORT=6379 make redis to choose), no
# persistence, in the background; point online_store.port at it.
REDIS_PORT ?= $(shell $(PYTHON) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis: redis-server
	redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
	  --dir /tmp --pidfile /tmp/recpipe-redis-$(REDIS_PORT).pid --logfile /tmp/recpipe-redis-$(REDIS_PORT).log
	@echo "redis-server on 127.0.0.1:$(REDIS_PORT): set online_store.port: $(REDIS_PORT) in your config; stop it with: redis-cli -p $(REDIS_PORT) shutdown nosave"

# An S3-compatible server for tests/test_object_store.py (moto's server mode), in a venv of its own: its
# botocore needs python-dateutil < 3, the pipeline pins 4.0.0.
moto: $(MOTO_INSTALLED)

$(MOTO_INSTALLED): tests/constraints-moto.txt
	test -x $(MOTO_VENV)/bin/python || $(PYTHON) -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/pip install --quiet -c tests/constraints-moto.txt 'moto[server]==5.2.5'
	touch $@

# What a cluster needs besides its Python dependencies: dist/recpipe.zip for spark-submit --py-files
# (jobs/dist.py; the jobs also ship it themselves, see README "Running on a cluster").
dist: $(INSTALLED)
	$(BIN)/python -m jobs.dist --out dist

java:
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then \
	  echo "recpipe needs Java 17 or newer for Spark (found: $${v:-none}); install it with: sudo apt-get install -y openjdk-17-jre-headless"; exit 2; fi

$(INSTALLED): setup.cfg pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "recpipe needs Python 3.11 (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

clean:
	rm -rf dist warehouse warehouse-movielens data spark-warehouse export export-movielens airflow-home

# Point-in-time join vs Feast (issue 4 benchmark). Feast lives in its own venv: it is a benchmark-only
# dependency and its pins would fight the pipeline's. Needs bench/out/snapshot-synthetic (bench-snapshot).
bench-snapshot: java $(INSTALLED)
	$(BIN)/python bench/snapshot_bench.py --source movielens
	$(BIN)/python bench/snapshot_bench.py --source synthetic --days 200 --users 6500 --items 3000

# Sparse snapshots at scale (issue 15): 2000 days, 300 users, 10,000 items; 10x unseen catalogue.
bench-sparse: java $(INSTALLED)
	$(BIN)/python bench/sparse_snapshot_bench.py

bench-feast: java $(INSTALLED)
	test -x .venv-feast/bin/python || $(PYTHON) -m venv .venv-feast
	.venv-feast/bin/pip install --quiet 'feast[redis,spark]==0.67.0' 'pandas<3'
	$(BIN)/python bench/pit_join_vs_feast.py prepare
	.venv-feast/bin/python bench/pit_join_vs_feast.py feast
	.venv-feast/bin/python bench/pit_join_vs_feast.py feast-spark
	$(BIN)/python bench/pit_join_vs_feast.py compare

# Our request build vs Feast's online read from Redis (issue 20), on the synthetic warehouse above
bench-online-feast: java redis-server $(INSTALLED)
	test -x .venv-feast/bin/python || $(PYTHON) -m venv .venv-feast
	.venv-feast/bin/pip install --quiet 'feast[redis,spark]==0.67.0' 'pandas<3'
	$(BIN)/python bench/online_vs_feast.py

# Training throughput per model vs tf.data alone, and SavedModel latency (issues 6 and 7). Need the
# MovieLens warehouse and exports: .venv/bin/recpipe run --config conf/movielens.yaml
bench-training: java $(INSTALLED)
	$(BIN)/python bench/training_bench.py --config conf/movielens.yaml

# DeepCTR (the peer of issue 17) in a virtualenv of its own: it needs the legacy tf_keras, not Keras 3.
DEEPCTR_VENV := .venv-deepctr
DEEPCTR_INSTALLED := $(DEEPCTR_VENV)/.installed

$(DEEPCTR_INSTALLED): bench/peers/constraints-deepctr.txt
	test -x $(DEEPCTR_VENV)/bin/python || $(PYTHON) -m venv $(DEEPCTR_VENV)
	$(DEEPCTR_VENV)/bin/pip install --quiet -c bench/peers/constraints-deepctr.txt \
	  tensorflow tf-keras deepctr pyarrow scikit-learn
	touch $@

bench-peers: java $(INSTALLED) $(DEEPCTR_INSTALLED)
	$(BIN)/python bench/peers_bench.py --config conf/movielens.yaml --seeds 1,2,3,4,5

bench-gbdt-stage: java $(INSTALLED)
	$(BIN)/python bench/gbdt_stage_bench.py --config conf/movielens.yaml

# The same benchmarks on 200 days of synthetic logs (1.43M sample rows): the warehouse is built once.
SYNTHETIC_200D := bench/out/synthetic-200d
$(SYNTHETIC_200D)/config.yaml: | java $(INSTALLED)
	$(BIN)/python bench/synthetic_warehouse.py --days 200 --out $(SYNTHETIC_200D)

bench-200d: $(SYNTHETIC_200D)/config.yaml $(DEEPCTR_INSTALLED)
	$(BIN)/python bench/gbdt_stage_bench.py --config $(SYNTHETIC_200D)/config.yaml --repeats 1
	$(BIN)/python bench/peers_bench.py --config $(SYNTHETIC_200D)/config.yaml --epochs 1 --repeats 1
	$(BIN)/python bench/training_bench.py --config $(SYNTHETIC_200D)/config.yaml --models lr,gbdt_lr --epochs 1 --repeats 1
	$(BIN)/python bench/training_bench.py --config $(SYNTHETIC_200D)/config.yaml --models lr,gbdt_lr --paths streamed,encoded --epochs 2 --repeats 1

bench-serving: java $(INSTALLED)
	$(BIN)/python bench/serving_bench.py --config conf/movielens.yaml

# What the redelivery check costs ingest: check on vs off, backfill and daily runs (issue 14).
bench-ingest: java $(INSTALLED)
	$(BIN)/python bench/ingest_bench.py

# 60 daily runs with injected faults vs a fault-free run (issue 10); prints what it checked.
bench-soak: java $(INSTALLED)
	$(BIN)/python bench/soak.py --days 60

# Online store (issue 20): publish throughput full vs incremental on 200 synthetic days, request build
# p50/p99 for 1 user x 100 items, and end to end with a SavedModel in process.
bench-online: java redis-server $(INSTALLED)
	$(BIN)/python bench/online_store_bench.py --days 200 --users 1000 --items 300

# The demo pipeline's Spark stages on a standalone cluster (one master, one worker with 2 cores) vs local[2]
# (issue 19): wall time per stage and the same tables.
bench-cluster: java $(INSTALLED)
	$(BIN)/python bench/cluster_bench.py
