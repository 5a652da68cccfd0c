# Set-up and entry points. `make demo` runs the offline demo, `make test` the whole test suite;
# both create .venv first (torch from the pinned CUDA build, which also runs on the CPU).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[experiments,dev]"
	touch $@

demo: $(STAMP)
	$(PY) benchmarks/op_bench.py --quick

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/op_bench.py
