# The two entry points: `make demo` runs the main job on the built-in data, `make test` runs the tests.
# Each bootstraps everything it needs on a fresh machine: uv (in .tools/), then .venv from uv.lock.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
EHRSCALE := $(VENV)/bin/ehrscale
DEMO := out/demo
DEMO_PATIENTS ?= 21500
DEMO_RUNS := $(DEMO)/runs/demo/5
# The MIMIC-IV tables the demo reads: the core ones. `data prepare` reads the ICU charts, omr, emar, microbiology
# and DRGs too by default (docs/data.md); the demo's three grids were sized and run on the core tables, and more
# tables change the data and so every run (issue 18: moving the demo to them means sizing its grids again).
DEMO_SOURCE_TABLES := icustays,transfers,diagnoses_icd,procedures_icd,prescriptions,labevents
# The three grids of the built-in study (sweeps/*.toml): the timeline decoder, Labrador and BERT on lab bags.
DEMO_TABLES := $(DEMO_RUNS)/runs.parquet $(DEMO)/runs/labrador-demo/5/runs.parquet $(DEMO)/runs/bert-demo/4/runs.parquet

.PHONY: demo test test-slow test-faults test-cluster lint bench lock clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

demo: $(VENV)/.synced
	@if [ -f $(DEMO)/mimic/hosp/patients.csv.gz ]; then echo "reusing the synthetic MIMIC-IV in $(DEMO)/mimic"; \
	else $(EHRSCALE) data synth --out $(DEMO)/mimic --patients $(DEMO_PATIENTS) --seed 0; fi
	@if [ -f $(DEMO)/prep/manifest.json ]; then echo "reusing the prepared dataset in $(DEMO)/prep"; \
	else $(EHRSCALE) data prepare --mimic $(DEMO)/mimic --out $(DEMO)/prep --tables $(DEMO_SOURCE_TABLES); fi
	$(EHRSCALE) sweep run sweeps/demo.toml
	$(EHRSCALE) sweep run sweeps/labrador-demo.toml
	$(EHRSCALE) sweep run sweeps/bert-demo.toml
	@if [ -n "$$(find $(DEMO)/report.md -newer $(word 1,$(DEMO_TABLES)) -newer $(word 2,$(DEMO_TABLES)) -newer $(word 3,$(DEMO_TABLES)) 2>/dev/null)" ]; \
	then echo "reusing the fits, figures and report (no runs.parquet changed)"; \
	else for table in $(DEMO_TABLES); do $(EHRSCALE) fit $$table || exit 1; done \
	  && $(EHRSCALE) plot $(DEMO_TABLES) --out $(DEMO)/figures \
	  && $(EHRSCALE) report $(DEMO_TABLES) --figures $(DEMO)/figures \
	       --title "ehrscale demo: the timeline decoder, Labrador and BERT on the built-in synthetic MIMIC-IV" --out $(DEMO)/report.md; fi
	@echo "demo: report in $(DEMO)/report.md; runs in $(DEMO)/runs/*/ (runs.parquet, fits.json); figures in $(DEMO)/figures"

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
