"""Triton kernels for involution: forward, grad w.r.t. input, grad w.r.t. kernel, and the fused forward that
generates the kernel from reduced features inside the aggregation.

Design: every output element is accumulated by one thread, in registers; nothing is reduced across threads.
- forward: a program owns (batch, BLOCK_C channels of one group, BLOCK_P output pixels) and a [BLOCK_P, BLOCK_C]
  fp32 accumulator. It loops over the K*K taps (a loop rather than unrolled, which keeps each
  (K, stride, dilation) variant small to compile); per tap it loads the group's weights for its
  pixels (BLOCK_P values, shared by the BLOCK_C channels) and the input under the tap ([BLOCK_P, BLOCK_C]),
  and multiply-adds. The K*K shifted reads of one input tile and its halo overlap, so after the first tap
  they are served by L1 (Triton has no addressable shared memory in which to stage the halo explicitly).
- grad_input: the same over input pixels: per tap, the output pixel that read this input pixel (if any) gives
  the weight and the grad_out values. Every gradient element is written by exactly one program: deterministic.
- grad_kernel: a program owns (batch, group, BLOCK_P output pixels) and a [KK_PAD, BLOCK_P] accumulator (taps
  padded to a power of two x pixels); it loops over the group's channels, adding grad_out[c] times the input
  under every tap, so the reduction over channels is a per-thread running sum. No atomics.
- fused forward: like forward, with the weights of each tap computed in the program as a small matrix product
  of the pixels' reduced features [BLOCK_P, R] with that tap's rows of the generating 1x1 conv [R, BLOCK_C]
  (tl.dot: tensor cores in fp16/bf16, exact IEEE fp32 in fp32), so the kernel map is never written.
Tensor strides are passed to the kernels, so channels_last and other non-contiguous layouts are read without
copies; with channels_last the BLOCK_C channels of a pixel are contiguous. Per-batch and per-channel offsets are
64-bit; offsets inside one (batch, channel) plane are int32, which the launchers check. Loads are in the
tensors' dtype, accumulation in fp32 (fp64 for fp64). Block sizes are autotuned per shape family on the GPU;
under Triton's interpreter (TRITON_INTERPRET=1, the CPU tests) and with INVOLUTION_AUTOTUNE=0 each kernel runs
its default configuration.
"""

import os

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
# Autotuning benchmarks every candidate per new shape family: off under Triton's interpreter (it would run
# every candidate) and with INVOLUTION_AUTOTUNE=0 (the tests, which try many shapes), where each kernel uses
# its default configuration.
_AUTOTUNE = os.environ.get("TRITON_INTERPRET") != "1" and os.environ.get("INVOLUTION_AUTOTUNE", "1") != "0"


def _configs(candidates, default):
    """triton.Configs for (BLOCK_P, num_warps) pairs: every candidate when autotuning, else only the default."""
    return [
        triton.Config({"BLOCK_P": block}, num_warps=warps) for block, warps in (candidates if _AUTOTUNE else [default])
    ]


# Pixel-major tiles [BLOCK_P, BLOCK_C<=32]: up to 64 fp32 accumulators per thread.
PIXEL_TILE_CANDIDATES = [(64, 2), (128, 4), (256, 4), (256, 8), (512, 8)]
# Tap-major tiles [KK_PAD, BLOCK_P] (KK_PAD = 64 for K = 7).
TAP_TILE_CANDIDATES = [(32, 4), (64, 4), (64, 8), (128, 8)]
# Fused forward: a [BLOCK_P, BLOCK_C] accumulator, a [BLOCK_P, R] feature tile and a tl.dot per tap.
FUSED_TILE_CANDIDATES = [(32, 4), (64, 4), (128, 4), (128, 8)]
_PIXEL_TILES = _configs(PIXEL_TILE_CANDIDATES, default=(256, 4))
_TAP_TILES = _configs(TAP_TILE_CANDIDATES, default=(128, 8))
_FUSED_TILES = _configs(FUSED_TILE_CANDIDATES, default=(128, 8))
# Tuned per shape family: channels per group, pixels, layout (an input channel stride of 1 is channels_last).
# Sizes are not specialised on (Triton would compile a variant per size divisible by 16, or equal to 1);
# strides are, so that contiguous and aligned accesses are known at compile time.
_TUNING_KEY = ["channels_per_group", "num_pixels", "channel_stride", "K", "STRIDE"]


