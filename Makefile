# Two commands on a fresh machine (Python >= 3.10 with venv):
#   make run    set up .venv, start the dashboard on live Binance data at http://localhost:8501
#               (offline: make run SOURCE=simulated)
#   make test   set up .venv with the dev tools, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCE ?=

.PHONY: run record test lint bench clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(if $(SOURCE),QUANT_SOURCE=$(SOURCE) )$(PY) -m streamlit run server.py

record: $(VENV)/.runtime
	$(PY) -m cli.record $(ARGS)

test: $(VENV)/.dev
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

bench: $(VENV)/.dev
	$(PY) bench/ingest.py
	$(PY) bench/analytics.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
