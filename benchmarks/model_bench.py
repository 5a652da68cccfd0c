"""RedNet vs ResNet (and SASA) side by side: a training step and inference, images/s and peak memory.

Every involution model is timed once per op backend; the ratios compare it with ResNet-50 measured in
the same run (the paper's FLOPs: RedNet-50 2.69 G vs ResNet-50 4.12 G).

    python benchmarks/model_bench.py                       # CPU: batch 8; CUDA: batch 64, bf16 autocast
    python benchmarks/model_bench.py --models rednet50 resnet50 sasa50 --size 160
"""

import json

import torch
import torch.nn.functional as F
from measure import common_arguments, environment, peak_memory_mib, resolve_defaults, timed_ms

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


def measure(name, backend, args, device, images, labels) -> dict:
    overrides = {} if name.startswith("resnet") else {"backend": backend}
    model = build_model(name, **overrides).to(device, memory_format=torch.channels_last)
    flops_g = count_flops(model, images.shape[1:]) / 1e9
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = train_step_fn(model.train(), optimizer, images, labels, args.autocast_dtype)
    train_ms = timed_ms(step, device, args.repeats)
    train_peak = peak_memory_mib(step, device)
    infer = inference_fn(model.eval(), images, args.autocast_dtype)
    infer_ms = timed_ms(infer, device, args.repeats)
    return {
        "model": name,
        "backend": backend if overrides else "-",
        "flops_g": flops_g,
        "train_ms": train_ms,
        "train_img_s": 1e3 * len(images) / train_ms,
        "train_peak_mib": train_peak,
        "infer_ms": infer_ms,
        "infer_img_s": 1e3 * len(images) / infer_ms,
    }


def format_table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["model"] == BASELINE), None)
    lines = [
        f"| model | backend | GFLOPs | train img/s | train time x {BASELINE} | train peak MiB | peak x {BASELINE} "
        f"| infer img/s | infer time x {BASELINE} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratios = (
            ["-"] * 3
            if base is None
            else [
                f"{r['train_ms'] / base['train_ms']:.2f}",
                f"{r['train_peak_mib'] / base['train_peak_mib']:.2f}",
                f"{r['infer_ms'] / base['infer_ms']:.2f}",
            ]
        )
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['flops_g']:.2f} | {r['train_img_s']:.1f} | {ratios[0]} "
            f"| {r['train_peak_mib']:.0f} | {ratios[1]} | {r['infer_img_s']:.1f} | {ratios[2]} |"
        )
    return "\n".join(lines)


def parse_args():
    parser = common_arguments(__doc__, repeats=3)
    parser.add_argument("--models", nargs="+", default=["rednet50", BASELINE])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], help="default: bf16 on CUDA, none on CPU")
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
    for name in args.models:
        for backend in [None] if name.startswith("resnet") else args.backends:
            rows.append(measure(name, backend, args, device, images, labels))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print("\n" + format_table(rows))
    if args.json:
        with open(args.json, "w") as out:
            settings = {k: v for k, v in vars(args).items() if k != "autocast_dtype"}
            json.dump({"environment": env, "args": settings, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