@triton.jit
def _channel_block(pid_channels, channels_per_group, blocks_per_group, BLOCK_C: tl.constexpr):
    """Group and channels (int64, masked by c_mask) of a program's channel block; blocks never cross groups."""
    g = pid_channels // blocks_per_group
    local = (pid_channels % blocks_per_group) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = local < channels_per_group
    channel = g.to(tl.int64) * channels_per_group + local
    return g, channel, c_mask


@triton.autotune(configs=_PIXEL_TILES, key=_TUNING_KEY)
@triton.jit(
    do_not_specialize=[
        "channels_per_group",
        "blocks_per_group",
        "channel_blocks",
        "height",
        "width",
        "out_width",
        "num_pixels",
        "padding",
    ]
)
def _forward_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    channels_per_group,
    blocks_per_group,
    channel_blocks,
    height,
    width,
    out_width,
    num_pixels,
    padding,
    channel_stride,
    sxb,
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
    STRIDE: tl.constexpr,
    DILATION: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    pixel_blocks = tl.cdiv(num_pixels, BLOCK_P)
    pid_pixels = pid % pixel_blocks
    pid_channels = (pid // pixel_blocks) % channel_blocks
    b = (pid // (pixel_blocks * channel_blocks)).to(tl.int64)
    g, channel, c_mask = _channel_block(pid_channels, channels_per_group, blocks_per_group, BLOCK_C)

    pix = pid_pixels * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = pix < num_pixels
    i = pix // out_width
    j = pix % out_width

    x_channels = x_ptr + b * sxb + channel * channel_stride  # [BLOCK_C] pointers
    w_pixels = w_ptr + b * swb + g.to(tl.int64) * swg + i * swh + j * sww  # [BLOCK_P] pointers
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    for u in range(K):
        h = i * STRIDE + u * DILATION - padding
        row_mask = p_mask & (h >= 0) & (h < height)
        for v in range(K):
            w = j * STRIDE + v * DILATION - padding
            in_mask = row_mask & (w >= 0) & (w < width)
            weight = tl.load(w_pixels + u * swu + v * swv, mask=p_mask, other=0.0).to(ACC)
            x = tl.load(
                x_channels[None, :] + (h * sxh + w * sxw)[:, None],
                mask=in_mask[:, None] & c_mask[None, :],
                other=0.0,
            ).to(ACC)
            acc += weight[:, None] * x

    out = out_ptr + b * sob + channel[None, :] * soc + (i * soh + j * sow)[:, None]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=p_mask[:, None] & c_mask[None, :])


@triton.autotune(configs=_PIXEL_TILES, key=_TUNING_KEY)
@triton.jit(
    do_not_specialize=[
        "channels_per_group",
        "blocks_per_group",
        "channel_blocks",
        "width",
        "out_height",
        "out_width",
        "num_pixels",
        "padding",
    ]
)
def _grad_input_kernel(
    go_ptr,
    w_ptr,
    gi_ptr,
    channels_per_group,
    blocks_per_group,
    channel_blocks,
    width,
    out_height,
    out_width,
    num_pixels,
    padding,
    channel_stride,
    sgb,
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
    STRIDE: tl.constexpr,
    DILATION: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    pixel_blocks = tl.cdiv(num_pixels, BLOCK_P)
    pid_pixels = pid % pixel_blocks
    pid_channels = (pid // pixel_blocks) % channel_blocks
    b = (pid // (pixel_blocks * channel_blocks)).to(tl.int64)
    g, channel, c_mask = _channel_block(pid_channels, channels_per_group, blocks_per_group, BLOCK_C)

    pix = pid_pixels * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = pix < num_pixels
    y = pix // width
    x = pix % width

    go_channels = go_ptr + b * sgb + channel * channel_stride
    w_group = w_ptr + b * swb + g.to(tl.int64) * swg
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
    # Output pixel (i, j) whose tap (u, v) read input pixel (y, x): i*STRIDE + u*DILATION - padding == y.
    # The non-negativity test comes first in the mask, so truncating division of negatives is harmless.
    for u in range(K):
        row = y + padding - u * DILATION
        i = row // STRIDE
        row_mask = p_mask & (row >= 0) & (row % STRIDE == 0) & (i < out_height)
        for v in range(K):
            col = x + padding - v * DILATION
            j = col // STRIDE
            read_mask = row_mask & (col >= 0) & (col % STRIDE == 0) & (j < out_width)
            weight = tl.load(w_group + u * swu + v * swv + i * swh + j * sww, mask=read_mask, other=0.0).to(ACC)
            go = tl.load(
                go_channels[None, :] + (i * sgh + j * sgw)[:, None],
                mask=read_mask[:, None] & c_mask[None, :],
                other=0.0,
            ).to(ACC)
            acc += weight[:, None] * go

    gi = gi_ptr + b * sib + channel[None, :] * sic + (y * sih + x * siw)[:, None]
    tl.store(gi, acc.to(gi_ptr.dtype.element_ty), mask=p_mask[:, None] & c_mask[None, :])


@triton.autotune(configs=_TAP_TILES, key=_TUNING_KEY)
@triton.jit(do_not_specialize=["channels_per_group", "groups", "height", "width", "out_width", "num_pixels", "padding"])
def _grad_kernel_kernel(
    go_ptr,
    x_ptr,
    gw_ptr,
    channels_per_group,
    groups,
    height,
    width,
    out_width,
    num_pixels,
    padding,
    channel_stride,
    sgb,
    sgc,
    sgh,
    sgw,
    sxb,
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
    ACC: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    pixel_blocks = tl.cdiv(num_pixels, BLOCK_P)
    pid_pixels = pid % pixel_blocks
    g = ((pid // pixel_blocks) % groups).to(tl.int64)
    b = (pid // (pixel_blocks * groups)).to(tl.int64)

    pix = pid_pixels * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = pix < num_pixels
    i = pix // out_width
    j = pix % out_width
    tap = tl.arange(0, KK_PAD)
    u = tap // K
    v = tap % K
    tile_mask = (tap < K * K)[:, None] & p_mask[None, :]
    h = i[None, :] * STRIDE + u[:, None] * DILATION - padding
    w = j[None, :] * STRIDE + v[:, None] * DILATION - padding
    in_mask = tile_mask & (h >= 0) & (h < height) & (w >= 0) & (w < width)
    x_offsets = h * sxh + w * sxw

    first_channel = g * channels_per_group
    x_channel = x_ptr + b * sxb + first_channel * channel_stride
    go_channel = go_ptr + b * sgb + first_channel * sgc
    go_offsets = i * sgh + j * sgw
    acc = tl.zeros((KK_PAD, BLOCK_P), dtype=ACC)
    for _ in range(channels_per_group):
        go = tl.load(go_channel + go_offsets, mask=p_mask, other=0.0).to(ACC)
        x = tl.load(x_channel + x_offsets, mask=in_mask, other=0.0).to(ACC)
        acc += go[None, :] * x
        x_channel += channel_stride
        go_channel += sgc

    gw = gw_ptr + b * swb + g * swg + u[:, None] * swu + v[:, None] * swv + (i * swh + j * sww)[None, :]
    tl.store(gw, acc.to(gw_ptr.dtype.element_ty), mask=tile_mask)


@triton.autotune(configs=_FUSED_TILES, key=_TUNING_KEY + ["reduced"])
@triton.jit(
    do_not_specialize=[
        "channels",
        "channels_per_group",
        "reduced",
        "channel_blocks",
        "height",
        "width",
        "out_width",
        "num_pixels",
        "padding",
    ]
)
def _fused_forward_kernel(
    x_ptr,
    f_ptr,
    gen_ptr,
    bias_ptr,
    out_ptr,
    channels,
    channels_per_group,
    reduced,
    channel_blocks,
    height,
    width,
    out_width,
    num_pixels,
    padding,
    channel_stride,
    sxb,
    sxh,
    sxw,
    sfb,
    sfc,
    sfh,
    sfw,
    sgo,
    sgr,
    sob,
    soc,
    soh,
    sow,
    K: tl.constexpr,
    STRIDE: tl.constexpr,
    DILATION: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_R: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """out[b, c, p] = sum over taps t of (features[b, :, p] . gen[g(c)*K*K + t, :] + bias[...]) * x[b, c, p @ t].
    Channel blocks may span groups: each channel gathers its own group's generator rows."""
    pid = tl.program_id(0)
    pixel_blocks = tl.cdiv(num_pixels, BLOCK_P)
    pid_pixels = pid % pixel_blocks
    pid_channels = (pid // pixel_blocks) % channel_blocks
    b = (pid // (pixel_blocks * channel_blocks)).to(tl.int64)

    channel = pid_channels.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = channel < channels
    first_row = (channel // channels_per_group) * (K * K)  # the channel's group's first generator row
    r = tl.arange(0, BLOCK_R)
    r_mask = r < reduced

    pix = pid_pixels * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = pix < num_pixels
    i = pix // out_width
    j = pix % out_width

    features = tl.load(
        f_ptr + b * sfb + r[None, :].to(tl.int64) * sfc + (i * sfh + j * sfw)[:, None],
        mask=p_mask[:, None] & r_mask[None, :],
        other=0.0,
    )  # [BLOCK_P, BLOCK_R], in the tensors' dtype for tl.dot
    gen_columns = gen_ptr + r[:, None] * sgr  # [BLOCK_R, 1] pointers
    gen_mask = r_mask[:, None] & c_mask[None, :]
    x_channels = x_ptr + b * sxb + channel * channel_stride
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for u in range(K):
        h = i * STRIDE + u * DILATION - padding
        row_mask = p_mask & (h >= 0) & (h < height)
        for v in range(K):
            row = first_row + (u * K + v)
            generator = tl.load(gen_columns + (row * sgo)[None, :], mask=gen_mask, other=0.0)  # [BLOCK_R, BLOCK_C]
            bias = tl.load(bias_ptr + row, mask=c_mask, other=0.0).to(tl.float32)
            weight = tl.dot(features, generator, input_precision=DOT_PRECISION) + bias[None, :]
            w = j * STRIDE + v * DILATION - padding
            in_mask = row_mask & (w >= 0) & (w < width)
            x = tl.load(
                x_channels[None, :] + (h * sxh + w * sxw)[:, None],
                mask=in_mask[:, None] & c_mask[None, :],
                other=0.0,
            ).to(tl.float32)
            acc += weight * x

    out = out_ptr + b * sob + channel[None, :] * soc + (i * soh + j * sow)[:, None]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=p_mask[:, None] & c_mask[None, :])


def _accumulator(dtype: torch.dtype):
    if dtype not in _ACCUMULATOR:
        raise ValueError(f"involution Triton kernels support float16, bfloat16, float32 and float64, got {dtype}")
    return _ACCUMULATOR[dtype]


def _check_plane_offsets(tensor: torch.Tensor, name: str, first_dim: int = 2) -> None:
    """Offsets from dimension first_dim on are int32 in the kernels: check the largest one fits."""
    span = sum((size - 1) * stride for size, stride in zip(tensor.shape[first_dim:], tensor.stride()[first_dim:]))
    if span > _INT32_MAX:
        raise ValueError(
            f"{name} spans {span} elements within one batch/channel slice (strides {tuple(tensor.stride())}), "
            f"more than the int32 offsets of the involution Triton kernels allow"
        )


def _grid(batch: int, channel_blocks: int, num_pixels: int, smallest_block: int):
    """Flat grid, pixel blocks fastest (neighbouring programs share input halos in L2)."""
    if batch * channel_blocks * triton.cdiv(num_pixels, smallest_block) > _INT32_MAX:
        raise ValueError("involution Triton kernels: the grid exceeds the int32 limit of programs")
    return lambda meta: (batch * channel_blocks * triton.cdiv(num_pixels, meta["BLOCK_P"]),)


def _smallest_block(configs) -> int:
    return min(config.kwargs["BLOCK_P"] for config in configs)


def _channel_tiling(channels_per_group: int, groups: int) -> tuple[int, int, int]:
    """BLOCK_C (a power of two, at most 32), channel blocks per group and in all."""
    block_c = min(32, triton.next_power_of_2(channels_per_group))
    blocks_per_group = triton.cdiv(channels_per_group, block_c)
    return block_c, blocks_per_group, groups * blocks_per_group


def forward(input: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """Involution forward: input (B, C, H, W), kernel (B, G, K, K, Ho, Wo) -> output (B, C, Ho, Wo)."""
    batch, channels, height, width = input.shape
    _, groups, k, _, out_h, out_w = kernel.shape
    out = torch.empty((batch, channels, out_h, out_w), dtype=input.dtype, device=input.device)
    acc = _accumulator(input.dtype)
    for tensor, name in ((input, "input"), (kernel, "kernel"), (out, "output")):
        _check_plane_offsets(tensor, name)
    if not out.numel():
        return out
    block_c, blocks_per_group, channel_blocks = _channel_tiling(channels // groups, groups)
    grid = _grid(batch, channel_blocks, out_h * out_w, _smallest_block(_PIXEL_TILES))
    _forward_kernel[grid](
        input, kernel, out, channels // groups, blocks_per_group, channel_blocks, height, width, out_w,
        out_h * out_w, padding, input.stride(1), input.stride(0), *input.stride()[2:], *kernel.stride(),
        *out.stride(), K=k, STRIDE=stride, DILATION=dilation, BLOCK_C=block_c, ACC=acc,
    )  # fmt: skip
    return out


def grad_input(
    grad_out: torch.Tensor, kernel: torch.Tensor, input_size: tuple[int, int], stride: int, padding: int, dilation: int
) -> torch.Tensor:
    """Gradient w.r.t. the input, (B, C, H, W) with (H, W) = input_size, gathered per input pixel."""
    batch, channels, out_h, out_w = grad_out.shape
    _, groups, k = kernel.shape[:3]
    height, width = input_size
    grad = torch.empty((batch, channels, height, width), dtype=grad_out.dtype, device=grad_out.device)
    acc = _accumulator(grad_out.dtype)
    for tensor, name in ((grad_out, "grad_out"), (kernel, "kernel"), (grad, "grad_input")):
        _check_plane_offsets(tensor, name)
    if not grad.numel():
        return grad
    block_c, blocks_per_group, channel_blocks = _channel_tiling(channels // groups, groups)
    grid = _grid(batch, channel_blocks, height * width, _smallest_block(_PIXEL_TILES))
    _grad_input_kernel[grid](
        grad_out, kernel, grad, channels // groups, blocks_per_group, channel_blocks, width, out_h, out_w,
        height * width, padding, grad_out.stride(1), grad_out.stride(0), *grad_out.stride()[2:], *kernel.stride(),
        *grad.stride(), K=k, STRIDE=stride, DILATION=dilation, BLOCK_C=block_c, ACC=acc,
    )  # fmt: skip
    return grad


def grad_kernel(
    grad_out: torch.Tensor, input: torch.Tensor, kernel_size: int, groups: int, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    """Gradient w.r.t. the kernel, (B, G, K, K, Ho, Wo), reduced over each group's channels in one program."""
    batch, channels, height, width = input.shape
    out_h, out_w = grad_out.shape[2:]
    grad = torch.empty((batch, groups, kernel_size, kernel_size, out_h, out_w), dtype=input.dtype, device=input.device)
    acc = _accumulator(input.dtype)
    for tensor, name in ((grad_out, "grad_out"), (input, "input"), (grad, "grad_kernel")):
        _check_plane_offsets(tensor, name)
    if not grad.numel():
        return grad
    grid = _grid(batch, groups, out_h * out_w, _smallest_block(_TAP_TILES))
    _grad_kernel_kernel[grid](
        grad_out, input, grad, channels // groups, groups, height, width, out_w, out_h * out_w, padding,
        input.stride(1), *grad_out.stride(), input.stride(0), *input.stride()[2:], *grad.stride(),
        K=kernel_size, KK_PAD=triton.next_power_of_2(kernel_size**2), STRIDE=stride, DILATION=dilation, ACC=acc,
    )  # fmt: skip
    return grad


# tl.dot operands: fp16/bf16 on tensor cores; fp32 in exact IEEE arithmetic (not TF32).
_DOT_PRECISION = {torch.float16: "tf32", torch.bfloat16: "tf32", torch.float32: "ieee"}


def fused_forward(
    input: torch.Tensor,
    features: torch.Tensor,
    generator: torch.Tensor,
    bias: torch.Tensor,
    kernel_size: int,
    groups: int,
    stride: int,
    padding: int,
    dilation: int,
) -> torch.Tensor:
    """Involution of input (B, C, H, W) with the kernel generator @ features + bias, computed per tile.

    features (B, R, Ho, Wo); generator (G*K*K, R) with rows ordered (group, u, v) as a 1x1 conv's output
    channels; bias (G*K*K,). Returns (B, C, Ho, Wo) without writing the (B, G, K, K, Ho, Wo) kernel map."""
    batch, channels, height, width = input.shape
    reduced, out_h, out_w = features.shape[1:]
    if input.dtype not in _DOT_PRECISION:
        raise ValueError(f"the fused involution kernel supports float16, bfloat16 and float32, got {input.dtype}")
    out = torch.empty((batch, channels, out_h, out_w), dtype=input.dtype, device=input.device)
    for tensor, name in ((input, "input"), (features, "features"), (out, "output")):
        _check_plane_offsets(tensor, name)
    if not out.numel():
        return out
    block_c = 32 if channels >= 32 else 16  # tl.dot needs every dimension >= 16
    channel_blocks = triton.cdiv(channels, block_c)
    grid = _grid(batch, channel_blocks, out_h * out_w, _smallest_block(_FUSED_TILES))
    _fused_forward_kernel[grid](
        input, features, generator, bias, out, channels, channels // groups, reduced, channel_blocks, height,
        width, out_w, out_h * out_w, padding, input.stride(1), input.stride(0), *input.stride()[2:],
        *features.stride(), *generator.stride(), *out.stride(), K=kernel_size, STRIDE=stride, DILATION=dilation,
        BLOCK_C=block_c, BLOCK_R=max(16, triton.next_power_of_2(reduced)),
        DOT_PRECISION=_DOT_PRECISION[input.dtype],
    )  # fmt: skip
    return out
