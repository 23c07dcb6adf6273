# Every target installs what it needs into .venv first, so each works on a fresh clone.
#   make book       build the site offline from the notebooks' stored outputs -> _build/html
#   make test       every test: library, book config, notebooks (nbval), the -W -n build, a real browser
#   make notebooks  re-execute every chapter in place (then commit the outputs)
#   make bench      run the benchmarks
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard book/*.ipynb))

.PHONY: venv vendor book test test-lib test-notebooks test-book test-browser notebooks bench clean browser-deps

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

test: test-lib test-notebooks test-book

test-lib: venv
	$(BIN)/python -m pytest tests -m "not book and not browser"

test-notebooks: venv
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with book/sanitize.cfg -p no:cacheprovider book/

test-book: venv vendor browser-deps
	$(BIN)/python -m pytest tests -m "book or browser"

browser-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get install -y chromium; fi; }

notebooks: venv
	$(BIN)/python scripts/execute_notebooks.py $(NOTEBOOKS)

bench: venv
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt
	@for b in benchmarks/bench_*.py; do echo "== $$b"; (cd benchmarks && ../$(BIN)/python $$(basename $$b)) || exit 1; done

clean:
	rm -rf _build
