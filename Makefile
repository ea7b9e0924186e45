# The two commands a newcomer needs: `make dev` and `make test`.
# Everything installs into .venv from requirements.lock (pinned, with hashes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test test-quick lint lock clean

dev: $(STAMP)
	$(BIN)/ferrumdeck dev

test: $(STAMP)
	$(BIN)/python -m pytest

# The inner loop: everything but the tests that start whole stacks or kill processes.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check services tui tests bench testbed
	$(BIN)/ruff format --check services tui tests bench testbed
	$(BIN)/mypy
	# Source checks: the import layering and the wire vocabulary spelled once.
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_layering.py tests/unit/test_wire_vocabulary.py

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("FerrumDeck needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve the lock after changing dependencies in pyproject.toml.
lock:
	$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(PYTHON) -m uv pip compile pyproject.toml --extra build --extra embedded --extra test \
		--generate-hashes --universal --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
