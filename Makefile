# The two commands a fresh clone needs are `make demo` and `make test`; each sets up what it uses.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CD4ML := $(VENV)/bin/cd4ml
PYTEST_ARGS ?=

.PHONY: help setup serving-setup system-deps demo test test-fast lint lock benchmark kubeflow-image-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup:  ## build .venv (pipeline environment) from requirements/pipeline.lock; fast when up to date
	@scripts/setup_env.sh pipeline

serving-setup:  ## build .venv-serving (Seldon v1 server), .venv-v2 (Open Inference Protocol server) and .venv-kserve (its test client)
	@scripts/setup_env.sh serving
	@scripts/setup_env.sh v2
	@scripts/setup_env.sh kserve-client

system-deps:  ## Debian packages the tests use (mariadb-server), installed when missing
	@scripts/system_deps.sh

demo: setup serving-setup  ## the whole loop: train, serve, drift, drop, retrain, hot-load, roll back/forward
	$(CD4ML) demo

test: setup serving-setup system-deps  ## run the whole test suite (unit, end-to-end pipeline, serving, triggers, MySQL)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## the tests that need no pipeline run
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup  ## ruff over the tree
	$(VENV)/bin/ruff check .

lock:  ## re-resolve requirements/*.in into exact lock files (needs uv)
	uv pip compile --python-version 3.10 --python-platform x86_64-manylinux_2_36 requirements/pipeline.in -o requirements/pipeline.lock
	uv pip compile --python-version 3.10 --python-platform x86_64-manylinux_2_36 requirements/serving.in -o requirements/serving.lock
	uv pip compile --python-version 3.12 --python-platform x86_64-manylinux_2_36 requirements/v2.in -o requirements/v2.lock
	uv pip compile --python-version 3.12 --python-platform x86_64-manylinux_2_36 requirements/kserve-client.in -o requirements/kserve-client.lock

kubeflow-image-check: setup  ## build the pipeline image (podman) and run the compiled job in it, task by task (not in make test: ~3 GB)
	@scripts/kubeflow_image_check.sh

benchmark: setup  ## run the benchmarks, writing JSON under benchmarks/results/
	$(PY) benchmarks/pipeline.py

clean:  ## remove the environments (not ~/.cd4ml)
	rm -rf $(VENV) .venv-serving .venv-v2 .venv-kserve
