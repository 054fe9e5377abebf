# Two commands on a fresh machine: `make demo` and `make test`. Every install step lives here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The open_clip wheel ships OpenAI's CLIP BPE merges; we install it without dependencies (never
# import it: it pulls torchvision) so that fgclip_core can find the vocabulary offline.
OPEN_CLIP_WHEEL := open-clip-torch==3.3.0
export DS_ACCELERATOR ?= cpu
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.fgclip/torch_extensions
export FGCLIP_HOME ?= $(CURDIR)/.fgclip
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install cpu-allocator demo dagster-home dagster-dev postgres-bin postgres postgres-stop mlflow-server test test-ties test-unit test-integration lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps $(OPEN_CLIP_WHEEL)
	# Compile DeepSpeed's CPU shared-memory comm op once here (about 30 s), not inside the first
	# multi-process training run where every rank would race to build and load it.
	$(PY) -c "from deepspeed.accelerator import get_accelerator as a; a().create_op_builder('ShareMemCommBuilder').load()"
	@$(MAKE) --no-print-directory cpu-allocator || echo "WARNING: tcmalloc not installed; CPU training keeps glibc malloc (fgclip train --cpu-allocator)"
	@touch $(STAMP)

install: $(STAMP)

# tcmalloc for CPU training (fgclip train --cpu-allocator, benchmarks/train_step.py --allocator): glibc gives
# every freed block of >= 32 MB back to the kernel, so DeepSpeed's per-step buffers are page-faulted in again
# every step. Debian/Ubuntu package, needs root; optional (the project works without it).
cpu-allocator:
	@$(PY) -c "import sys; from fgclip_core.train.allocator import find_tcmalloc as f; sys.exit(f() is None)" \
	  || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	       && { timeout 300 apt-get install -y -q libtcmalloc-minimal4 >/dev/null \
	            || { timeout 300 apt-get update -q >/dev/null && timeout 300 apt-get install -y -q libtcmalloc-minimal4 >/dev/null; }; }; }
	@$(PY) -c "from fgclip_core.train.allocator import find_tcmalloc as f; p = f(); print('tcmalloc:', p); assert p"

.PHONY: demo-cli ui
# The whole graph through Dagster on the embedded defaults (SQLite Dagster instance in .fgclip/dagster_home,
# SQLite MLflow, local folders); each run lands the next sample batch, ticks the sensor, annotates only the
# new batch, retrains on all of them and applies the promotion gates (orchestration/demo.py).
demo: $(STAMP)
	$(PY) -m orchestration.demo

# The same pipeline as plain `fgclip` commands, no Dagster (fgclip_core/demo.py).
demo-cli: $(STAMP)
	$(PY) -m fgclip_core.demo

# The embedded Dagster instance: DAGSTER_HOME/dagster.yaml (SQLite storage, run queue, run retries, pools
# training=1 and annotation_endpoint=2), written by orchestration/instance.py. FGCLIP_DAGSTER_STORAGE=postgres
# (with DAGSTER_PG_URL in the environment, e.g. from `make postgres`) writes Postgres storage instead.
export DAGSTER_HOME ?= $(FGCLIP_HOME)/dagster_home
dagster-home: $(STAMP)
	$(PY) -m orchestration.instance
# The Dagster UI (webserver + daemon) and the MLflow UI, both on 127.0.0.1; Ctrl-C stops both.
DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000
ui: $(STAMP)
	@$(PY) -m orchestration.instance; \
	MLFLOW_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(FGCLIP_HOME)/mlflow.db}"; \
	echo "Dagster http://127.0.0.1:$(DAGSTER_PORT)  MLflow http://127.0.0.1:$(MLFLOW_PORT)"; \
	MLFLOW_BACKEND_STORE_URI="$$MLFLOW_URI" $(PY) -m infra.stack.mlflow_server --port $(MLFLOW_PORT) & \
	MLFLOW_PID=$$!; trap 'kill $$MLFLOW_PID 2>/dev/null' EXIT INT TERM; \
	MLFLOW_UI_URL=$${MLFLOW_UI_URL:-http://127.0.0.1:$(MLFLOW_PORT)} \
	  $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DAGSTER_PORT)

# Opt-in scale-out stack (infra/README.md, "Local stack"); the embedded SQLite defaults need none of it.
# PostgreSQL server binaries: the Debian package `postgresql` when they are missing (apt-get and root only).
PG_DIR ?= $(FGCLIP_HOME)/postgres
PG_PORT ?=
postgres-bin:
	@$(PYTHON) -c "import sys; from infra.stack.postgres import pg_bin_dir as f; sys.exit(f() is None)" \
	  || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	       && { timeout 600 apt-get install -y -q postgresql >/dev/null \
	            || { timeout 300 apt-get update -q >/dev/null && timeout 600 apt-get install -y -q postgresql >/dev/null; }; }; }
	@$(PYTHON) -c "from infra.stack.postgres import pg_bin_dir as f; p = f(); print('postgres binaries:', p); assert p"
# A persistent cluster in $(PG_DIR) on 127.0.0.1 (databases dagster, mlflow); prints its URL, password masked.
# `python -m infra.stack.postgres url --dir $(PG_DIR) --db dagster` prints one whole; `make postgres-stop` stops it.
postgres: $(STAMP) postgres-bin
	@$(PY) -m infra.stack.postgres start --dir $(PG_DIR) $(if $(PG_PORT),--port $(PG_PORT))
postgres-stop:
	$(PY) -m infra.stack.postgres stop --dir $(PG_DIR)
# MLflow tracking server on that Postgres (database mlflow), artifacts proxied to MLFLOW_ARTIFACTS_DESTINATION
# (s3://BUCKET/PREFIX with AWS_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL and AWS credentials, or a folder);
# clients then use MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_SERVER_PORT). Ctrl-C stops it.
MLFLOW_SERVER_PORT ?= 5000
MLFLOW_ARTIFACTS_DESTINATION ?= $(FGCLIP_HOME)/mlflow-artifacts
mlflow-server: postgres
	$(PY) -m infra.stack.mlflow_server --pg-dir $(PG_DIR) --port $(MLFLOW_SERVER_PORT) \
	  --artifacts-destination "$(MLFLOW_ARTIFACTS_DESTINATION)"

# The Dagster UI (http://127.0.0.1:3000) with the daemon, for clicking materialisations.
dagster-dev: dagster-home
	$(VENV)/bin/dagster dev -w workspace.yaml

test: $(STAMP) postgres-bin
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra --durations=20 tests
	@$(MAKE) --no-print-directory test-ties

# Evaluation tie decisions must not depend on the CPU (issue 14): the tie tests once per MKL
# instruction set and ATen CPU capability. A choice the CPU lacks falls back to what it has.
TIE_TESTS := tests/unit/test_eval_ties.py tests/unit/test_eval_suites.py::test_retrieval_constant_scorer_gets_zero_at_one
test-ties: $(STAMP)
	@for mkl in AVX2 AVX512; do for aten in default avx2 avx512; do \
	  echo "tie tests: MKL_ENABLE_INSTRUCTIONS=$$mkl ATEN_CPU_CAPABILITY=$$aten"; \
	  MKL_ENABLE_INSTRUCTIONS=$$mkl ATEN_CPU_CAPABILITY=$$aten $(PY) -m pytest -q -p no:cacheprovider $(TIE_TESTS) \
	    || exit 1; \
	done; done

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP) cpu-allocator
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf .fgclip .pytest_cache .ruff_cache .mypy_cache
