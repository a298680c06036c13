# Two commands on a fresh clone:  `make demo` (set up, then run the demo)  and  `make test` (set up, then test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/openfootprints demo

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/evaluate_1m.py
	$(BIN)/python bench/cpu_engines.py --model demo_output/model.ofp
	$(BIN)/python bench/detect_memory.py --model demo_output/model.ofp

clean:
	rm -rf $(VENV) demo_output mlruns .pytest_cache
