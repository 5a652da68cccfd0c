"""The Triton kernels compile for a real GPU (Hopper, sm_90) down to a cubin, also on machines without one:
the interpreter, which runs them in the other tests there, skips Triton's compiler."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
REPO = Path(__file__).resolve().parents[2]
HOPPER_MAX_SHARED_BYTES = 227 * 1024  # per block, opted in


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
    compiled = [json.loads(line) for line in result.stdout.splitlines()]
    from involution.ops import triton_kernels as tk

    # Each kernel in 3 dtypes with its default tile (the only config with autotuning off, as here); the fused
    # one in bf16 with every autotuning candidate.
    (pixel,), (tap,), (fused,) = (
        [(c.kwargs["BLOCK_P"], c.num_warps) for c in tiles]
        for tiles in (tk._PIXEL_TILES, tk._TAP_TILES, tk._FUSED_TILES)
    )
    defaults = {"forward": pixel, "grad_input": pixel, "grad_kernel": tap, "fused": fused}
    expected = {(name, dtype, *tile) for name, tile in defaults.items() for dtype in ("fp32", "fp16", "bf16")}
    expected |= {("fused", "bf16", *tile) for tile in tk.FUSED_TILE_CANDIDATES}
    assert {(c["kernel"], c["dtype"], c["block_p"], c["num_warps"]) for c in compiled} == expected
    for c in compiled:
        assert c["ptx_target"].startswith("sm_90") and c["cubin_bytes"] > 0, c
        # Checked by the driver only at launch: a tile needing more than an H100 block can have would not run.
        assert c["shared_bytes"] <= HOPPER_MAX_SHARED_BYTES, c
