"""The CPU speed goals, each a ratio of two things timed side by side in this run (interleaved repetitions, median).

1. The op, forward + backward (B8, C64, 56², K=7, G=4), per backend, against a depthwise 7x7 convolution of the
   same shape (the same multiply-adds), beside its memory-traffic floor: the bytes a one-pass kernel must read
   and write once (input, kernel map, output; the backward reads grad_out, input and kernel map and writes
   both gradients) divided by the copy bandwidth measured here.
2. RedNet-50 against torchvision's ResNet-50 (B8, 224², fp32, both channels_last as the trainer runs them): a
   training step (forward, backward, SGD) and inference. RedNets run with each CPU backend: "cpp" (what "auto"
   picks where the compiled kernels build) and "torch" (the plain-torch path, which "auto" fell back to before).
3. The demo's model (RedNet-26, small stem with stride 2, width 16, K=7; 1 input channel, 10 classes) against
   ResNet-26 in the same skeleton: training images/s at B128, 28x28, on one thread, channels_last (the trainer's
   default); with 8 channels per group (the goal's) and with 16 (the paper's, which make demo's grids use).
4. "kernels" (not a goal; where the op's time goes): each compiled kernel (forward, grad_input, grad_kernel) on
   its own, channels-last, at RedNet-50's involution layers (B8; torch's threads) and the demo model's (B128; one
   thread), with a depthwise KxK convolution's forward beside it; warm (the operands in cache from the call
   before) and cold (64 MiB written before each call, as the other layers of a model do between two uses).
5. "bounds" (not a goal; what the goals leave to the involution layers): RedNet-50 and the demo's RedNet-26 with
   every involution as it is, with its aggregation free (the kernel generation kept: the map is computed, and a
   dense gradient of it handed back, as the aggregation's backward does) and with the whole layer free (the
   input passed on, subsampled by the stride), each against the ResNet of part 2 or 3. The aggregation-free
   variant generates the kernel map with conv2 as the unfused layer does.
6. "fusion" (not a goal; the evidence for Involution2d's default): each distinct involution layer of RedNet-50
   (B8, torch's threads) and of the demo's RedNet-26 (8 and 16 channels per group; B128, one thread) alone,
   with the kernel generated inside the compiled kernels (fused=True) against conv2 writing the kernel map
   (fused=False): training (forward and backward with a dense gradient) and inference, and which of the two
   the default picks (involution.ops.fusion_pays).

    python benchmarks/cpu_goals.py                  # all three (about two minutes on 2 cores)
    python benchmarks/cpu_goals.py --parts op demo --repeats 9
    python benchmarks/cpu_goals.py --threads 1      # less sensitive to other load on a shared machine
    python benchmarks/cpu_goals.py --parts kernels
    python benchmarks/cpu_goals.py --parts bounds
    python benchmarks/cpu_goals.py --parts fusion

Under glibc the script first has malloc keep freed memory for reuse (as MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=2147483647 would). With glibc's defaults, large freed blocks go back to the operating system
and a step page-faults its tensors in again, as many times as the step that ran before it left to do: the ratio of
interleaved RedNet-50 and ResNet-50 training steps measured between 0.88x and 0.97x depending on the order of the
interleaving, and 0.87-0.91x in any order with freed memory kept. --malloc-defaults leaves glibc's settings alone;
the header says which ran.
"""

import argparse
import contextlib
import copy
import os
import statistics
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
import torchvision
from measure import cpu_name, keep_freed_memory

from involution import Involution2d, involution2d
from involution.models import build_model
from involution.ops import BACKENDS, cpp_ops

PARTS = ("op", "rednet50", "demo", "kernels", "bounds", "fusion")


def interleaved_ms(
    candidates: dict[str, Callable], repeats: int, before: Optional[Callable] = None
) -> dict[str, float]:
    """Median wall time in ms of each candidate, one call of each per round, after one warm-up round; `before`
    runs (untimed) before each call."""
    samples = {name: [] for name in candidates}
    for round in range(repeats + 1):
        for name, run in candidates.items():
            if before:
                before()
            start = time.perf_counter()
            run()
            if round:
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(times) for name, times in samples.items()}


