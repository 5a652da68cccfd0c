"""Involution op benchmark: every backend side by side on RedNet-50's layer shapes, as ratios to unfold.

Each provider is first checked against the unfold reference (output and both gradients), then timed
for forward (no grad) and forward+backward, with its peak memory. On a GPU, torch.compile of the
reference and cuDNN's depthwise KxK convolution (same multiply-adds) join as comparators, and each
time is also given as a fraction of the memory-bandwidth floor (minimal bytes / measured copy bandwidth).

    python benchmarks/op_bench.py                 # CPU: batch 8; CUDA (if present): batch 64
    python benchmarks/op_bench.py --quick         # first layer shape only (the demo)
    python benchmarks/op_bench.py --json out.json
"""

import json
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from measure import common_arguments, environment, peak_memory_mib, resolve_defaults, timed_ms

from involution import involution2d
from involution.ops import involution2d_reference

KERNEL_SIZE = 7
GROUP_CHANNELS = 16
# RedNet-50's involutions: channels @ input size, per stage.
REDNET50_LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]


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
class Provider:
    """fn(x, kernel, stride) -> output; gradients are taken w.r.t. x, kernel and `parameters`."""

    fn: Callable
    parameters: tuple = ()
    checked: bool = True  # computes the involution (compared with the reference)


def involution_provider(backend: str) -> Provider:
    return Provider(lambda x, kernel, stride: involution2d(x, kernel, stride, backend=backend))


def compiled_reference() -> Provider:
    compiled = torch.compile(involution2d_reference)
    return Provider(lambda x, kernel, stride: compiled(x, kernel, stride, (KERNEL_SIZE - 1) // 2, 1))


def depthwise_conv(channels: int, device, dtype) -> Provider:
    weight = torch.randn(channels, 1, KERNEL_SIZE, KERNEL_SIZE, device=device, dtype=dtype, requires_grad=True)
    return Provider(
        lambda x, kernel, stride: F.conv2d(x, weight, stride=stride, padding=KERNEL_SIZE // 2, groups=channels),
        parameters=(weight,),
        checked=False,
    )


def providers(device: torch.device, channels: int, dtype, backends) -> dict:
    chosen = {name: involution_provider(name) for name in backends}
    if device.type == "cuda":
        chosen["compiled reference"] = compiled_reference()
        chosen["cudnn depthwise"] = depthwise_conv(channels, device, dtype)
    return chosen


def make_inputs(batch, channels, size, stride, device, dtype):
    out_size = (size - 1) // stride + 1
    groups = channels // GROUP_CHANNELS
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype, requires_grad=True)
    kernel = torch.randn(
        batch, groups, KERNEL_SIZE, KERNEL_SIZE, out_size, out_size, device=device, dtype=dtype, requires_grad=True
    )
    return x, kernel


def forward_and_backward(provider: Provider, x, kernel, stride):
    """Output and every gradient, returned rather than accumulated into .grad: nothing outlives the call."""
    out = provider.fn(x, kernel, stride)
    inputs = [t for t in (x, kernel, *provider.parameters) if t.requires_grad]
    torch.autograd.grad(out.sum(), inputs, allow_unused=True)


def forward_only(provider: Provider, x, kernel, stride):
    with torch.no_grad():
        provider.fn(x, kernel, stride)


def max_error(provider: Provider, x, kernel, stride) -> float:
    """Largest absolute difference from the reference over output and gradients."""
    grad_out = torch.randn(x.shape[0], x.shape[1], kernel.shape[-2], kernel.shape[-1], device=x.device, dtype=x.dtype)
    results = []
    for candidate in (provider.fn, involution_provider("reference").fn):
        out = candidate(x, kernel, stride)
        results.append((out, *torch.autograd.grad(out, (x, kernel), grad_out)))
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(*results))


def copy_bandwidth_bytes_per_ms(device, dtype) -> float:
    """Achievable DRAM bandwidth, measured as a 1 GiB device-to-device copy (reads + writes)."""
    source = torch.empty(2**30 // torch.finfo(dtype).bits * 8, device=device, dtype=dtype)
    target = torch.empty_like(source)
    ms = timed_ms(lambda: target.copy_(source), device, repeats=5)
    return 2 * source.numel() * source.element_size() / ms


def minimal_bytes(x, kernel, stride, train: bool) -> int:
    """Bytes an ideal kernel moves: read input and kernel, write output; backward reads grad_out, input and
    kernel and writes both gradients."""
    out = x.numel() // stride**2
    elements = (3 * x.numel() + 3 * kernel.numel() + 2 * out) if train else (x.numel() + kernel.numel() + out)
    return elements * x.element_size()


def benchmark_shape(args, device, dtype, channels, size, stride, bandwidth) -> list[Row]:
    x, kernel = make_inputs(args.batch, channels, size, stride, device, dtype)
    rows = []
    for name, provider in providers(device, channels, dtype, args.backends).items():
        row = Row(
            channels,
            size,
            stride,
            name,
            forward_ms=timed_ms(partial(forward_only, provider, x, kernel, stride), device, args.repeats),
            train_ms=timed_ms(partial(forward_and_backward, provider, x, kernel, stride), device, args.repeats),
            train_peak_mib=peak_memory_mib(partial(forward_and_backward, provider, x, kernel, stride), device),
            max_error=max_error(provider, x, kernel, stride) if provider.checked and name != "reference" else None,
        )
        if bandwidth:
            row.forward_bandwidth_pct = 100 * minimal_bytes(x, kernel, stride, False) / row.forward_ms / bandwidth
            row.train_bandwidth_pct = 100 * minimal_bytes(x, kernel, stride, True) / row.train_ms / bandwidth
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
    parser.add_argument("--quick", action="store_true", help="only the first layer shape")
    return parser.parse_args()


def main():
    args = parse_args()
    device = resolve_defaults(args)
    dtype = getattr(torch, args.dtype)
    bandwidth = copy_bandwidth_bytes_per_ms(device, dtype) if device.type == "cuda" else None
    env = environment(device)
    print(f"# involution op, K={KERNEL_SIZE}, G=C/{GROUP_CHANNELS}, batch {args.batch}, {args.dtype}, {env}")
    rows = []
    for channels, size in REDNET50_LAYERS[:1] if args.quick else REDNET50_LAYERS:
        for stride in (1, 2):
            rows += benchmark_shape(args, device, dtype, channels, size, stride, bandwidth)
            print(format_table(rows[-len(args.backends) - (2 if device.type == "cuda" else 0) :]), flush=True)
    print("\n" + format_table(rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"environment": env, "args": vars(args), "rows": [asdict(r) for r in rows]}, out, indent=1)


if __name__ == "__main__":
    main()
