# The Makefile is the interface: CI calls these same targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The repository runs from its checkout: the code, the generated stubs and the client package's
# source (clients/python installs them together with pip, for callers outside this repository).
export PYTHONPATH := $(CURDIR):$(CURDIR)/gen:$(CURDIR)/clients/python/src

.DEFAULT_GOAL := help
.PHONY: help setup system-deps protos run test test-unit test-integration lint typecheck bench chaos clean lock

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

system-deps: ## install redis-server and PostgreSQL through apt (root) or say what is missing
	@bash scripts/ensure-system-deps.sh

# Every dependency, dev tools included, exactly as requirements.lock pins it and only with the
# hashes it lists (a changed or substituted file fails the install); then the project itself,
# which adds no package (--no-deps; setuptools comes from the lock, hence no build isolation).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The lock files, from pyproject.toml: requirements.lock (runtime + dev, what `make setup`
# installs) and requirements-image.lock (runtime + grpcio-tools, what the image's builder
# installs). Pins already in them are kept; `make lock LOCK_ARGS=--upgrade` moves to the newest.
# pip-compile runs from a venv of its own, so pip-tools is not one of the project's dependencies.
LOCK_VENV := .lock-venv
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links $(LOCK_ARGS)
lock: ## regenerate requirements.lock and requirements-image.lock (hashes) from pyproject.toml
	@test -x $(LOCK_VENV)/bin/pip-compile || \
		($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools)
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --extra dev -o requirements.lock pyproject.toml
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --extra protos -o requirements-image.lock \
		pyproject.toml

setup: system-deps $(STAMP) protos ## everything needed to run and test

gen/.stamp: $(STAMP) $(wildcard protos/bank/v1/*.proto) scripts/gen_protos.py
	$(PY) scripts/gen_protos.py
	@touch gen/.stamp

protos: $(STAMP) gen/.stamp ## generate gen/bank/v1 (Python, type stubs) and gen/bank.desc

run: setup ## start the whole stack locally with demo data (crashed replicas restart; Ctrl-C stops it)
	$(PY) -m devstack.launcher

test: setup ## the whole suite: unit, integration (real PostgreSQL + Redis Cluster), e2e
	$(PY) -m pytest -q -p no:cacheprovider tests

test-unit: setup ## unit tests only (fakes, no servers)
	$(PY) -m pytest -q tests/unit

lint: setup ## ruff + mypy --strict on the source
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy shared services devstack bench chaos bankctl clients/python/src

bench: setup ## benchmarks: cache off vs on, ratios to raw PostgreSQL and Redis (BENCH_ARGS=--quick)
	$(PY) -m bench $(BENCH_ARGS)

chaos: setup ## seeded fault injection on a stack of its own, free ports (CHAOS_ARGS="--seed N --profile short")
	$(PY) -m chaos $(CHAOS_ARGS)

clean: ## remove generated code and local run state
	rm -rf gen .run
