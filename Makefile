# Usual targets (`make help` lists them). Every target installs what it needs into .venv
# first (scripts/bootstrap).
PY := .venv/bin/python
BOOT := scripts/bootstrap
# The one image tag (README, deploy/deployment.yaml): the distribution's name and version.
IMAGE := hybridcache-server:0.1.0

.PHONY: help install proto proto-check lint typecheck buf buf-breaking test test-unit test-client-compat test-faults scaleout manifests soak bench run docker image-test fresh-test clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## set up .venv (scripts/bootstrap; idempotent)
	$(BOOT)

proto: install ## regenerate client/src/hybridcache/v1 from protos/
	$(PY) scripts/gen_protos.py

proto-check: install ## fail if the generated code has drifted from protos/
	$(PY) scripts/gen_protos.py --check

lint: install ## ruff check, ruff format --check, mypy
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

typecheck: install ## mypy: --strict on the shipped code, lenient on tests/ and scripts
	.venv/bin/mypy

buf: install ## buf lint of protos/
	scripts/buf lint

buf-breaking: install ## buf breaking: protos/ against the released contract (protos-baseline/)
	scripts/buf breaking --against ../protos-baseline

test: ## the one test command (scripts/test): checks, lint, the test suite
	scripts/test

test-unit: install ## the unit tests alone, under coverage (the cache core >= 95 % of branches)
	scripts/test-unit

test-client-compat: install ## the client wheel with its oldest allowed grpcio/protobuf and the newest (slow)
	.venv/bin/pytest tests/integration/test_client_package.py -k the_wheel_installs_alone -m "" -p no:cacheprovider

scaleout: install ## fleet measurements (10 replicas, Sentinel failover figures)
	.venv/bin/pytest tests/scaleout -m scaleout -s -p no:cacheprovider

manifests: install ## check deploy/ against the Kubernetes schemas
	$(PY) scripts/check_manifests.py

test-faults: install ## fault-injection scenarios, full variants (marked slow)
	.venv/bin/pytest tests/faults -m "faults and slow" -p no:cacheprovider

soak: install ## the 10-minute soak
	.venv/bin/pytest tests/faults -m soak -p no:cacheprovider

bench: install ## the benchmark suite (docs/BENCHMARKS.md)
	.venv/bin/hybridcache bench

run: ## the dev stack: Redis + development Wrapper + server (scripts/dev)
	scripts/dev

docker: ## build the image with docker, FROM the pinned public base
	docker build -t $(IMAGE) .

image-test: install ## build the image here (podman, local Debian base) and run its entrypoint (root; minutes)
	.venv/bin/pytest tests/image -m image -s -p no:cacheprovider

fresh-test: install ## scripts/bootstrap + the dev stack in a clean clone, redis-server and npm hidden (minutes)
	.venv/bin/pytest tests/fresh -m fresh -s -p no:cacheprovider

clean: ## remove .venv and build/test caches
	rm -rf .venv dist build .mypy_cache .ruff_cache .pytest_cache
