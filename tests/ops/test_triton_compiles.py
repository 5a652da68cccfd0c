"""The Triton kernels compile for a real GPU (Hopper, sm_90) down to a cubin, also on machines without one:
the interpreter, which runs them in the other tests there, skips Triton's compiler."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_kernels_compile_for_hopper(tmp_path):
    env = {
        **os.environ,
        "TRITON_INTERPRET": "0",
        "INVOLUTION_AUTOTUNE": "0",
        "TRITON_CACHE_DIR": str(tmp_path),
        "PYTHONPATH": str(REPO),
    }
    script = Path(__file__).with_name("compile_for_gpu.py")
    result = subprocess.run(
        [sys.executable, str(script), "90"], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    # 4 kernels x 3 dtypes, the fused kernel in bf16 with every autotuning candidate instead of its default.
    from involution.ops.triton_kernels import FUSED_TILE_CANDIDATES

    assert result.stdout.count("sm_90 ") == 4 * 3 - 1 + len(FUSED_TILE_CANDIDATES), result.stdout
