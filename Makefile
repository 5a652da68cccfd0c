# Set-up and entry points. `make demo` runs the offline demo, `make test` the whole test suite; both
# create .venv first (torch from the pinned CUDA build, which also runs on the CPU) and install Debian's
# Fashion-MNIST package if it is missing (as root, e.g. in CI; otherwise: sudo apt-get install dataset-fashion-mnist).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup demo test bench

setup: $(STAMP) $(FASHION_MNIST)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[experiments,dev]"
	touch $@

$(FASHION_MNIST):
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

# The main job on the offline default: a Fashion-MNIST ablation study (involution vs convolution vs local
# self-attention, and a kernel-size sweep; two seeds) through the launcher, then the report. A rerun skips
# every finished run and only redraws.
DEMO_GRIDS := ablations/grids/demo/operator.yaml ablations/grids/demo/kernel_size.yaml
demo: setup
	$(PY) -m slurm.launch $(DEMO_GRIDS) --out results/demo --parallel 2
	$(PY) -m analysis report results/demo --out results/demo/report

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/op_bench.py
	$(PY) benchmarks/model_bench.py
