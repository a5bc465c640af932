# rrvae-nb: two commands do all set-up on a fresh machine: `make book` and `make test`.
# Both create .venv inside the repository on first use and install the package with its
# extras through constraints.txt (which pins the CPU torch wheel).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: setup test book lab bench data lint clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing rrvae-nb and its extras into $(VENV) (first run: about a minute)..."
	@$(PY) -m pip install $(PIP_QUIET) -c constraints.txt -e ".[all]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	@$(PY) -c "import torch, pyro, rrvae_nb" || (echo "set-up failed: see the pip output above"; exit 1)
	@touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check rrvae_nb tests bench

bench: setup
	$(PY) -m bench

data: setup
	$(PY) data/make_data.py

book: setup
	@echo "(book skeleton; chapters land with the book issue)"

lab: setup
	@echo "(lab lands with the book issue)"

clean:
	rm -rf book/_build .pytest_cache
