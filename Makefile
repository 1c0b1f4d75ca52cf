# The project's verbs. `make run` and `make test` are the README's Quick start.
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# `python` in MLproject commands must be this venv's (mlflow run --env-manager local).
export PATH := $(BIN):$(PATH)

.PHONY: setup wheel browser run test lint ui bench bench-gates clean stack-start stack-stop stack-status ray-start ray-stop

$(VENV)/.installed: pyproject.toml requirements.lock requirements-dev.lock
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[all]'
	touch $@

setup: $(VENV)/.installed  ## create .venv with the pinned dependencies

wheel: setup  ## the installable wheel in dist/ (the default configs inside it)
	$(BIN)/pip wheel --no-deps --quiet --disable-pip-version-check -w dist .

browser:  ## Debian's chromium for the real-browser UI tests, when missing (apt-get, as root)
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y --no-install-recommends chromium || \
	  { apt-get update && apt-get install -y --no-install-recommends chromium; }; \
	else echo "make browser: chromium is missing and this is not root with apt-get;" \
	  "the UI tests will be skipped (CI=true: they fail)"; fi

run: setup  ## the full pipeline on the bundled default data (embedded SQLite tracking)
	$(BIN)/mlflow run . --env-manager local --experiment-name breast_cancer $(if $(HYDRA_OPTIONS),-P hydra_options="$(HYDRA_OPTIONS)")

test: setup browser  ## lint, then every test (slow end-to-end tests included), on 2 workers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest --numprocesses 2 --dist loadfile

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

ui: setup  ## the MLflow UI over the embedded store, on http://127.0.0.1:5000
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

bench: setup  ## the 1M-row benchmark; writes docs/benchmarks.md
	$(BIN)/python bench/run.py

bench-gates: setup  ## the data gates against plain pandas checks (1M rows x 32 columns, in-process)
	$(BIN)/python bench/run.py --gates

stack-start: setup  ## the shared tracking server (PostgreSQL + S3 + mlflow server, each behind a generated secret) on 127.0.0.1:5055; then `set -a; . .stack/env; set +a`
	$(BIN)/python scripts/stack.py start

stack-status:
	$(BIN)/python scripts/stack.py status

stack-stop:  ## stop it; runs, artifacts and secrets stay in .stack/ (rm -rf .stack forgets them)
	$(BIN)/python scripts/stack.py stop

ray-start:  ## a one-machine Ray cluster on 127.0.0.1 for hydra/launcher=ray_cluster
	scripts/ray.sh start

ray-stop:
	scripts/ray.sh stop

clean:  ## remove the embedded store, artifacts and Hydra outputs (not .venv)
	rm -rf mlflow.db mlruns outputs multirun
