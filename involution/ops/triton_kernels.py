"""Triton kernels for involution: forward, grad w.r.t. input and grad w.r.t. kernel.

Design. Every program owns one (batch, group, block of BLOCK_P pixels) and keeps a [KK_PAD, BLOCK_P] tile
(K*K taps padded to a power of two and masked, times pixels) in registers:
- forward: the group's kernel weights are loaded once, then for each of the C//G channels of the group the
  input values under the K*K taps are gathered, multiplied by the weights and summed over the tap axis.
- grad_kernel: the same gather, accumulating grad_out[c] * input tile over the group's channels, so the
  reduction over channels stays inside one program (no atomics) and grad_out is read once.
- grad_input: a gather over blocks of *input* pixels: for each tap, the output pixel that read this input
  pixel is found (divisible by the stride, in range); kernel weights and grad_out are gathered there. Every
  gradient element is written by exactly one program, so the result is deterministic.
Channels share the kernel tile, which is why the loop over channels sits inside the program instead of
in the grid. Tensor strides are passed to the kernels, so channels_last and other non-contiguous layouts
are read without copies. Per-batch/channel/group base offsets are 64-bit (pointer arithmetic); offsets
inside one (batch, channel) plane are int32, which the launchers check. Accumulation is fp32 (fp64 for
fp64 tensors); tl.dot is not used (the contraction is over K*K only, too small for tensor cores).
"""

import torch
import triton
import triton.language as tl

_INT32_MAX = 2**31 - 1
_ACCUMULATOR = {
    torch.float16: tl.float32,
    torch.bfloat16: tl.float32,
    torch.float32: tl.float32,
    torch.float64: tl.float64,
}
_NUM_WARPS = 4
# Elements of one [KK_PAD, BLOCK_P] register tile: 4096 is 32 fp32 values per thread with 4 warps.
_TILE_ELEMENTS = 4096


