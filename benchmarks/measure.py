"""Timing and peak-memory helpers shared by the benchmark scripts."""

import argparse
import ctypes
import gc
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def timed_ms(run: Callable, device: torch.device, repeats: int) -> float:
    """Median wall time of run() in ms: triton.testing.do_bench on CUDA, perf_counter runs on CPU."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median")
    run()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _process_status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_memory_mib(run: Callable, device: torch.device) -> float:
    """Peak memory above what was allocated before the run (CUDA allocator stats, or peak RSS on Linux).
    run() must not keep its results (outputs, gradients) alive after it returns, or the next measurement
    would start from a state that still holds them."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    # Give freed heap pages back, then reset the peak-RSS mark (Linux >= 4.0) so it measures this run only.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _process_status_bytes("VmRSS")
    run()
    return (_process_status_bytes("VmHWM") - before) / 2**20


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers (Linux: CPUs of different generations can share a
    model name such as "AMD EPYC", and ratios measured on them differ), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine() or "cpu"
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "cpu"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def keep_freed_memory() -> bool:
    """glibc's malloc set to keep freed blocks (up to 32 MiB each) for reuse and never to trim its heap; False where
    there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    trim_threshold, mmap_threshold = -1, -3  # glibc's M_TRIM_THRESHOLD and M_MMAP_THRESHOLD
    return bool(mallopt(mmap_threshold, 2**25)) and bool(mallopt(trim_threshold, 2**31 - 1))


def environment(device: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def common_arguments(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options both benchmarks take: device, batch, backends, repeats, JSON output."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="default: 64 on CUDA, 8 on CPU")
    parser.add_argument("--backends", nargs="+", help="default: reference torch (+ triton on CUDA)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed runs per measurement on CPU (median)")
    parser.add_argument("--json", help="also write the rows and the environment to this file")
    return parser


def resolve_defaults(args) -> torch.device:
    """Fill in the device-dependent defaults of common_arguments; returns the device."""
    device = torch.device(args.device)
    args.batch = args.batch or (64 if device.type == "cuda" else 8)
    args.backends = args.backends or (
        ["reference", "torch", "triton"] if device.type == "cuda" else ["reference", "torch"]
    )
    return device
