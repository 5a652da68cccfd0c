"""Involution op benchmark: every backend side by side on RedNet-50's involution layers, as ratios to unfold.

Each provider is first checked against its reference (output and every gradient), then timed for forward
(no grad) and forward+backward, with its peak memory. On a GPU these join as comparators: torch.compile of
the unfold reference, cuDNN's depthwise KxK convolution (the same multiply-adds, no kernel map), and the
whole kernel generation + aggregation of Involution2d, unfused ("conv1x1 + triton": conv2 writes the kernel
map, the op reads it) and fused ("fused": fused_involution2d, the kernel map never stored); these two start
from the reduced features (C/4 channels), so their input is smaller than the others' kernel map. Each time
is also given as a fraction of its memory-bandwidth floor (the bytes an ideal kernel must move / measured
copy bandwidth).

    python benchmarks/op_bench.py                 # CPU: batch 8; CUDA (if present): batch 64
    python benchmarks/op_bench.py --quick         # two layers only (stride 1 and 2)
    python benchmarks/op_bench.py --dtype bfloat16 --json out.json
    python benchmarks/op_bench.py --layers 64,56,1 128,56,2
"""

import argparse
import json
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from measure import common_arguments, environment, peak_memory_mib, resolve_defaults, timed_ms

from involution import fused_involution2d, involution2d
from involution.ops import involution2d_reference

KERNEL_SIZE = 7
PADDING = KERNEL_SIZE // 2
GROUP_CHANNELS = 16
REDUCTION_RATIO = 4
# RedNet-50's involutions (channels, input size, stride): stem, then each stage's first (strided) and
# other blocks.
REDNET50_LAYERS = [
    (32, 112, 1),
    (64, 56, 1),
    (128, 56, 2),
    (128, 28, 1),
    (256, 28, 2),
    (256, 14, 1),
    (512, 14, 2),
    (512, 7, 1),
]
QUICK_LAYERS = [(64, 56, 1), (128, 56, 2)]


@dataclass
class Row:
    channels: int
    size: int
    stride: int
    provider: str
    forward_ms: float
    train_ms: float
    train_peak_mib: float
    max_error: Optional[float]
    forward_speedup: float = float("nan")
    train_speedup: float = float("nan")
    memory_ratio: float = float("nan")
    forward_bandwidth_pct: Optional[float] = None
    train_bandwidth_pct: Optional[float] = None


@dataclass
class Problem:
    """One layer's tensors: the op's input and kernel map, and the reduced features with the 1x1 conv that
    generates that kernel (for the generation + aggregation providers)."""

    x: torch.Tensor
    kernel: torch.Tensor
    features: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    stride: int


def op_bytes(p: Problem, train: bool) -> int:
    """Read input and kernel, write output; the backward reads grad_out, input and kernel and writes both
    gradients."""
    x, kernel, out = p.x.numel(), p.kernel.numel(), p.x.numel() // p.stride**2
    elements = (3 * x + 3 * kernel + 2 * out) if train else (x + kernel + out)
    return elements * p.x.element_size()


def generated_bytes(p: Problem, train: bool) -> int:
    """As op_bytes, with the reduced features in place of the kernel map (which a fused kernel never stores)."""
    x, features, out = p.x.numel(), p.features.numel(), p.x.numel() // p.stride**2
    elements = (3 * x + 3 * features + 2 * out) if train else (x + features + out)
    return elements * p.x.element_size()


def depthwise_bytes(p: Problem, train: bool) -> int:
    x, out = p.x.numel(), p.x.numel() // p.stride**2
    return ((3 * x + 2 * out) if train else (x + out)) * p.x.element_size()


@dataclass
class Provider:
    """fn(problem) -> output. Gradients are taken w.r.t. `inputs(problem)`; `reference(problem)` computes the
    same (None: not an involution, unchecked); `ideal_bytes(problem, train)` is the least traffic possible."""

    fn: Callable
    inputs: Callable = lambda p: (p.x, p.kernel)
    reference: Optional[Callable] = lambda p: involution2d_reference(p.x, p.kernel, p.stride, PADDING, 1)
    ideal_bytes: Callable = op_bytes


