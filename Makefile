# The project's two commands (see README.md):
#   make report [PROFILE=smoke|cpu|full] [SET="key=value key=value"]   run the notebooks, then render the website and the PDF
#                                                    (each key=value of SET becomes its own --set; no spaces inside a value)
#   make test                                           nbdev-test on the notebooks, then pytest tests/
#   make show                                           render the committed reference report (report/) into report/site/ and report/report.pdf, executing nothing
# report and test create .venv/ and install the pinned packages on first use; show installs only what rendering needs (SHOW_DEPS), unless .venv/ has everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= smoke
SET ?=
STAMP := $(VENV)/.installed

.PHONY: setup report test show sync check-sync clean-venv

setup: $(STAMP)

# torch 2.14.1 / torchvision 0.29.1 are pinned in pyproject.toml; on this project's machines pip takes them from local disk
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# PROFILE=cpu: the CPU preflight first (melanoma-benchmark --step cpu: the main configuration's folds against MAIN_BUDGET_S, the whole
# run against RUN_BUDGET_S, from rates measured on this machine); over either budget it stops before anything is trained.
MAIN_BUDGET_S ?= 5400
RUN_BUDGET_S ?= 14400
report: $(STAMP)
	@if [ "$(PROFILE)" = cpu ]; then $(BIN)/melanoma-benchmark --profile cpu $(foreach s,$(SET),--set $(s)) --step cpu --main-budget-s $(MAIN_BUDGET_S) --run-budget-s $(RUN_BUDGET_S) --n-batches 6 || exit 1; fi
	$(BIN)/melanoma-report --profile $(PROFILE) $(foreach s,$(SET),--set $(s))

# nbdev-test runs one notebook per core: one torch thread each, else they oversubscribe the cores (measured: 203 s instead of 241 s).
# The tests use HAM10000 and the ISIC 2018 test set where they are found; elsewhere synthetic stand-ins (labelled as such) so they still run.
test: $(STAMP)
	@start=$$(date +%s); \
	if ! $(BIN)/melanoma-data --action find >/dev/null 2>&1; then \
	  echo "HAM10000 not found: testing on SYNTHETIC data (runs/synthetic-data), not HAM10000"; \
	  $(BIN)/melanoma-data --action synth --path runs/synthetic-data --n-lesions 700 --force >/dev/null; \
	  export MELANOMA_DATA=$$PWD/runs/synthetic-data; \
	fi; \
	if ! $(BIN)/python -c "from melanoma_nbdev.data import find_data; find_data(None, 'isic2018_test')" >/dev/null 2>&1; then \
	  echo "ISIC 2018 test set not found: testing chapter 09 on a SYNTHETIC test set (runs/synthetic-test), not ISIC 2018"; \
	  $(BIN)/python -c "from melanoma_nbdev.data import make_synthetic_test; make_synthetic_test('runs/synthetic-test', 70)" >/dev/null; \
	  export MELANOMA_TEST_DATA=$$PWD/runs/synthetic-test; \
	fi; \
	$(MAKE) --no-print-directory check-sync && \
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test && \
	$(BIN)/python -m pytest -q tests/ && \
	echo "make test: all checks passed in $$(( $$(date +%s) - start )) s"

# nbdev-export and nbdev-clean must change nothing, and README.md must match nbs/index.ipynb
check-sync: $(STAMP)
	@$(BIN)/python -c "import hashlib,pathlib,sys,subprocess as sp; \
	fs=lambda: {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for d in ('nbs','melanoma_nbdev') for p in sorted(pathlib.Path(d).rglob('*')) if p.is_file() and '__pycache__' not in p.parts}; \
	a=fs(); sp.run(['$(BIN)/nbdev-export'],check=True); sp.run(['$(BIN)/nbdev-clean'],check=True); b=fs(); \
	bad=sorted(k for k in a.keys()|b.keys() if a.get(k)!=b.get(k)); \
	sys.exit('nbdev-export/nbdev-clean changed: '+', '.join(bad)+' (commit the result)') if bad else print('notebooks clean, library in sync')"
	@$(BIN)/melanoma-readme --check

# What rendering needs, pinned as in pyproject.toml (tests/test_publish.py checks they agree): no torch, so a fresh clone shows the report in seconds
SHOW_DEPS := "nbdev==3.3.26" "fastcore>=2.2,<2.3" "smalldocs==0.5.4" "pypandoc-binary==1.17" "typst==0.15.2" "pandas>=2.2,<3.2" "nbformat>=5.9" "pillow>=10" "filelock>=3.12"
SHOW_STAMP := $(VENV)/.installed-show

$(SHOW_STAMP): pyproject.toml
	@if [ ! -f $(STAMP) ]; then \
	  test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install -q --disable-pip-version-check $(SHOW_DEPS) && \
	  $(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e . ; \
	fi
	@touch $(SHOW_STAMP)

show: $(SHOW_STAMP)
	@$(BIN)/melanoma-report --render report
	@echo "open report/site/index.html (its search needs a web server: python3 -m http.server -d report/site) and report/report.pdf"

sync: $(STAMP)
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	$(BIN)/melanoma-readme

clean-venv:
	rm -rf $(VENV)
