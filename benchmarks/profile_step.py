"""Where a training step's time goes, by operator (torch.profiler, self CPU time, after one warm-up step).

python benchmarks/profile_step.py rednet50 --backend torch       # B8 224², 2 threads
python benchmarks/profile_step.py demo --backend cpp             # the demo's RedNet-26 K=7, B128 28², 1 thread
"""

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from involution.models import build_model
from involution.ops import BACKENDS

DEMO_OPTIONS = {"stem": "small", "small_stem_stride": 2, "width": 16, "in_chans": 1, "num_classes": 10}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["rednet50", "demo"])
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model == "demo":
        torch.set_num_threads(1)
        model = build_model("rednet26", kernel_size=7, group_channels=8, backend=args.backend, **DEMO_OPTIONS)
        images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    else:
        model = build_model("rednet50", backend=args.backend)
        images, labels = torch.randn(8, 3, 224, 224), torch.randint(0, 1000, (8,))
    model = model.to(memory_format=torch.channels_last)
    images = images.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(args.steps):
            step()
    print(
        f"# {args.model}, backend {args.backend}, {args.steps} steps, {torch.get_num_threads()} threads, channels_last"
    )
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=45))


if __name__ == "__main__":
    main()
