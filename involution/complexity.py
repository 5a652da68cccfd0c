"""Model complexity: parameters and FLOPs (multiply-adds) under the paper's convention, and fvcore's.

The paper's FLOPs follow mmcv's counter (see shared reference "FLOP convention"): convolution and linear
multiply-adds plus one per output element for a bias, BatchNorm 2 x numel, ReLU numel, pooling the
input's numel, and the involution aggregation K*K*C*Ho*Wo; residual additions are not counted. Any
module can add what its children do not show by defining ``extra_flops(input, output)`` (per sample),
as Involution2d and LocalSelfAttention do. Works on any model, not only the registered ones.

``python -m involution.complexity`` prints the table for every registered model against the
published numbers.
"""

import argparse
from typing import Any, List, Sequence

import torch
from torch import nn

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.SyncBatchNorm, nn.LayerNorm)


def _leaf_flops(module: nn.Module, input: torch.Tensor, output: torch.Tensor) -> int:
    """Multiply-adds of one sample through a standard layer, mmcv's way; 0 for layers it does not count."""
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return output[0].numel() * (per_output + (module.bias is not None))
    if isinstance(module, nn.Linear):
        return output[0].numel() * (module.in_features + (module.bias is not None))
    if isinstance(module, _NORMS):
        affine = getattr(module, "affine", getattr(module, "elementwise_affine", False))
        return input[0].numel() * (2 if affine else 1)
    if isinstance(module, (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU)):
        return output[0].numel()
    if isinstance(module, _POOLS):
        return input[0].numel()
    return 0


@torch.no_grad()
def count_flops(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> int:
    """FLOPs (multiply-adds) of one (C, H, W) sample under the paper's convention."""
    counts = []

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return
        flops = _leaf_flops(module, inputs[0], output)
        if hasattr(module, "extra_flops"):
            flops += module.extra_flops(inputs[0], output)
        counts.append(flops)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else "cpu"
        model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return sum(counts)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def involution_flop_handle(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for ``involution::aggregate``: K*K*C*Ho*Wo per sample."""
    from fvcore.nn.jit_handles import get_shape

    batch, channels, out_h, out_w = get_shape(outputs[0])
    kernel_h, kernel_w = get_shape(inputs[1])[2:4]
    return batch * channels * out_h * out_w * kernel_h * kernel_w


def correlation_flop_handle(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for ``involution::correlate``: K*K*C*Ho*Wo per sample (C = query channels)."""
    from fvcore.nn.jit_handles import get_shape

    batch, channels, out_h, out_w = get_shape(inputs[0])
    kernel_h, kernel_w = get_shape(outputs[0])[2:4]
    return batch * channels * out_h * out_w * kernel_h * kernel_w


def fused_involution_flop_handle(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle for ``involution::fused_aggregate``: the 1x1 generation (G*K*K*R) plus the aggregation
    (K*K*C), per output pixel."""
    from fvcore.nn.jit_handles import get_shape

    batch, channels, out_h, out_w = get_shape(outputs[0])
    rows, reduced = get_shape(inputs[2])
    kernel_size = inputs[4].toIValue()
    return batch * out_h * out_w * (rows * reduced + channels * kernel_size**2)


FVCORE_HANDLES = {
    "involution::aggregate": involution_flop_handle,
    "involution::correlate": correlation_flop_handle,
    "involution::fused_aggregate": fused_involution_flop_handle,
}


def flop_count_analysis(model, inputs):
    """``fvcore.nn.FlopCountAnalysis`` of ``model`` on ``inputs`` that also counts the involution ops."""
    from fvcore.nn import FlopCountAnalysis

    return FlopCountAnalysis(model, inputs).set_op_handle(**FVCORE_HANDLES)


def fvcore_flops(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> int:
    """fvcore's total for one sample (it counts fewer layer types than the paper's convention)."""
    was_training = model.training
    model.eval()
    try:
        analysis = flop_count_analysis(model, torch.zeros(1, *input_size))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analysis.total()
    finally:
        model.train(was_training)


def complexity_table(names: Sequence[str], input_size: Sequence[int] = (3, 224, 224)) -> list[dict]:
    """One row per model: params and FLOPs (both conventions), beside the published numbers if any."""
    from .models import build_model
    from .published import published_complexity

    rows = []
    for name in names:
        model = build_model(name)
        params_m = count_params(model) / 1e6
        flops_g = count_flops(model, input_size) / 1e9
        row = {
            "model": name,
            "params_m": params_m,
            "flops_g": flops_g,
            "fvcore_g": fvcore_flops(model, input_size) / 1e9,
        }
        published = published_complexity(name)
        if published:
            row.update(
                published_params_m=published["params_m"],
                published_flops_g=published["flops_g"],
                params_diff_m=params_m - published["params_m"],
                flops_diff_pct=100 * (flops_g / published["flops_g"] - 1),
                source=published["source"],
            )
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'model':<10} {'params M':>9} {'paper-conv G':>12} {'fvcore G':>9} {'published':>16} "
        f"{'d params M':>10} {'d FLOPs':>8}  source"
    ]
    for r in rows:
        published = "-"
        diffs = f"{'-':>10} {'-':>8}"
        if "published_params_m" in r:
            published = f"{r['published_params_m']:.2f} M {r['published_flops_g']:.2f} G"
            diffs = f"{r['params_diff_m']:>+10.3f} {r['flops_diff_pct']:>+7.2f}%"
        lines.append(
            f"{r['model']:<10} {r['params_m']:>9.3f} {r['flops_g']:>12.3f} {r['fvcore_g']:>9.3f} {published:>16} "
            f"{diffs}  {_short_source(r.get('source') or '')}"
        )
    return "\n".join(lines)


def _short_source(source: str) -> str:
    """https://github.com/hszhao/SAN#performance -> hszhao/SAN, https://arxiv.org/abs/1906.05909 -> arXiv 1906.05909
    (results/paper/imagenet.csv has the full one)."""
    source = source.replace("https://arxiv.org/abs/", "arXiv ")
    return source.removeprefix("https://github.com/").split("#")[0].replace("/blob/main/", " ")


def main(argv=None):
    from .models import list_models

    parser = argparse.ArgumentParser(description="Params and FLOPs of the registered models vs the paper.")
    parser.add_argument("--models", default="*", help="shell-style pattern of model names")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    args = parser.parse_args(argv)
    print(f"Input 3x{args.size}x{args.size}; FLOPs are multiply-adds per image.")
    print(format_table(complexity_table(list_models(args.models), (3, args.size, args.size))))


if __name__ == "__main__":
    main()
