# Two commands on a fresh machine with Python 3.11 and make: `make run`, `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# HOST and PORT come from the environment or .env (default 127.0.0.1:8000); `make run PORT=9000`
# passes one on the command line.
SERVE_FLAGS = $(if $(filter command line,$(origin HOST)),--host $(HOST)) $(if $(filter command line,$(origin PORT)),--port $(PORT))

.PHONY: run test lint typecheck pytest lock bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3 …'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python requirements-dev.txt pyproject.toml
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/contact-adapter serve $(SERVE_FLAGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check adapter handlers tests bench
	$(BIN)/ruff format --check adapter handlers tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy --strict adapter handlers

pytest: $(VENV)/.installed-dev
	bash tests/system-deps.sh
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

# Regenerate the pinned lock files after changing dependencies in pyproject.toml.
lock: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml -o requirements.txt --python-version 3.11 -q
	printf '%s\n' '# The project itself (the contact-adapter command): Heroku installs only this file.' '--editable .' >> requirements.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements-dev.txt --python-version 3.11 -q

# Every bench script in turn (each prints ratios to baselines run in the same session).
# wrk (the ideal keep-alive client) and PostgreSQL come from Debian when missing.
bench: $(VENV)/.installed-dev
	bash tests/system-deps.sh wrk
	for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
