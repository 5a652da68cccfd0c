"""Test-wide set-up: Triton's interpreter on machines without a GPU, no autotuning, and seeded randomness."""

import os

import torch

# Must happen before anything imports triton: without a GPU, the Triton kernels run (slowly) on CPU tensors.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The tests try many shapes: autotuning each new one would dominate a GPU run. Every candidate configuration
# is tested on its own (tests/ops/test_triton_kernels.py).
os.environ.setdefault("INVOLUTION_AUTOTUNE", "0")

import pytest


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