def generated_kernel(p: Problem) -> torch.Tensor:
    kernel = F.conv2d(p.features, p.weight[:, :, None, None], p.bias)
    return kernel.unflatten(1, (p.x.shape[1] // GROUP_CHANNELS, KERNEL_SIZE, KERNEL_SIZE))


def providers(device: torch.device, channels: int, dtype, backends, comparators: bool) -> dict:
    chosen = {
        name: Provider(lambda p, backend=name: involution2d(p.x, p.kernel, p.stride, backend=backend))
        for name in backends
    }
    if comparators:
        compiled = torch.compile(involution2d_reference)
        chosen["compiled reference"] = Provider(lambda p: compiled(p.x, p.kernel, p.stride, PADDING, 1))
        weight = torch.randn(channels, 1, KERNEL_SIZE, KERNEL_SIZE, device=device, dtype=dtype, requires_grad=True)
        chosen["cudnn depthwise"] = Provider(
            lambda p: F.conv2d(p.x, weight, stride=p.stride, padding=PADDING, groups=channels),
            inputs=lambda p: (p.x, weight),
            reference=None,
            ideal_bytes=depthwise_bytes,
        )
        generation = {
            "inputs": lambda p: (p.x, p.features, p.weight, p.bias),
            "reference": lambda p: involution2d_reference(p.x, generated_kernel(p), p.stride, PADDING, 1),
            "ideal_bytes": generated_bytes,
        }
        chosen["conv1x1 + triton"] = Provider(
            lambda p: involution2d(p.x, generated_kernel(p), p.stride, backend="triton"), **generation
        )
        chosen["fused"] = Provider(
            lambda p: fused_involution2d(
                p.x,
                p.features,
                p.weight,
                p.bias,
                KERNEL_SIZE,
                p.x.shape[1] // GROUP_CHANNELS,
                p.stride,
                backend="triton",
            ),
            **generation,
        )
    return chosen


def make_problem(batch, channels, size, stride, device, dtype) -> Problem:
    out_size = (size - 1) // stride + 1
    groups, reduced = channels // GROUP_CHANNELS, channels // REDUCTION_RATIO
    rows = groups * KERNEL_SIZE**2

    def tensor(*shape, scale=1.0):
        return (torch.randn(*shape, device=device) * scale).to(dtype).requires_grad_()

    return Problem(
        x=tensor(batch, channels, size, size),
        kernel=tensor(batch, groups, KERNEL_SIZE, KERNEL_SIZE, out_size, out_size),
        features=tensor(batch, reduced, out_size, out_size),
        weight=tensor(rows, reduced, scale=reduced**-0.5),
        bias=tensor(rows),
        stride=stride,
    )


def forward_and_backward(provider: Provider, problem: Problem):
    """Output and every gradient, returned rather than accumulated into .grad: nothing outlives the call."""
    out = provider.fn(problem)
    torch.autograd.grad(out.sum(), provider.inputs(problem))


def forward_only(provider: Provider, problem: Problem):
    with torch.no_grad():
        provider.fn(problem)


def max_error(provider: Provider, problem: Problem) -> float:
    """Largest absolute difference from the provider's reference over the output and every gradient."""
    inputs = provider.inputs(problem)
    results = []
    for candidate in (provider.fn, provider.reference):
        out = candidate(problem)
        grad_out = torch.linspace(-1, 1, out.numel(), device=out.device, dtype=out.dtype).reshape(out.shape)
        results.append((out, *torch.autograd.grad(out, inputs, grad_out)))
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(*results))


def copy_bandwidth_bytes_per_ms(device, dtype) -> float:
    """Achievable DRAM bandwidth, measured as a 1 GiB device-to-device copy (reads + writes)."""
    source = torch.empty(2**30 // torch.finfo(dtype).bits * 8, device=device, dtype=dtype)
    target = torch.empty_like(source)
    ms = timed_ms(lambda: target.copy_(source), device, repeats=5)
    return 2 * source.numel() * source.element_size() / ms


def benchmark_layer(args, device, dtype, channels, size, stride, bandwidth) -> list[Row]:
    problem = make_problem(args.batch, channels, size, stride, device, dtype)
    rows = []
    for name, provider in providers(device, channels, dtype, args.backends, args.comparators).items():
        checked = provider.reference is not None and name != "reference"
        row = Row(
            channels,
            size,
            stride,
            name,
            forward_ms=timed_ms(partial(forward_only, provider, problem), device, args.repeats),
            train_ms=timed_ms(partial(forward_and_backward, provider, problem), device, args.repeats),
            train_peak_mib=peak_memory_mib(partial(forward_and_backward, provider, problem), device),
            max_error=max_error(provider, problem) if checked else None,
        )
        if bandwidth:
            row.forward_bandwidth_pct = 100 * provider.ideal_bytes(problem, False) / row.forward_ms / bandwidth
            row.train_bandwidth_pct = 100 * provider.ideal_bytes(problem, True) / row.train_ms / bandwidth
        rows.append(row)
    reference = next(row for row in rows if row.provider == "reference")
    for row in rows:
        row.forward_speedup = reference.forward_ms / row.forward_ms
        row.train_speedup = reference.train_ms / row.train_ms
        row.memory_ratio = row.train_peak_mib / reference.train_peak_mib
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [
        "| layer | stride | provider | fwd ms | fwd x unfold | fwd+bwd ms | fwd+bwd x unfold | peak MiB | "
        "peak / unfold | max err | fwd % bw | fwd+bwd % bw |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        err = "-" if r.max_error is None else f"{r.max_error:.1e}"
        bw = ["-" if p is None else f"{p:.0f}%" for p in (r.forward_bandwidth_pct, r.train_bandwidth_pct)]
        lines.append(
            f"| C={r.channels} @ {r.size}² | {r.stride} | {r.provider} | {r.forward_ms:.2f} | {r.forward_speedup:.1f}x"
            f" | {r.train_ms:.2f} | {r.train_speedup:.1f}x | {r.train_peak_mib:.1f} | {r.memory_ratio:.2f} | {err}"
            f" | {bw[0]} | {bw[1]} |"
        )
    return "\n".join(lines)


def parse_args():
    parser = common_arguments(__doc__, repeats=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--quick", action="store_true", help=f"only the layers {QUICK_LAYERS}")
    parser.add_argument(
        "--layers", nargs="+", metavar="C,SIZE,STRIDE", help="these layers instead (C a multiple of 16)"
    )
    parser.add_argument(
        "--comparators",
        action=argparse.BooleanOptionalAction,
        help="compiled reference, cuDNN depthwise, conv1x1 + triton and fused (default: on CUDA only; elsewhere "
        "the Triton ones need TRITON_INTERPRET=1)",
    )
    args = parser.parse_args()
    try:
        args.layers = [tuple(int(n) for n in layer.split(",")) for layer in args.layers or []]
    except ValueError:
        parser.error(f"--layers takes C,SIZE,STRIDE triples, got {args.layers}")
    if any(len(layer) != 3 or layer[0] % GROUP_CHANNELS for layer in args.layers):
        parser.error(f"--layers takes C,SIZE,STRIDE triples with C a multiple of {GROUP_CHANNELS}")
    if args.comparators is None:
        args.comparators = args.device.startswith("cuda")
    return args


def main():
    args = parse_args()
    device = resolve_defaults(args)
    dtype = getattr(torch, args.dtype)
    bandwidth = copy_bandwidth_bytes_per_ms(device, dtype) if device.type == "cuda" else None
    env = environment(device)
    print(f"# involution op, K={KERNEL_SIZE}, G=C/{GROUP_CHANNELS}, batch {args.batch}, {args.dtype}, {env}")
    rows = []
    for channels, size, stride in args.layers or (QUICK_LAYERS if args.quick else REDNET50_LAYERS):
        layer_rows = benchmark_layer(args, device, dtype, channels, size, stride, bandwidth)
        print(format_table(layer_rows), flush=True)
        rows += layer_rows
        if args.json:  # after every layer, so that a run cut short leaves what it measured
            with open(args.json, "w") as out:
                json.dump({"environment": env, "args": vars(args), "rows": [asdict(r) for r in rows]}, out, indent=1)
    print("\n" + format_table(rows))


if __name__ == "__main__":
    main()
