"""Compiles the involution Triton kernels ahead of time for a GPU architecture, without a GPU.

Run with TRITON_INTERPRET unset (the interpreter replaces the kernels): `python compile_for_gpu.py [capability]`.
Every kernel is lowered down to a cubin in fp32, fp16 and bf16 with its default configuration, and the fused
kernel (the one with tl.dot) with every autotuning candidate in bf16. Prints one JSON line per compilation with
what a launch would check on the GPU: the PTX target, the cubin's size and the shared memory the kernel needs.
"""

import json
import re
import sys
import time

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from involution.ops import triton_kernels as tk

DTYPES = ("fp32", "fp16", "bf16")


def compile_kernel(autotuner, target, dtype: str, constexprs: dict, block: int, warps: int) -> dict:
    fn = autotuner.fn
    constexprs = {**constexprs, "BLOCK_P": block}
    signature = {
        name: "constexpr" if name in constexprs else f"*{dtype}" if name.endswith("_ptr") else "i32"
        for name in fn.arg_names
    }
    source = ASTSource(fn, signature, {(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    start = time.perf_counter()
    compiled = triton.compile(source, target=target, options={"num_warps": warps})
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "ptx_target": re.search(r"^\.target\s+(\w+)", compiled.asm["ptx"], re.MULTILINE).group(1),
        "cubin_bytes": len(compiled.asm["cubin"]),
        "shared_bytes": compiled.metadata.shared,
    }


def main():
    capability = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    target = GPUTarget("cuda", capability, 32)
    plain = {"K": 7, "STRIDE": 2, "DILATION": 1}
    kernels = {
        "forward": (tk._forward_kernel, {**plain, "BLOCK_C": 16}, tk.PIXEL_TILE_CANDIDATES),
        "grad_input": (tk._grad_input_kernel, {**plain, "BLOCK_C": 16}, tk.PIXEL_TILE_CANDIDATES),
        "grad_kernel": (tk._grad_kernel_kernel, {**plain, "KK_PAD": 64}, tk.TAP_TILE_CANDIDATES),
        "fused": (tk._fused_forward_kernel, {**plain, "BLOCK_C": 32, "BLOCK_R": 32}, tk.FUSED_TILE_CANDIDATES),
    }
    for name, (autotuner, constexprs, candidates) in kernels.items():
        default = autotuner.configs[0]
        for dtype in DTYPES:
            precision = "ieee" if dtype == "fp32" else "tf32"
            extra = {"DOT_PRECISION": precision} if name == "fused" else {"ACC": tl.float32}
            every_candidate = name == "fused" and dtype == "bf16"
            configs = candidates if every_candidate else [(default.kwargs["BLOCK_P"], default.num_warps)]
            for block, warps in configs:
                facts = compile_kernel(autotuner, target, dtype, {**constexprs, **extra}, block, warps)
                config = {"kernel": name, "dtype": dtype, "block_p": block, "num_warps": warps}
                print(json.dumps({**config, **facts}), flush=True)


if __name__ == "__main__":
    main()
