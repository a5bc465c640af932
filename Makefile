# rrvae-nb: two commands do all set-up on a fresh machine: `make book` and `make test`.
# Both create .venv inside the repository on first use and install the package with its
# extras through constraints.txt (which pins the CPU torch wheel).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PIP_QUIET := --quiet --disable-pip-version-check
# Idle OpenMP threads sleep instead of spinning: on a shared or small machine spinning threads
# make torch's small operations up to tenfold slower (kernels inherit this environment).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test book lab bench bench-encoders bench-si bench-udf bench-gpu data weights lint clean course

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing rrvae-nb and its extras into $(VENV) (first run: about a minute)..."
	@$(PY) -m pip install $(PIP_QUIET) -c constraints.txt -e ".[all]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	@$(PY) -c "import torch, pyro, rrvae_nb" || (echo "set-up failed: see the pip output above"; exit 1)
	@touch $(STAMP)

setup: $(STAMP)

# The tests: the package's unit tests; every chapter and every student copy of the course kit
# run top to bottom in quick mode as JupyterLab's Run All runs them (tests/test_run_all.py: no
# cell tags honoured, so a skip tag cannot hide a cell that stops a student; the solutions run
# and must pass their checks); a quick-mode HTML build of the book and the headless-browser
# check of it. Two notebook kernels share the two cores, so each gets one OpenMP thread (two each
# oversubscribe the CPUs and run ~10x slower).
NOTEBOOKS := $(wildcard notebooks/[0-9][0-9]_*.ipynb)
test: setup
	$(PY) -m pytest -q -n 2 tests
ifneq ($(NOTEBOOKS),)
	RRVAE_NB_QUICK=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -p no:cacheprovider tests/test_run_all.py --run-chapters=all
endif
	$(MAKE) --no-print-directory book-quick
	$(MAKE) --no-print-directory browser-check BOOK_VARIANT=quick

lint: setup
	$(VENV)/bin/ruff check rrvae_nb tests bench tools book/_ext data/*.py

# Speed (paper vs default rrVAE; about 25 min) and out-of-core scale (a 2 GB file; about 5 min).
bench: setup
	$(PY) -m bench
	$(PY) -m bench.scale

# The encoders compared on simulated graphene and hBN (about 30 min): bench/results/encoders.md
bench-encoders: setup
	$(PY) -m bench.encoders

# Chapter 4's Si scan with the emulation's knobs switched off in turn, 2 and 3 content latents
# (about 35 min): bench/results/si_ablation.md and si_ablation_aberrations.md
bench-si: setup
	$(PY) -m bench.si_ablation --fix 3
	$(PY) -m bench.si_ablation --seeds 0 1 --variants "no defocus" "no astigmatism" "no coma" \
		--name si_ablation_aberrations

# The LiberTEM UDF against encode_maps, 1 and 2 workers (a few minutes): bench/results/udf.md
bench-udf: setup
	$(PY) -m bench.udf

# On a machine with an NVIDIA GPU (and a CUDA build of torch): the gpu-marked tests, CPU vs GPU
# training, encoding and the UDF on LiberTEM's CUDA backend (about 10 min): bench/results/gpu.md.
# Without CUDA it refuses; `$(PY) -m bench.gpu --dry-run` checks the script on the CPU.
bench-gpu: setup
	$(PY) -m bench.gpu

data: setup
	$(PY) data/make_data.py

# The paper's model trained on chapters 2 and 4's data (about 1.5 CPU-hours): data/weights/
weights: setup
	$(PY) data/make_weights.py

# The book: every chapter executed in full mode, HTML in book/_build/full/_build/html,
# warnings are errors. book-quick runs the chapters with RRVAE_NB_QUICK=1 into book/_build/quick.
# browser-check opens every page of a built book in headless Chromium (Debian's package,
# installed when missing) and writes screenshots; BOOK_VARIANT=quick checks the quick build.
.PHONY: book-quick browser-check
BOOK_VARIANT ?= full

book: setup
	$(PY) tools/build_book.py --variant full

book-quick: setup
	$(PY) tools/build_book.py --variant quick

browser-check: setup
	$(PY) tools/browser_check.py --variant $(BOOK_VARIANT) --install-browser --strict-external

# The course kit: course/student/*.ipynb (solution cells removed, exercise cells kept) and
# course/instructor/*.ipynb (solutions in), chosen by cell tags (tools/make_course.py).
course: setup
	$(PY) tools/make_course.py

# JupyterLab on the chapters, in the project's .venv (root needs --allow-root).
# Extra options: make lab LAB_ARGS="--no-browser --port=8899".
LAB_ARGS ?=
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:
	rm -rf book/_build .pytest_cache course
