# The two commands: `make run` serves the demo project, `make test` runs lint, mypy and the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Each target installs what it needs, once per change of pyproject.toml.
RUN_STAMP := $(VENV)/.run-stamp
TEST_STAMP := $(VENV)/.test-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: run test lint typecheck format bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The demo: the app, the embedded store and the server's static files; no test tools.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[embedded,server]"
	touch $@

# The suite (it also runs the bench harness on tiny counts).
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test,bench]"
	touch $@ $(RUN_STAMP)

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[bench]"
	touch $@ $(RUN_STAMP)

install: $(TEST_STAMP)

run: export DJANGO_DEBUG = 1
run: $(RUN_STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo --key-file .demo-api-key
	@if [ -z "$$OPENAI_API_KEY" ] && [ "$$QUOTAS_PROVIDER" != "openai" ]; then \
		echo "No OPENAI_API_KEY: the built-in mock provider is serving (answers start with [mock])."; \
	fi
	@echo "Serving on http://$(HOST):$(PORT)/ (admin: http://$(HOST):$(PORT)/admin/)"
	$(BIN)/python -m uvicorn quotaproject.asgi:application --host $(HOST) --port $(PORT) --lifespan off

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

format: $(TEST_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles .demo-api-key
