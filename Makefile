# Two commands on a fresh machine: `make demo` runs the Chicago taxi example end to end,
# `make test` runs lint, types and the whole test suite. Both create or reuse .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-output
# Keep every Google client off the metadata server: nothing here has credentials.
export NO_GCE_CHECK := true
export GCE_METADATA_HOST := 127.0.0.1:1
export GCE_METADATA_IP := 127.0.0.1:1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test lint typecheck unit venv emulators airflow browser tfdv clean

# ML Metadata (the lineage store) declares protobuf<5 but runs on the protobuf 6 that
# tensorflow 2.21 needs (its C++ store exchanges serialized messages only): it is installed
# without its pins, and tests/test_lineage.py exercises it on this protobuf.
$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[tft,gcp,train,dev,orchestrators,report]'
	$(BIN)/python -m pip install -q --no-deps 'ml-metadata==1.17.1'
	touch $(STAMP)

venv: $(STAMP)

# Raw CSV -> dataset (validated; its HTML report) -> data gate -> trained model -> gate ->
# local prediction server; one raw trip is sent to the server, its prediction printed, and
# the server stopped (also when a step fails).
demo: $(STAMP)
	$(BIN)/beamforge run examples/chicago_taxi/pipeline.yaml \
		--input examples/chicago_taxi/data/sample.csv --output $(DEMO_OUT)
	$(BIN)/beamforge report $(DEMO_OUT) -o demo-report.html
	$(BIN)/beamforge chain examples/chicago_taxi/chain.yaml --target local && \
	$(BIN)/beamforge chain predict examples/chicago_taxi/chain.yaml \
		--instances examples/chicago_taxi/data/sample.csv --limit 1 && \
	$(BIN)/beamforge predict examples/chicago_taxi/chain.yaml --quiet \
		--input examples/chicago_taxi/data/sample.csv --output demo-chain/predictions; \
	status=$$?; $(BIN)/beamforge chain stop examples/chicago_taxi/chain.yaml; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The BigQuery emulator's own venv (its pins conflict with the project's): created on the
# first run, reused after; the script also relinks its DuckDB extensions into $$HOME.
emulators: $(STAMP)
	PYTHON=$(PYTHON) tools/bqemulator-venv.sh $(VENV)/bqemulator

# Airflow's own venv (its Google provider cannot share one with tensorflow-transform):
# compiled chain DAGs are imported and run there. Created on the first run, reused after.
airflow: $(STAMP)
	PYTHON=$(PYTHON) tools/airflow-venv.sh $(VENV)/airflow

# Debian's Chromium, where the HTML report is opened by the tests (installed once, as root).
browser:
	tools/chromium.sh

# TensorFlow Data Validation's own venv (it pins tensorflow 2.16 and pyarrow 10): the
# parity test and the benchmark run TFDV there on the same files.
tfdv: $(STAMP)
	PYTHON=$(PYTHON) tools/tfdv-venv.sh $(VENV)/tfdv

test: lint typecheck emulators airflow browser tfdv
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

clean:
	rm -rf $(DEMO_OUT) demo-report.html demo-chain demo-stream demo-output-tft .pytest_cache .mypy_cache .ruff_cache