def copy_bandwidth_bytes_per_ms(repeats: int) -> float:
    """Read + write bytes per ms of a 256 MiB tensor copy."""
    source = torch.empty(2**26)
    target = torch.empty_like(source)
    ms = interleaved_ms({"copy": lambda: target.copy_(source)}, repeats)["copy"]
    return 2 * source.numel() * source.element_size() / ms


def op_part(repeats: int) -> list[str]:
    """In both layouts: channels_last (what a channels_last model feeds the op: the input, and conv2's output as
    the kernel map) and contiguous NCHW; the depthwise convolution gets the same layout."""
    batch, channels, size, k, groups = 8, 64, 56, 7, 4
    x = torch.randn(batch, channels, size, size)
    kernel = torch.randn(batch, groups, k, k, size, size)
    weight = torch.randn(channels, 1, k, k, requires_grad=True)
    pixel_major = kernel.permute(0, 4, 5, 1, 2, 3).contiguous().permute(0, 3, 4, 5, 1, 2)
    layouts = {
        "channels_last": (x.to(memory_format=torch.channels_last), pixel_major),
        "NCHW": (x.clone(), kernel),
    }
    layouts = {name: tuple(t.requires_grad_() for t in tensors) for name, tensors in layouts.items()}

    def involution(image, kernel_map, backend):
        return lambda: torch.autograd.grad(involution2d(image, kernel_map, backend=backend).sum(), (image, kernel_map))

    def depthwise(image):
        return lambda: torch.autograd.grad(
            F.conv2d(image, weight, padding=k // 2, groups=channels).sum(), (image, weight)
        )

    backends = [b for b in ("cpp", "torch") if b in BACKENDS]
    candidates = {}
    for layout, (image, kernel_map) in layouts.items():
        candidates[layout, "depthwise 7x7"] = depthwise(image)
        candidates.update({(layout, b): involution(image, kernel_map, b) for b in backends})
    times = interleaved_ms(candidates, repeats)
    elements = 3 * x.numel() + 3 * kernel.numel() + 2 * x.numel()
    floor_ms = elements * x.element_size() / copy_bandwidth_bytes_per_ms(repeats)
    lines = [
        f"op fwd+bwd B{batch} C{channels} {size}² K={k} G={groups}, fp32; memory-traffic floor {floor_ms:.1f} ms "
        "(input, kernel map, output and their gradients, each once, at the measured copy bandwidth):"
    ]
    for layout in layouts:
        base = times[layout, "depthwise 7x7"]
        lines.append(f"  {layout}: depthwise 7x7 conv {base:.1f} ms")
        for backend in backends:
            ms = times[layout, backend]
            lines.append(
                f"    involution {backend:>5}: {ms:.1f} ms = {ms / base:.2f}x depthwise (goal <= 0.5x), "
                f"{ms / floor_ms:.1f}x the floor"
            )
    return lines


def train_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        model.train()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def inference(model: torch.nn.Module, images: torch.Tensor) -> Callable:
    @torch.no_grad()
    def infer():
        model.eval()
        model(images)

    return infer


def model_backends() -> list[str]:
    """The involution backends the RedNets are timed with: the CPU's "auto" choice and the plain torch path."""
    return ["cpp", "torch"] if "cpp" in BACKENDS and cpp_ops.available() else ["torch"]


def rednet50_part(repeats: int) -> list[str]:
    images, labels = torch.randn(8, 3, 224, 224), torch.randint(0, 1000, (8,))
    images = images.to(memory_format=torch.channels_last)
    models = {f"rednet50 {b}": build_model("rednet50", backend=b) for b in model_backends()}
    models["resnet50"] = torchvision.models.resnet50()
    models = {name: model.to(memory_format=torch.channels_last) for name, model in models.items()}
    candidates = {}
    for name, model in models.items():
        candidates[name, "train"] = train_step(model, images, labels)
        candidates[name, "infer"] = inference(model, images)
    times = interleaved_ms(candidates, repeats)
    lines = ["RedNet-50 vs torchvision ResNet-50, B8 224², fp32, channels_last:"]
    for what, goal in (("train", 0.9), ("infer", 0.8)):
        base = times["resnet50", what]
        for backend in model_backends():
            red = times[f"rednet50 {backend}", what]
            lines.append(
                f"  {what:>5} step, involution {backend:>5}: {red:.0f} ms vs {base:.0f} ms = {red / base:.2f}x "
                f"(goal <= {goal}x)"
            )
    return lines


@contextlib.contextmanager
def torch_threads(count: Optional[int]):
    """torch's intra-op threads set to count (None: unchanged) inside the block, restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count or previous)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def demo_part(repeats: int) -> list[str]:
    """The goal's RedNet-26 has 8 channels per group; make demo's grids train it with 16 (the paper's)."""
    with torch_threads(1):
        options = {"stem": "small", "small_stem_stride": 2, "width": 16, "in_chans": 1, "num_classes": 10}
        models = {
            (width, b): build_model("rednet26", kernel_size=7, group_channels=width, backend=b, **options)
            for width in (8, 16)
            for b in model_backends()
        }
        models["resnet26"] = build_model("resnet26", **options)
        images = torch.randn(128, 1, 28, 28).to(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (128,))
        times = interleaved_ms(
            {name: train_step(m.to(memory_format=torch.channels_last), images, labels) for name, m in models.items()},
            repeats,
        )
    images_per_s = {name: 128e3 / ms for name, ms in times.items()}
    base = images_per_s["resnet26"]
    lines = [f"demo model training, B128 28x28, 1 thread, channels_last: ResNet-26 {base:.0f} img/s"]
    for width in (8, 16):
        for backend in model_backends():
            red = images_per_s[width, backend]
            goal = " (goal >= 0.8x)" if width == 8 else " (as make demo trains it)"
            lines.append(
                f"  RedNet-26 K=7, {width:>2} channels per group, involution {backend:>5}: {red:.0f} img/s = "
                f"{red / base:.2f}x{goal}"
            )
    return lines


# (batch, channels, size, groups, stride) of the involution layers (K=7): RedNet-50's stages at 224², the demo
# RedNet-26 of the goal at 28² (width 16, 8 channels per group).
RESNET50_LAYERS = [(8, 64, 56, 4, 1), (8, 64, 56, 4, 2), (8, 128, 28, 8, 1), (8, 256, 14, 16, 1), (8, 512, 7, 32, 1)]
DEMO_LAYERS = [(128, 16, 14, 2, 1), (128, 32, 14, 4, 2), (128, 32, 7, 4, 1), (128, 64, 4, 8, 1), (128, 128, 2, 16, 1)]


def kernel_times(batch: int, channels: int, size: int, groups: int, stride: int, repeats: int) -> dict[str, float]:
    ops, k = torch.ops.involution_cpu, 7
    padding, out = k // 2, (size - 1) // stride + 1
    x, grad_out = torch.randn(batch, size, size, channels), torch.randn(batch, out, out, channels)
    kernel = torch.randn(batch, out, out, groups * k * k)
    x_nchw, weight = x.permute(0, 3, 1, 2), torch.randn(channels, 1, k, k)
    candidates = {
        "forward": lambda: ops.forward(x, kernel, k, groups, stride, padding, 1),
        "grad_input": lambda: ops.grad_input(grad_out, kernel, k, groups, size, size, stride, padding, 1),
        "grad_kernel": lambda: ops.grad_kernel(grad_out, x, k, groups, stride, padding, 1),
        "depthwise": lambda: F.conv2d(x_nchw, weight, None, stride, padding, groups=channels),
    }
    evict = torch.empty(2**24)  # 64 MiB written before each call: the operands come from memory, as in a model
    cold = interleaved_ms(candidates, repeats, before=lambda: evict.fill_(1.0))
    warm = interleaved_ms(candidates, repeats)
    return {name: (warm[name], cold[name]) for name in candidates}


def kernels_part(repeats: int) -> list[str]:
    if "cpp" not in BACKENDS or not cpp_ops.available():
        return ["kernels: the compiled CPU kernels are not available here"]
    lines = []
    parts = (("RedNet-50", RESNET50_LAYERS, None), ("demo RedNet-26 (8 channels per group)", DEMO_LAYERS, 1))
    for title, layers, threads in parts:
        with torch_threads(threads):
            n = torch.get_num_threads()
            lines.append(
                f"{title} layers, K=7, fp32, channels-last, {n} thread{'s' if n > 1 else ''} "
                "(ms, warm / with the caches evicted before each call):"
            )
            for batch, channels, size, groups, stride in layers:
                times = kernel_times(batch, channels, size, groups, stride, repeats)
                lines.append(
                    f"  B{batch} C{channels} {size}² G{groups} stride {stride}: "
                    + ", ".join(f"{name} {warm:.2f} / {cold:.2f}" for name, (warm, cold) in times.items())
                )
    return lines


class _SinkMap(torch.autograd.Function):
    """The input subsampled by the stride; backward hands back a dense (zero) gradient of the kernel map, as the
    aggregation's backward does, so that the generation's backward runs as in training."""

    @staticmethod
    def forward(ctx, x, kernel_map, stride):
        ctx.save_for_backward(kernel_map)
        ctx.shape, ctx.stride = x.shape, stride
        return x[:, :, ::stride, ::stride].clone(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad):
        (kernel_map,) = ctx.saved_tensors
        grad_x = grad.new_zeros(ctx.shape).to(memory_format=torch.channels_last)
        grad_x[:, :, :: ctx.stride, :: ctx.stride] = grad
        return grad_x, torch.zeros_like(kernel_map), None


class FreeAggregation(torch.nn.Module):
    """An involution whose aggregation costs nothing: its kernel generation only."""

    def __init__(self, involution: Involution2d):
        super().__init__()
        self.involution = involution

    def forward(self, x):
        return _SinkMap.apply(x, self.involution.generate_kernel(x), self.involution.stride)


class FreeInvolution(torch.nn.Module):
    """An involution that costs nothing: the input, subsampled by the stride."""

    def __init__(self, involution: Involution2d):
        super().__init__()
        self.stride = involution.stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride].clone(memory_format=torch.channels_last)


def with_involutions_as(model: torch.nn.Module, replacement) -> torch.nn.Module:
    for name, child in model.named_children():
        if isinstance(child, Involution2d):
            setattr(model, name, replacement(child))
        else:
            with_involutions_as(child, replacement)
    return model


def bounds_part(repeats: int) -> list[str]:
    variants = {"as it is": None, "aggregation free": FreeAggregation, "whole layer free": FreeInvolution}

    def rednets(build) -> dict:
        return {name: build() if r is None else with_involutions_as(build(), r) for name, r in variants.items()}

    lines = [
        "What the goals leave to the involution layers: RedNet with its involutions as they are, with their "
        "aggregation free (kernel generation kept), and with the whole layer free (ratios to the ResNet):"
    ]
    images, labels = torch.randn(8, 3, 224, 224).to(memory_format=torch.channels_last), torch.randint(0, 1000, (8,))
    models = {**rednets(lambda: build_model("rednet50")), "resnet50": torchvision.models.resnet50()}
    models = {name: model.to(memory_format=torch.channels_last) for name, model in models.items()}
    candidates = {(name, "train"): train_step(model, images, labels) for name, model in models.items()}
    candidates.update({(name, "infer"): inference(model, images) for name, model in models.items()})
    times = interleaved_ms(candidates, repeats)
    for what, goal in (("train", "<= 0.9x"), ("infer", "<= 0.8x")):
        base = times["resnet50", what]
        ratios = ", ".join(f"{name} {times[name, what] / base:.2f}x" for name in variants)
        lines.append(f"  RedNet-50 {what} (B8 224², goal {goal}): {ratios}")
    with torch_threads(1):
        options = {"stem": "small", "small_stem_stride": 2, "width": 16, "in_chans": 1, "num_classes": 10}
        models = {**rednets(lambda: build_model("rednet26", kernel_size=7, group_channels=8, **options))}
        models["resnet26"] = build_model("resnet26", **options)
        images, labels = torch.randn(128, 1, 28, 28).to(memory_format=torch.channels_last), torch.randint(0, 10, (128,))
        times = interleaved_ms(
            {name: train_step(m.to(memory_format=torch.channels_last), images, labels) for name, m in models.items()},
            repeats,
        )
    # images/s ratios: the inverse of the time ratios
    ratios = ", ".join(f"{name} {times['resnet26'] / times[name]:.2f}x" for name in variants)
    lines.append(f"  demo RedNet-26, 8 channels per group, training images/s (1 thread, goal >= 0.8x): {ratios}")
    return lines


def involution_layers(model: torch.nn.Module, images: torch.Tensor) -> list[tuple[Involution2d, torch.Size]]:
    """Each distinct Involution2d of model (by shape) with the input size it gets from images."""
    seen = {}

    def record(module, inputs, output):
        key = (module.channels, module.stride, module.group_channels, module.conv2.conv.in_channels, inputs[0].shape)
        seen.setdefault(key, (module, inputs[0].shape))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, Involution2d)]
    with torch.no_grad():
        model.eval()(images.to(memory_format=torch.channels_last))
    for hook in hooks:
        hook.remove()
    return list(seen.values())


