"""FLOP counting for models that use involution.

fvcore counts one multiply-add as one flop but does not know the involution op; the handle below
counts its aggregation as K*K*C*Ho*Wo multiply-adds per sample, the paper's convention.
"""
from typing import Any, List


def involution_flop_handle(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore op handle for ``involution::aggregate`` (JIT values of input, kernel, ... -> output)."""
    from fvcore.nn.jit_handles import get_shape

    batch, channels, out_h, out_w = get_shape(outputs[0])
    kernel_h, kernel_w = get_shape(inputs[1])[2:4]
    return batch * channels * out_h * out_w * kernel_h * kernel_w


FVCORE_HANDLES = {"involution::aggregate": involution_flop_handle}


def flop_count_analysis(model, inputs):
    """``fvcore.nn.FlopCountAnalysis`` of ``model`` on ``inputs`` that also counts involutions."""
    from fvcore.nn import FlopCountAnalysis

    return FlopCountAnalysis(model, inputs).set_op_handle(**FVCORE_HANDLES)
