# Usual targets. Every target installs what it needs into .venv first (scripts/bootstrap).
PY := .venv/bin/python
BOOT := scripts/bootstrap

.PHONY: install proto proto-check lint typecheck buf test test-faults scaleout manifests soak bench run docker clean

install:
	$(BOOT)

proto: install
	$(PY) scripts/gen_protos.py

proto-check: install
	$(PY) scripts/gen_protos.py --check

buf: install
	scripts/buf lint

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

typecheck: install
	.venv/bin/mypy

test:
	scripts/test

scaleout: install
	.venv/bin/pytest tests/scaleout -m scaleout -s -p no:cacheprovider

manifests: install
	$(PY) scripts/check_manifests.py

test-faults: install
	.venv/bin/pytest tests/faults -m "faults" -p no:cacheprovider

soak: install
	.venv/bin/pytest tests/faults -m soak -p no:cacheprovider

bench: install
	.venv/bin/hybridcache bench

run:
	scripts/dev

docker:
	docker build -t hybridcache:dev .

clean:
	rm -rf .venv dist build .mypy_cache .ruff_cache .pytest_cache
