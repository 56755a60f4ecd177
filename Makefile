# The two entry points: `make demo` runs the main job on the built-in data, `make test` runs the tests (`make study`
# runs the whole built-in study).
# Each bootstraps everything it needs on a fresh machine: uv (in .tools/), then .venv from uv.lock.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
EHRSCALE := $(VENV)/bin/ehrscale
DEMO := out/demo
STUDY := out/study
DEMO_PATIENTS ?= 21500
# The MIMIC-IV tables the demo reads: the core ones. `data prepare` reads the ICU charts, omr, emar, microbiology
# and DRGs too by default (docs/data.md); the grids were sized and run on the core tables, and more tables change
# the data and so every run (issue 18: moving to them means sizing the grids again).
DEMO_SOURCE_TABLES := icustays,transfers,diagnoses_icd,procedures_icd,prescriptions,labevents
# `make demo`: the timeline decoder and Labrador (the study's two halves, timelines and lab bags) through one queue,
# each grid without the study's largest budget. `make study`: the study's full grids, and the BERT baseline on the
# same lab bags, one report with the three side by side; it reuses the demo's data, and copies the demo's runs that
# are its own (every sweep keeps its runs under out/demo/runs).
DEMO_SWEEPS := sweeps/quick-timeline.toml sweeps/quick-labrador.toml
STUDY_SWEEPS := sweeps/demo.toml sweeps/labrador-demo.toml sweeps/bert-demo.toml
DATA := --mimic $(DEMO)/mimic --synth-patients $(DEMO_PATIENTS) --synth-seed 0 --tables $(DEMO_SOURCE_TABLES)

.PHONY: demo study test test-slow test-faults test-cluster lint bench lock clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

demo: $(VENV)/.synced
	$(EHRSCALE) study $(DEMO_SWEEPS) --out $(DEMO) $(DATA) \
	  --title "ehrscale demo: the timeline decoder and Labrador on the built-in synthetic MIMIC-IV"

study: $(VENV)/.synced
	$(EHRSCALE) study $(STUDY_SWEEPS) --out $(STUDY) $(DATA) \
	  --title "ehrscale study: the timeline decoder, Labrador and BERT on the built-in synthetic MIMIC-IV"

test: $(VENV)/.synced
	$(VENV)/bin/pytest -q

test-slow: $(VENV)/.synced
	$(VENV)/bin/pytest -q -m slow

test-faults: $(VENV)/.synced
	$(VENV)/bin/pytest -q -m faults

test-cluster: $(VENV)/.synced
	$(VENV)/bin/pytest -q -m cluster

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.synced
	$(VENV)/bin/python benchmarks/bench_synth.py --workdir out/bench
	$(VENV)/bin/python benchmarks/bench_ingest.py --workdir out/bench
	$(VENV)/bin/python benchmarks/bench_tokenize.py --prep out/bench/prep_10750 out/bench/prep_21500

lock: $(UV)
	$(UV) lock

clean:
	rm -rf $(VENV) .tools out .pytest_cache
