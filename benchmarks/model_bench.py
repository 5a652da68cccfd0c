"""RedNet vs ResNet (and SASA) side by side: a training step and inference, images/s and peak memory.

Every involution model is timed once per op backend, as built (Involution2d's default: the kernel generation
fused where that pays), and with --fused also with every layer fused (fused=True) and, where the default fuses
some, with none (fused=False), eagerly
and/or under torch.compile (--modes); the ratios compare it with ResNet-50 measured in the same run and
mode (the paper's FLOPs: RedNet-50 2.69 G vs ResNet-50 4.12 G). Compiled rows also give the compile time
(the first training step plus the first inference, each minus one warm call).

    python benchmarks/model_bench.py                       # CPU: batch 8; CUDA: batch 64, bf16 autocast
    python benchmarks/model_bench.py --models rednet50 resnet50 sasa50 --size 160
    python benchmarks/model_bench.py --backends triton --fused --modes eager compiled
"""

import json
import time

import torch
import torch.nn.functional as F
from measure import common_arguments, environment, peak_memory_mib, resolve_defaults, timed_ms

from involution import Involution2d
from involution.complexity import count_flops
from involution.models import build_model

BASELINE = "resnet50"


def train_step_fn(model, optimizer, images, labels, autocast_dtype):
    def step():
        with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def inference_fn(model, images, autocast_dtype):
    @torch.no_grad()
    def infer():
        with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            model(images)

    return infer


def first_call_s(run, device) -> float:
    """Wall time of a first call (which compiles, under torch.compile)."""
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


FUSION_LABELS = {None: "", True: " fused", False: " unfused"}


def build(name, backend, fused, device):
    overrides = {} if backend is None else {"backend": backend}
    model = build_model(name, **overrides).to(device, memory_format=torch.channels_last)
    for module in model.modules():
        if isinstance(module, Involution2d):
            module.fused = fused  # None: the default
    return model


def fusion_variants(name, backend, args, device, images) -> list:
    """The values of Involution2d.fused to time the model with (None: as built)."""
    if not (args.fused and name.startswith("rednet")):
        return [None]
    layers = [m for m in build(name, backend, None, device).modules() if isinstance(m, Involution2d)]
    return [None, True, False] if any(layer.fuses(images) for layer in layers) else [None, True]


def measure(name, backend, fused, mode, args, device, images, labels) -> dict:
    model = build(name, backend, fused, device)
    flops_g = count_flops(model, images.shape[1:]) / 1e9
    runnable = torch.compile(model) if mode == "compiled" else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    step = train_step_fn(runnable, optimizer, images, labels, args.autocast_dtype)
    compile_s = first_call_s(step, device) - first_call_s(step, device)
    train_ms = timed_ms(step, device, args.repeats)
    train_peak = peak_memory_mib(step, device)
    model.eval()
    infer = inference_fn(runnable, images, args.autocast_dtype)
    compile_s += first_call_s(infer, device) - first_call_s(infer, device)
    infer_ms = timed_ms(infer, device, args.repeats)
    label = "-" if backend is None else backend + FUSION_LABELS[fused]
    return {
        "model": name,
        "backend": label,
        "mode": mode,
        "flops_g": flops_g,
        "train_ms": train_ms,
        "train_img_s": 1e3 * len(images) / train_ms,
        "train_peak_mib": train_peak,
        "infer_ms": infer_ms,
        "infer_img_s": 1e3 * len(images) / infer_ms,
        "compile_s": compile_s if mode == "compiled" else None,
    }


def format_table(rows: list[dict]) -> str:
    lines = [
        f"| model | backend | mode | GFLOPs | train img/s | train time x {BASELINE} | train peak MiB "
        f"| peak x {BASELINE} | infer img/s | infer time x {BASELINE} | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = next((b for b in rows if b["model"] == BASELINE and b["mode"] == r["mode"]), None)
        ratios = (
            ["-"] * 3
            if base is None
            else [
                f"{r['train_ms'] / base['train_ms']:.2f}",
                f"{r['train_peak_mib'] / base['train_peak_mib']:.2f}",
                f"{r['infer_ms'] / base['infer_ms']:.2f}",
            ]
        )
        compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.0f}"
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['mode']} | {r['flops_g']:.2f} | {r['train_img_s']:.1f} "
            f"| {ratios[0]} | {r['train_peak_mib']:.0f} | {ratios[1]} | {r['infer_img_s']:.1f} | {ratios[2]} "
            f"| {compile_s} |"
        )
    return "\n".join(lines)


def parse_args():
    parser = common_arguments(__doc__, repeats=3)
    parser.add_argument("--models", nargs="+", default=["rednet50", BASELINE])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], help="default: bf16 on CUDA, none on CPU")
    parser.add_argument(
        "--fused", action="store_true", help="also time RedNets with every Involution2d fused, and with none"
    )
    parser.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager"])
    return parser.parse_args()


def main():
    args = parse_args()
    device = resolve_defaults(args)
    amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    args.autocast_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch,), device=device)
    env = environment(device)
    print(f"# batch {args.batch} at {args.size}x{args.size}, amp {amp}, channels_last, {env}")
    rows = []
    for mode in args.modes:
        for name in args.models:
            for backend in [None] if name.startswith("resnet") else args.backends:
                for fused in fusion_variants(name, backend, args, device, images):
                    rows.append(measure(name, backend, fused, mode, args, device, images, labels))
                    print(format_table(rows[-1:]).splitlines()[-1], flush=True)
                    if args.json:  # after every row, so that a run cut short leaves what it measured
                        write_json(args, env, rows)
    print("\n" + format_table(rows))


def write_json(args, env, rows):
    with open(args.json, "w") as out:
        settings = {k: v for k, v in vars(args).items() if k != "autocast_dtype"}
        json.dump({"environment": env, "args": settings, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
