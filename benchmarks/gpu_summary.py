"""Summary of a benchmarks/gpu_check.sh run: the numbers its targets are about, from the JSON files in one folder.

    python benchmarks/gpu_summary.py gpu_results

Op (per layer and dtype): the Triton op's forward and forward+backward as % of the bandwidth floor (targets:
60% and 40% on the 56² and 28² layers), and the fused Involution2d forward against cuDNN's depthwise
convolution of the same layer (target: at least as fast). Models: RedNet-50 against ResNet-50 in the same
mode (targets: training images/s at least 1.0x, peak memory at most 1.0x, inference images/s at least 1.3x).
"""

import json
import sys
from pathlib import Path

from model_bench import BASELINE
from model_bench import format_table as model_table


def op_summary(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    rows = {(r["channels"], r["size"], r["stride"], r["provider"]): r for r in data["rows"]}
    layers = sorted({key[:3] for key in rows}, key=lambda layer: (-layer[1], layer[0]))
    lines = [
        f"### {path.stem}: {data['args']['dtype']}, batch {data['args']['batch']}, {data['environment']['device']}",
        "| layer | stride | triton fwd ms | fwd % bw | fwd+bwd % bw | max err | fused fwd ms | fused % bw "
        "| cudnn dw fwd ms | fused / cudnn time | conv1x1+triton fwd ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def value(layer, provider, field, fmt):
        row = rows.get(layer + (provider,))
        return "-" if row is None or row.get(field) is None else format(row[field], fmt)

    for layer in layers:
        fused, cudnn = rows.get(layer + ("fused",)), rows.get(layer + ("cudnn depthwise",))
        ratio = "-" if not (fused and cudnn) else f"{fused['forward_ms'] / cudnn['forward_ms']:.2f}"
        lines.append(
            f"| C={layer[0]} @ {layer[1]}² | {layer[2]} | {value(layer, 'triton', 'forward_ms', '.3f')} "
            f"| {value(layer, 'triton', 'forward_bandwidth_pct', '.0f')} "
            f"| {value(layer, 'triton', 'train_bandwidth_pct', '.0f')} | {value(layer, 'triton', 'max_error', '.1e')} "
            f"| {value(layer, 'fused', 'forward_ms', '.3f')} | {value(layer, 'fused', 'forward_bandwidth_pct', '.0f')} "
            f"| {value(layer, 'cudnn depthwise', 'forward_ms', '.3f')} | {ratio} "
            f"| {value(layer, 'conv1x1 + triton', 'forward_ms', '.3f')} |"
        )
    return lines


def model_summary(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    lines = [f"### {path.stem}: batch {data['args']['batch']}, amp {data['args']['amp']}", model_table(data["rows"])]
    for row in data["rows"]:
        base = next((b for b in data["rows"] if b["model"] == BASELINE and b["mode"] == row["mode"]), None)
        if base is None or row is base:
            continue
        train, infer = row["train_img_s"] / base["train_img_s"], row["infer_img_s"] / base["infer_img_s"]
        lines.append(
            f"- {row['model']} {row['backend']} {row['mode']}: training {train:.2f}x {BASELINE}'s images/s, peak "
            f"memory {row['train_peak_mib'] / base['train_peak_mib']:.2f}x, inference {infer:.2f}x images/s"
        )
    return lines


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_results")
    lines = []
    for path in sorted(folder.glob("op_*.json")):
        lines += op_summary(path) + [""]
    for path in sorted(folder.glob("model_*.json")):
        lines += model_summary(path) + [""]
    print("\n".join(lines) if lines else f"no benchmark JSON in {folder}")


if __name__ == "__main__":
    main()
