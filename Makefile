# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   - the product end to end on embedded defaults (SQLite, filesystem broker)
#   make test   - the test suite, against PostgreSQL and Redis on 127.0.0.1 when reachable
#   make test-s3 - the end-to-end subset again with blobs in an S3 bucket (moto on loopback)
#   make stack  - the production layout on this machine: nginx, gunicorn, worker, beat, PostgreSQL, Redis

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Reinstall only when a requirements file changes; pip keeps its cache in ~/.cache/pip.
STAMP := $(VENV)/.installed

export MOAI_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/moai
export MOAI_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: install browsers proxy demo test test-s3 stack lint format clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade-strategy only-if-needed -r requirements-dev.txt
	touch $(STAMP)

# The admin's browser tests drive Debian's Chromium (Playwright cannot download its own here).
browsers:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# nginx stands in front of gunicorn in every production shape (scripts/proxy.py); the hostile
# tests and `make stack` run Debian's. nginx-light where the release still has it, else nginx.
proxy:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -qq && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; }; }

demo: install
	$(BIN)/python -m scripts.demo

test: install browsers proxy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The end-to-end subset again with every blob in an S3 bucket: moto's S3 server on loopback,
# started by the tests (scripts/s3local.py), for web, worker and the test process alike.
S3_SUITE := tests/test_e2e.py tests/test_api_sessions.py tests/test_api_jobs.py tests/test_lifecycle.py \
	tests/test_faults.py tests/test_blob_storage.py tests/test_audit_checkpoints.py
test-s3: install proxy
	MOAI_TEST_BLOB_STORAGE=s3 $(BIN)/python -m pytest $(S3_SUITE) $(PYTEST_ARGS)

stack: install proxy
	$(BIN)/python -m scripts.prodstack $(STACK_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=1 MOAI_DATA_DIR=var/lint $(BIN)/mypy .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var build
