# Set-up and entry points. `make demo` runs the offline demo, `make test` the whole test suite; both
# create .venv first (torch from the pinned CUDA build, which also runs on the CPU) and install Debian's
# Fashion-MNIST package if it is missing (as root, e.g. in CI; otherwise: sudo apt-get install dataset-fashion-mnist).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup detection demo test bench

setup: $(STAMP) $(FASHION_MNIST)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[experiments,dev]"
	$(PY) -c "from involution.ops import cpp_ops; cpp_ops.available()"  # the compiled CPU kernels, into build/
	touch $@

$(FASHION_MNIST):
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

# Detectron2 is not on PyPI: built once (its C++ ops for the CPU, and CUDA where a toolkit is found) from
# DETECTRON2_SOURCE: a source tarball of the pinned commit (make test DETECTRON2_SOURCE=/path/to/detectron2-02b5c4e.tar.gz,
# or in the environment); unset, the tarball in shared/vendor beside the checkout when present, else its git
# repository. The wheel is kept under .venv/wheels, so a re-install (e.g. after a dependency change) does not rebuild it.
DETECTRON2_COMMIT := 02b5c4e295e990042a714712c21dc79b731e8833
DETECTRON2_VENDORED := $(wildcard ../shared/vendor/detectron2-02b5c4e.tar.gz)
DETECTRON2_SOURCE ?= $(or $(DETECTRON2_VENDORED),git+https://github.com/facebookresearch/detectron2.git@$(DETECTRON2_COMMIT))
DETECTRON2_WHEELS := $(VENV)/wheels/detectron2-$(DETECTRON2_COMMIT)
DETECTRON2_STAMP := $(DETECTRON2_WHEELS)/.installed

detection: $(DETECTRON2_STAMP)

$(DETECTRON2_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[experiments,dev,detection]"
	ls $(DETECTRON2_WHEELS)/detectron2-*.whl >/dev/null 2>&1 || \
		$(PY) -m pip wheel --quiet --no-build-isolation --no-deps -w $(DETECTRON2_WHEELS) "$(DETECTRON2_SOURCE)"
	$(PY) -m pip install --quiet -c constraints.txt $(DETECTRON2_WHEELS)/detectron2-*.whl
	touch $@

# The offline demo: a Fashion-MNIST ablation study (involution vs convolution vs local
# self-attention, and a kernel-size sweep; three seeds) through the launcher, then the report. A rerun skips
# every finished run and only redraws.
DEMO_GRIDS := ablations/grids/demo/operator.yaml ablations/grids/demo/kernel_size.yaml
demo: setup
	$(PY) -m slurm.launch $(DEMO_GRIDS) --out results/demo --parallel 2
	$(PY) -m analysis report results/demo --out results/demo/report

test: setup detection
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/op_bench.py
	$(PY) benchmarks/model_bench.py
