# Every target installs what it needs into .venv first, so each works on a fresh clone.
#   make book       build the site offline from the notebooks' stored outputs -> _build/html
#   make test       every check: lint, library, notebooks (nbval; natively and on the generic
#                   CPU code path), the -W -n build, a real browser
#   make lint       ruff check (line length and rules in pyproject.toml), notebooks included
#   make test-notebooks [NB=book/02_root_finding.ipynb]   the notebooks against their stored
#                   outputs, numbers compared as numbers (tests/nbval_numbers.py); default all
#   make test-notebooks-generic [NB=...]   the same on another CPU's code path: torch's default
#                   kernels (no AVX2/AVX-512) and MKL's COMPATIBLE path, as on a non-Intel CPU
#   make test-notebooks-avx2 [NB=...]      and on AVX2 kernels (no AVX-512) in torch and MKL
#   make notebooks  re-execute every chapter in place, and re-record the solution runs whose
#                   numbers the exercises' answers quote (python -m deqlib.solutions.record ->
#                   deqlib/solutions/outputs); then commit the outputs
#   make bench      run the benchmarks
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard book/*.ipynb))
# The notebooks the notebook tests run (a folder or .ipynb files).
NB     ?= book/
# nbval with the numeric comparison (-p: pytest loads tests/conftest.py only under tests/).
NBVAL  = $(BIN)/python -m pytest -p tests.nbval_numbers --nbval --nbval-current-env \
         --nbval-sanitize-with book/sanitize.cfg -p no:cacheprovider
# Another CPU's code path on this one: torch's kernels without AVX2/AVX-512, MKL's generic path.
GENERIC_CPU := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE
# A third: AVX2 kernels (no AVX-512) in torch and MKL, as on most laptops and older servers.
AVX2_CPU    := ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2

.PHONY: venv vendor book lint test test-lib test-notebooks test-notebooks-generic test-notebooks-avx2 test-book \
        browser notebooks bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(STAMP)

vendor:
	scripts/vendor_js.sh

book: venv vendor
	rm -rf _build/html
	$(BIN)/jupyter-book build -W -n --keep-going .

lint: venv
	$(BIN)/ruff check .

test: lint test-lib test-notebooks test-notebooks-generic test-book

test-lib: venv
	$(BIN)/python -m pytest tests -m "not book and not browser"

test-notebooks: venv
	$(NBVAL) $(NB)

test-notebooks-generic: venv
	$(GENERIC_CPU) $(NBVAL) $(NB)

test-notebooks-avx2: venv
	$(AVX2_CPU) $(NBVAL) $(NB)

test-book: venv vendor browser
	$(BIN)/python -m pytest tests -m "book or browser"

# A Chromium for the browser tests: one already on the machine (Debian's /usr/bin/chromium…),
# else, outside CI, Playwright's own (downloaded from Playwright's site). If neither can be had,
# the browser tests are skipped with a message saying how to get one; in CI (CI set, as
# .ci/run and GitHub Actions do) they fail instead, so CI installs its browser first.
browser: venv
	@$(BIN)/python scripts/find_browser.py >/dev/null 2>&1 || [ -n "$$CI" ] || \
	  $(BIN)/python -m playwright install chromium || \
	  echo "make: could not install Playwright's Chromium; the browser tests will be skipped"

notebooks: venv
	$(BIN)/python scripts/execute_notebooks.py $(NOTEBOOKS)
	$(BIN)/python -m deqlib.solutions.record

bench: venv
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt
	@for b in benchmarks/bench_*.py; do echo "== $$b"; (cd benchmarks && ../$(BIN)/python $$(basename $$b)) || exit 1; done

clean:
	rm -rf _build