def fusion_times(layer: Involution2d, size: torch.Size, repeats: int) -> dict[tuple, float]:
    x = torch.randn(size).to(memory_format=torch.channels_last)
    variants = {}
    for fused in (False, True):
        variants[fused] = copy.deepcopy(layer).train()
        variants[fused].fused = fused

    def train(module):
        def step():
            out = module(x.detach().requires_grad_())
            out.backward(torch.ones_like(out))

        return step

    def infer(module):
        def forward():
            module.eval()
            with torch.no_grad():
                module(x)
            module.train()

        return forward

    candidates = {
        (what, fused): make(m) for fused, m in variants.items() for what, make in (("train", train), ("infer", infer))
    }
    return interleaved_ms(candidates, repeats)


def fusion_part(repeats: int) -> list[str]:
    if "cpp" not in BACKENDS or not cpp_ops.available():
        return ["fusion: the compiled CPU kernels are not available here"]
    options = {"stem": "small", "small_stem_stride": 2, "width": 16, "in_chans": 1, "num_classes": 10}
    models = [
        ("RedNet-50, B8 224²", lambda: build_model("rednet50"), (8, 3, 224, 224), None),
        *(
            (f"demo RedNet-26, {width} channels per group, B128 28x28", lambda w=width: build_model(
                "rednet26", kernel_size=7, group_channels=w, **options), (128, 1, 28, 28), 1)
            for width in (8, 16)
        ),
    ]  # fmt: skip
    lines = ["Involution2d alone, fused / unfused time (fused=True / False), training fwd+bwd and inference:"]
    for title, build, shape, threads in models:
        with torch_threads(threads):
            lines.append(f"  {title}, {torch.get_num_threads()} thread(s):")
            for layer, size in involution_layers(build(), torch.randn(shape)):
                times = fusion_times(layer, size, repeats)
                default = "fused" if layer.fuses(torch.empty(size)) else "unfused"  # as built
                lines.append(
                    f"    C{layer.channels} {size[-1]}² K={layer.kernel_size} stride {layer.stride}, {layer.groups} "
                    f"groups of {layer.group_channels}, reduced {layer.conv2.conv.in_channels}: train "
                    f"{times['train', True]:.2f} / {times['train', False]:.2f} ms = "
                    f"{times['train', True] / times['train', False]:.2f}x, infer {times['infer', True]:.2f} / "
                    f"{times['infer', False]:.2f} ms = {times['infer', True] / times['infer', False]:.2f}x; "
                    f"default: {default}"
                )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS[:3]))
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per comparison (median)")
    parser.add_argument("--threads", type=int, help="torch threads for the op and RedNet-50 (default: torch's)")
    parser.add_argument("--malloc-defaults", action="store_true", help="leave glibc's malloc settings as they are")
    args = parser.parse_args()
    kept = not args.malloc_defaults and keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    settings = " ".join(f"{name}={value}" for name, value in sorted(os.environ.items()) if name.startswith("MALLOC_"))
    malloc = "freed memory kept (mallopt)" if kept else settings or "defaults"
    print(
        f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, malloc: {malloc}"
    )
    parts = {
        "op": op_part,
        "rednet50": rednet50_part,
        "demo": demo_part,
        "kernels": kernels_part,
        "bounds": bounds_part,
        "fusion": fusion_part,
    }
    for name in args.parts:
        print("\n".join(parts[name](args.repeats)), flush=True)


if __name__ == "__main__":
    main()