@triton.jit
def _output_tile(
    pid,
    num_blocks,
    groups,
    out_width,
    num_out_pixels,
    height,
    width,
    padding,
    sxh,
    sxw,
    K: tl.constexpr,
    KK_PAD: tl.constexpr,
    STRIDE: tl.constexpr,
    DILATION: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """A program's (batch, group, block of output pixels) and its [KK_PAD, BLOCK_P] tile of taps x pixels:
    the input offsets each tap reads (x_offsets, valid where in_mask; the rest is the zero padding)."""
    block = pid % num_blocks
    g = (pid // num_blocks) % groups
    b = pid // (num_blocks * groups)
    pix = block * BLOCK_P + tl.arange(0, BLOCK_P)
    pix_mask = pix < num_out_pixels
    i = pix // out_width
    j = pix % out_width
    tap = tl.arange(0, KK_PAD)
    u = tap // K
    v = tap % K
    tile_mask = (tap < K * K)[:, None] & pix_mask[None, :]
    h = i[None, :] * STRIDE + u[:, None] * DILATION - padding
    w = j[None, :] * STRIDE + v[:, None] * DILATION - padding
    in_mask = tile_mask & (h >= 0) & (h < height) & (w >= 0) & (w < width)
    return b, g, i, j, u, v, pix_mask, tile_mask, in_mask, h * sxh + w * sxw


@triton.jit
def _forward_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    channels_per_group,
    groups,
    height,
    width,
    out_width,
    num_out_pixels,
    padding,
    num_blocks,
    sxb,
    sxc,
    sxh,
    sxw,
    swb,
    swg,
    swu,
    swv,
    swh,
    sww,
    sob,
    soc,
    soh,
    sow,
    K: tl.constexpr,
    KK_PAD: tl.constexpr,
    STRIDE: tl.constexpr,
    DILATION: tl.constexpr,
    BLOCK_P: tl.constexpr,
    ACC: tl.constexpr,
):
    b, g, i, j, u, v, pix_mask, tile_mask, in_mask, x_offsets = _output_tile(
        tl.program_id(0),
        num_blocks,
        groups,
        out_width,
        num_out_pixels,
        height,
        width,
        padding,
        sxh,
        sxw,
        K,
        KK_PAD,
        STRIDE,
        DILATION,
        BLOCK_P,
    )

    w_group = w_ptr + b.to(tl.int64) * swb + g.to(tl.int64) * swg
    w_offsets = u[:, None] * swu + v[:, None] * swv + i[None, :] * swh + j[None, :] * sww
    weights = tl.load(w_group + w_offsets, mask=tile_mask, other=0.0).to(ACC)

    first_channel = g.to(tl.int64) * channels_per_group
    x_channel = x_ptr + b.to(tl.int64) * sxb + first_channel * sxc
    out_channel = out_ptr + b.to(tl.int64) * sob + first_channel * soc
    out_offsets = i * soh + j * sow
    for _ in range(channels_per_group):
        x = tl.load(x_channel + x_offsets, mask=in_mask, other=0.0).to(ACC)
        out = tl.sum(weights * x, axis=0)
        tl.store(out_channel + out_offsets, out.to(out_ptr.dtype.element_ty), mask=pix_mask)
        x_channel += sxc
        out_channel += soc


@triton.jit
def _grad_kernel_kernel(
    go_ptr,
    x_ptr,
    gw_ptr,
    channels_per_group,
    groups,
    height,
    width,
    out_width,
    num_out_pixels,
    padding,
    num_blocks,
    sgb,
    sgc,
    sgh,
    sgw,
    sxb,
    sxc,
    sxh,
    sxw,
    swb,
    swg,
    swu,
    swv,
    swh,
    sww,
    K: tl.constexpr,
    KK_PAD: tl.constexpr,
    STRIDE: tl.constexpr,
    DILATION: tl.constexpr,
    BLOCK_P: tl.constexpr,
    ACC: tl.constexpr,
):
    b, g, i, j, u, v, pix_mask, tile_mask, in_mask, x_offsets = _output_tile(
        tl.program_id(0),
        num_blocks,
        groups,
        out_width,
        num_out_pixels,
        height,
        width,
        padding,
        sxh,
        sxw,
        K,
        KK_PAD,
        STRIDE,
        DILATION,
        BLOCK_P,
    )

    first_channel = g.to(tl.int64) * channels_per_group
    x_channel = x_ptr + b.to(tl.int64) * sxb + first_channel * sxc
    go_channel = go_ptr + b.to(tl.int64) * sgb + first_channel * sgc
    go_offsets = i * sgh + j * sgw
    acc = tl.zeros((KK_PAD, BLOCK_P), dtype=ACC)
    for _ in range(channels_per_group):
        go = tl.load(go_channel + go_offsets, mask=pix_mask, other=0.0).to(ACC)
        x = tl.load(x_channel + x_offsets, mask=in_mask, other=0.0).to(ACC)
        acc += go[None, :] * x
        x_channel += sxc
        go_channel += sgc

    gw_group = gw_ptr + b.to(tl.int64) * swb + g.to(tl.int64) * swg
    gw_offsets = u[:, None] * swu + v[:, None] * swv + i[None, :] * swh + j[None, :] * sww
    tl.store(gw_group + gw_offsets, acc.to(gw_ptr.dtype.element_ty), mask=tile_mask)


@triton.jit
def _grad_input_kernel(
    go_ptr,
    w_ptr,
    gi_ptr,
    channels_per_group,
    groups,
    width,
    out_height,
    out_width,
    num_in_pixels,
    padding,
    num_blocks,
    sgb,
    sgc,
    sgh,
    sgw,
    swb,
    swg,
    swu,
    swv,
    swh,
    sww,
    sib,
    sic,
    sih,
    siw,
    K: tl.constexpr,
    KK_PAD: tl.constexpr,
    STRIDE: tl.constexpr,
    DILATION: tl.constexpr,
    BLOCK_P: tl.constexpr,
    ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    block = pid % num_blocks
    g = (pid // num_blocks) % groups
    b = pid // (num_blocks * groups)

    pix = block * BLOCK_P + tl.arange(0, BLOCK_P)
    pix_mask = pix < num_in_pixels
    y = pix // width
    x = pix % width
    tap = tl.arange(0, KK_PAD)
    u = tap // K
    v = tap % K
    tile_mask = (tap < K * K)[:, None] & pix_mask[None, :]

    # Output pixel (i, j) whose tap (u, v) read input pixel (y, x): i*STRIDE + u*DILATION - padding == y.
    # The non-negativity test comes first in the mask, so truncating division of negatives is harmless.
    row = y[None, :] + padding - u[:, None] * DILATION
    col = x[None, :] + padding - v[:, None] * DILATION
    i = row // STRIDE
    j = col // STRIDE
    read_mask = (
        tile_mask
        & (row >= 0)
        & (col >= 0)
        & (row % STRIDE == 0)
        & (col % STRIDE == 0)
        & (i < out_height)
        & (j < out_width)
    )

    w_group = w_ptr + b.to(tl.int64) * swb + g.to(tl.int64) * swg
    w_offsets = u[:, None] * swu + v[:, None] * swv + i * swh + j * sww
    weights = tl.load(w_group + w_offsets, mask=read_mask, other=0.0).to(ACC)

    first_channel = g.to(tl.int64) * channels_per_group
    go_channel = go_ptr + b.to(tl.int64) * sgb + first_channel * sgc
    gi_channel = gi_ptr + b.to(tl.int64) * sib + first_channel * sic
    go_offsets = i * sgh + j * sgw
    gi_offsets = y * sih + x * siw
    for _ in range(channels_per_group):
        go = tl.load(go_channel + go_offsets, mask=read_mask, other=0.0).to(ACC)
        gi = tl.sum(weights * go, axis=0)
        tl.store(gi_channel + gi_offsets, gi.to(gi_ptr.dtype.element_ty), mask=pix_mask)
        go_channel += sgc
        gi_channel += sic


def _accumulator(dtype: torch.dtype):
    if dtype not in _ACCUMULATOR:
        raise ValueError(f"involution Triton kernels support float16, bfloat16, float32 and float64, got {dtype}")
    return _ACCUMULATOR[dtype]


def _check_plane_offsets(tensor: torch.Tensor, name: str, first_dim: int) -> None:
    """Offsets from dimension first_dim on are int32 in the kernels: check the largest one fits."""
    span = sum((size - 1) * stride for size, stride in zip(tensor.shape[first_dim:], tensor.stride()[first_dim:]))
    if span > _INT32_MAX:
        raise ValueError(
            f"{name} spans {span} elements within one batch/channel slice (strides {tuple(tensor.stride())}), "
            f"more than the int32 offsets of the involution Triton kernels allow"
        )


def _launch_config(num_pixels: int, k: int, batch: int, groups: int) -> tuple[int, int, int, tuple[int]]:
    """Tile sizes and the flat grid: one program per (batch, group, block of BLOCK_P pixels)."""
    kk_pad = triton.next_power_of_2(k * k)
    block_p = min(128, max(16, _TILE_ELEMENTS // kk_pad), max(16, triton.next_power_of_2(num_pixels)))
    num_blocks = triton.cdiv(num_pixels, block_p)
    num_programs = batch * groups * num_blocks
    if num_programs > _INT32_MAX:
        raise ValueError(f"involution Triton kernels: grid of {num_programs} programs exceeds the int32 limit")
    return kk_pad, block_p, num_blocks, (num_programs,)


def _launch(triton_kernel, tensors, names, sizes, num_pixels, k, groups, stride, padding, dilation) -> None:
    """Check the three tensors' int32 offsets, then run `triton_kernel` with one program per (batch, group, block
    of pixels). Its arguments: the tensors, `sizes`, num_pixels, padding, num_blocks, the tensors' strides."""
    for tensor, name in zip(tensors, names):
        _check_plane_offsets(tensor, name, 2)
    kk_pad, block_p, num_blocks, grid = _launch_config(num_pixels, k, tensors[0].shape[0], groups)
    strides = [stride_ for tensor in tensors for stride_ in tensor.stride()]
    triton_kernel[grid](
        *tensors, *sizes, num_pixels, padding, num_blocks, *strides,
        K=k, KK_PAD=kk_pad, STRIDE=stride, DILATION=dilation, BLOCK_P=block_p, ACC=_accumulator(tensors[0].dtype),
        num_warps=_NUM_WARPS,
    )  # fmt: skip


def forward(input: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """Involution forward: input (B, C, H, W), kernel (B, G, K, K, Ho, Wo) -> output (B, C, Ho, Wo)."""
    batch, channels, height, width = input.shape
    _, groups, k, _, out_h, out_w = kernel.shape
    out = torch.empty((batch, channels, out_h, out_w), dtype=input.dtype, device=input.device)
    if out.numel():
        _launch(_forward_kernel, (input, kernel, out), ("input", "kernel", "output"),
                (channels // groups, groups, height, width, out_w), out_h * out_w, k, groups, stride, padding,
                dilation)  # fmt: skip
    return out


def grad_input(
    grad_out: torch.Tensor, kernel: torch.Tensor, input_size: tuple[int, int], stride: int, padding: int, dilation: int
) -> torch.Tensor:
    """Gradient w.r.t. the input, (B, C, H, W) with (H, W) = input_size, gathered per input pixel."""
    batch, channels, out_h, out_w = grad_out.shape
    _, groups, k = kernel.shape[:3]
    height, width = input_size
    grad = torch.empty((batch, channels, height, width), dtype=grad_out.dtype, device=grad_out.device)
    if grad.numel():
        _launch(_grad_input_kernel, (grad_out, kernel, grad), ("grad_out", "kernel", "grad_input"),
                (channels // groups, groups, width, out_h, out_w), height * width, k, groups, stride, padding,
                dilation)  # fmt: skip
    return grad


def grad_kernel(
    grad_out: torch.Tensor, input: torch.Tensor, kernel_size: int, groups: int, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    """Gradient w.r.t. the kernel, (B, G, K, K, Ho, Wo), reduced over each group's channels in one program."""
    batch, channels, height, width = input.shape
    out_h, out_w = grad_out.shape[2:]
    grad = torch.empty((batch, groups, kernel_size, kernel_size, out_h, out_w), dtype=input.dtype, device=input.device)
    if grad.numel():
        _launch(_grad_kernel_kernel, (grad_out, input, grad), ("grad_out", "input", "grad_kernel"),
                (channels // groups, groups, height, width, out_w), out_h * out_w, kernel_size, groups, stride,
                padding, dilation)  # fmt: skip
    return grad
