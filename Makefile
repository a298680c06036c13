# Two commands on a fresh clone:  `make demo` (set up, then run the demo)  and  `make test` (set up, then test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
VIEWER := src/openfootprints/view/static/viewer.js

.PHONY: setup demo test test-fast docs bench clean

setup: $(VENV)/.installed $(VIEWER)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-cache-dir -e '.[test]'
	touch $@

# The map viewer's JavaScript bundle (MapLibre GL JS, PMTiles) from web/package-lock.json; not kept in git.
# Without npm everything else still works and `openfootprints view` says how to build it.
$(VIEWER): web/package-lock.json web/build.mjs $(wildcard web/src/*)
	@if command -v npm >/dev/null; then \
		cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && npm run --silent build; \
	else echo "npm not found: the map viewer is not built (install Node.js and npm, then make setup)"; fi

demo: setup
	$(BIN)/openfootprints demo

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

# The tests that neither train nor start Ray, a browser or an object store (those are marked slow), on every core.
test-fast: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -q -m "not slow" -n auto

# The Python API reference (HTML) in docs/api/
docs: setup
	$(BIN)/python docs/api_reference.py docs/api

bench: setup
	$(BIN)/python bench/evaluate_1m.py
	$(BIN)/python bench/cpu_engines.py --model demo_output/model.ofp
	$(BIN)/python bench/detect_memory.py --model demo_output/model.ofp
	$(BIN)/python bench/vectorize_speed.py

clean:
	rm -rf $(VENV) demo_output mlruns .pytest_cache .mypy_cache docs/api web/node_modules $(VIEWER) $(VIEWER:.js=.css)
