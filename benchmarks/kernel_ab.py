"""Versions of the compiled CPU kernels (involution/ops/cpu_kernels.cpp) timed side by side in one process.

Each source is compiled as an extension of its own (its operator library renamed, so that all of them load into
one process) and called on the same random channels-last operands, one call of each per round, the order
reversed every other round; it prints each one's median and minimum over the rounds, its ratio to the first
source, and the largest difference between its result and the first source's (over all of a kernel's results). The
fused kernels (fused_forward, fused_grad_input, fused_grad_generation) generate the kernel from random reduced
features (--reduced, default channels // 4). The kernel changes in benchmarks/RESULTS.md were measured this way:

    git show HEAD~1:involution/ops/cpu_kernels.cpp > /tmp/before.cpp
    python benchmarks/kernel_ab.py grad_kernel /tmp/before.cpp involution/ops/cpu_kernels.cpp
    python benchmarks/kernel_ab.py forward /tmp/before.cpp involution/ops/cpu_kernels.cpp \\
        --shape 128,16,14 --groups 2 --threads 1 --evict

Like cpu_goals.py, it first has glibc's malloc keep freed memory, so that large outputs are not page-faulted in
again on every call.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from measure import cpu_name, keep_freed_memory

from involution.ops import cpp_ops

KERNELS = ("forward", "grad_input", "grad_kernel", "fused_forward", "fused_grad_input", "fused_grad_generation")
LIBRARY = "TORCH_LIBRARY(involution_cpu,"


def load_version(source: Path) -> str:
    """Compiles (or finds built) one version of the kernels; returns its operator namespace."""
    try:
        text = source.read_text()
    except (OSError, UnicodeDecodeError) as error:
        sys.exit(f"kernel_ab: cannot read {source}: {error}")
    if LIBRARY not in text:
        sys.exit(f"kernel_ab: {source} does not define the kernels' operator library ({LIBRARY} ...)")
    namespace = f"involution_ab_{cpp_ops.build_tag(text.encode())}"
    directory = cpp_ops.build_root() / "kernel_ab" / namespace
    renamed = directory / f"{namespace}.cpp"
    directory.mkdir(parents=True, exist_ok=True)
    if not renamed.exists():  # rewritten, it would be rebuilt
        renamed.write_text(text.replace(LIBRARY, f"TORCH_LIBRARY({namespace},"))
    try:
        cpp_ops.compile_extension(namespace, renamed, directory)
    except Exception as error:  # the compiler's output is long: its first line names the failure
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        sys.exit(f"kernel_ab: {source} does not build: {reason}")
    return namespace


def shape(text: str) -> tuple:
    try:
        batch, channels, size = (int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BATCH,CHANNELS,SIZE, got {text!r}") from None
    if min(batch, channels, size) < 1:
        raise argparse.ArgumentTypeError(f"every dimension must be positive, got {text!r}")
    return batch, channels, size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kernel", choices=KERNELS)
    parser.add_argument("sources", nargs="+", type=Path, help="versions of cpu_kernels.cpp; ratios are to the first")
    parser.add_argument("--shape", type=shape, default=(8, 64, 56), help="BATCH,CHANNELS,SIZE of the input")
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--kernel-size", type=int, default=7)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--dilation", type=int, default=1)
    parser.add_argument("--reduced", type=int, help="the fused kernels' reduced channels (default: channels // 4)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, help="default: torch's")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--evict", action="store_true", help="write 64 MiB before each call (operands not in cache)")
    args = parser.parse_args()
    batch, channels, size = args.shape
    k, stride, dilation = args.kernel_size, args.stride, args.dilation
    padding = dilation * (k - 1) // 2
    out_size = (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    if args.groups < 1 or channels % args.groups:
        parser.error(f"--groups {args.groups} does not divide the {channels} channels")
    if k < 1 or k % 2 == 0 or stride < 1 or dilation < 1 or out_size < 1:
        parser.error("--kernel-size must be odd and positive, --stride and --dilation positive")
    if args.rounds < 1:
        parser.error("--rounds must be positive")
    reduced = channels // 4 if args.reduced is None else args.reduced
    if reduced < 1:
        parser.error("--reduced must be positive")

    kept = keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    namespaces = [load_version(source) for source in args.sources]
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    image = torch.randn(batch, size, size, channels, dtype=dtype)
    grad_out = torch.randn(batch, out_size, out_size, channels, dtype=dtype)
    kernel_map = torch.randn(batch, out_size, out_size, args.groups * k * k, dtype=dtype)
    # The fused kernels' generation: reduced features (B, Ho, Wo, R), weight (G*K*K, R), bias (G*K*K).
    generation = (
        torch.randn(batch, out_size, out_size, reduced, dtype=dtype),
        torch.randn(args.groups * k * k, reduced, dtype=dtype) / reduced**0.5,
        torch.randn(args.groups * k * k, dtype=dtype),
    )
    geometry = (k, args.groups)

    def call(namespace) -> tuple:
        ops = getattr(torch.ops, namespace)
        if args.kernel == "forward":
            return (ops.forward(image, kernel_map, *geometry, stride, padding, dilation),)
        if args.kernel == "grad_input":
            return (ops.grad_input(grad_out, kernel_map, *geometry, size, size, stride, padding, dilation),)
        if args.kernel == "grad_kernel":
            return (ops.grad_kernel(grad_out, image, *geometry, stride, padding, dilation),)
        if args.kernel == "fused_forward":
            return (ops.fused_forward(image, *generation, *geometry, stride, padding, dilation),)
        if args.kernel == "fused_grad_input":
            return (ops.fused_grad_input(grad_out, *generation, *geometry, size, size, stride, padding, dilation),)
        return ops.fused_grad_generation(grad_out, image, *generation, *geometry, stride, padding, dilation)

    first = call(namespaces[0])
    differences = [
        max((result - reference).abs().max().item() for result, reference in zip(call(namespace), first))
        for namespace in namespaces
    ]
    evicted = torch.empty(2**24)
    samples = {namespace: [] for namespace in namespaces}
    for round in range(args.rounds + 2):  # two rounds of warm-up
        for namespace in namespaces if round % 2 else namespaces[::-1]:
            if args.evict:
                evicted.fill_(round)
            start = time.perf_counter()
            call(namespace)
            if round >= 2:
                samples[namespace].append((time.perf_counter() - start) * 1e3)

    print(
        f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, malloc: {'freed memory kept' if kept else 'defaults'}"
    )
    print(
        f"# {args.kernel} B{batch} C{channels} {size}² K={k} G={args.groups} stride {stride} dilation {dilation}, "
        f"{args.dtype}, {'64 MiB written before each call' if args.evict else 'warm'}, {args.rounds} rounds"
    )
    base = statistics.median(samples[namespaces[0]])
    width = max(len(str(source)) for source in args.sources)
    for source, namespace, difference in zip(args.sources, namespaces, differences):
        median = statistics.median(samples[namespace])
        print(
            f"{str(source):{width}}  {median:8.3f} ms (minimum {min(samples[namespace]):.3f})  {median / base:.3f}x"
            f"  largest difference {difference:.3g}"
        )


if __name__ == "__main__":
    main()
