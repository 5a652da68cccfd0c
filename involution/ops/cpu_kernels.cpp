// Involution on the CPU in one pass over the kernel taps (the "cpp" backend; built by cpp_ops.py).
//
// Channels-last layouts: input (B, H, W, C), kernel map (B, Ho, Wo, G, K, K), output and grad_out (B, Ho, Wo, C),
// float or double, contiguous. The channels of a group are contiguous and share one weight per tap, so the
// innermost loops run over a group's channels (vectorised; for 1, 2, 4, 8, 16 or 32 channels per group the count
// is a compile-time constant and the accumulators stay in registers). All three kernels gather into the pixels they
// write, so threads (one image row each) never write the same element:
// - forward: several output pixels at once (independent accumulators, so the multiply-adds of one pixel do not
//   wait for each other; where their windows overlap, each source pixel is loaded once for all of them);
// - the input gradient: the forward's windows read backwards, likewise several input pixels at once;
// - the kernel gradient (also the local correlation of a query with a key), in float: multiply-adds with the
//   vector's lanes over 16 images (large batches with narrow rows or groups of 8 channels) or over 16 neighbouring
//   pixels of a row (stride 1, K = 5 or 7; two rows per pass at dilation 1), on channel-major copies of the
//   operands (grad_kernel_by_lanes says where); otherwise a dot product over a group's channels per tap, reduced
//   for 16 (or 8) taps together by a transposing tree of vector additions.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

constexpr int64_t kBlock = 4;  // pixels computed together by forward and grad_input
#ifdef __AVX512F__
constexpr int64_t kRegisterBytes = 64;  // of a vector register
#else
constexpr int64_t kRegisterBytes = 32;
#endif

// Lanes<T, L>: L values of T as one vector (GCC and Clang vector extensions; the compiler maps it to this CPU's
// registers). Without them, the generic loops below do the same work.
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define INVOLUTION_VECTORS 1
#define INLINE inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")
#else
#define INLINE inline
#define UNROLL
#endif

#ifdef INVOLUTION_VECTORS
template <typename T, int64_t L>
using Lanes __attribute__((vector_size(L * sizeof(T)))) = T;

template <typename V, typename T>
V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
#endif

struct Geometry {
  int64_t batch, channels, groups, k, height, width, out_h, out_w, stride, padding, dilation;
  int64_t group_channels() const { return channels / groups; }
  int64_t taps() const { return k * k; }
  // The taps t in [first, last) of an output pixel whose input position start + t * dilation lies in [0, size)
  // (start = output position * stride - padding).
  void taps_inside(int64_t start, int64_t size, int64_t& first, int64_t& last) const {
    first = start >= 0 ? 0 : (-start + dilation - 1) / dilation;
    last = start >= size ? 0 : std::min(k, (size - 1 - start) / dilation + 1);
  }
  // The taps t of input position `position` that some output pixel o reads (o * stride + t * dilation - padding
  // = position, 0 <= o < out_size), with those o: appended to taps and outputs; returns their count.
  int64_t taps_reading(int64_t position, int64_t out_size, int64_t* taps, int64_t* outputs) const {
    int64_t count = 0;
    for (int64_t t = 0; t < k; ++t) {
      const int64_t reach = position + padding - t * dilation;  // = o * stride
      if (reach < 0 || reach % stride) continue;
      const int64_t o = reach / stride;
      if (o >= out_size) continue;
      taps[count] = t;
      outputs[count++] = o;
    }
    return count;
  }
};

// Brings `bytes` from p into cache by reading a byte of each 64-byte line, in order: real loads, which the
// hardware prefetchers then follow (prefetch hints, __builtin_prefetch, left most of the latency in place).
void load_lines(const void* p, int64_t bytes) {
  const char* bytes_at = static_cast<const char*>(p);
  char folded = 0;
  for (int64_t i = 0; i < bytes; i += 64) folded ^= bytes_at[i];
  volatile char sink = folded;  // keeps the loads
  (void)sink;
}

// Calls body(std::integral_constant<int64_t, N>) for the common group widths, body(0-constant) otherwise.
template <typename Body>
void with_group_width(int64_t width, Body body) {
  switch (width) {
    case 1: return body(std::integral_constant<int64_t, 1>());
    case 2: return body(std::integral_constant<int64_t, 2>());
    case 4: return body(std::integral_constant<int64_t, 4>());
    case 8: return body(std::integral_constant<int64_t, 8>());
    case 16: return body(std::integral_constant<int64_t, 16>());
    case 32: return body(std::integral_constant<int64_t, 32>());
    default: return body(std::integral_constant<int64_t, 0>());
  }
}

// What forward and grad_input gather, for the pixels of a row they write in blocks of 1 or kBlock pixels. The
// taps of a pixel are a grid: rows r < row_count (the row's, TapRows) by columns s < column_count (the block's,
// the same in every row), each an arithmetic progression (so are the valid taps of grad_input, solutions of a
// linear congruence). Tap (r, s) of a block's pixel q weighs by weights[weight_rows[r] + weight_first +
// s * weight_step + q * weight_pixel_step] the source pixel at sources + source_rows[r] + source_first +
// s * source_step + q * source_pixel_step (element offsets); the result goes to out + out_offset + q * spacing.
struct Block {
  int64_t count, column_count, out_offset, spacing;
  int64_t weight_first, weight_step, weight_pixel_step, source_first, source_step, source_pixel_step;
};

struct TapRows {
  explicit TapRows(int64_t k) : weight_rows(k), source_rows(k) {}
  int64_t row_count = 0;
  std::vector<int64_t> weight_rows, source_rows;
};

// The sum over a block's taps of weight * source pixel, for its P pixels at once (independent accumulators, in
// registers where the group width CG is known at compile time; CG = 0: cg at run time).
template <typename T, int64_t CG, int64_t P>
void gather(const TapRows& plan, const Block& b, int64_t cg, const T* weights, const T* sources, T* out,
            T* scratch) {
  out += b.out_offset;
#ifdef INVOLUTION_VECTORS
  if constexpr (CG > 0) {
    using V = Lanes<T, CG>;
    V acc[P] = {};
    for (int64_t r = 0; r < plan.row_count; ++r) {
      const T* w = weights + plan.weight_rows[r] + b.weight_first;
      const T* source = sources + plan.source_rows[r] + b.source_first;
      V row[P] = {};  // a chain of multiply-adds per row, so that the rows' chains overlap
      for (int64_t s = 0; s < b.column_count; ++s, w += b.weight_step, source += b.source_step)
        UNROLL for (int64_t q = 0; q < P; ++q)
          row[q] += w[q * b.weight_pixel_step] * load<V>(source + q * b.source_pixel_step);
      UNROLL for (int64_t q = 0; q < P; ++q) acc[q] += row[q];
    }
    UNROLL for (int64_t q = 0; q < P; ++q) std::memcpy(out + q * b.spacing, &acc[q], sizeof(V));
    return;
  }
#endif
  if (CG) cg = CG;
  T* __restrict__ acc = scratch;
  std::fill_n(acc, P * cg, T(0));
  for (int64_t r = 0; r < plan.row_count; ++r) {
    const T* w = weights + plan.weight_rows[r] + b.weight_first;
    const T* source = sources + plan.source_rows[r] + b.source_first;
    for (int64_t s = 0; s < b.column_count; ++s, w += b.weight_step, source += b.source_step)
      for (int64_t q = 0; q < P; ++q) {
        const T weight = w[q * b.weight_pixel_step];
        const T* __restrict__ pixel = source + q * b.source_pixel_step;
#pragma omp simd
        for (int64_t c = 0; c < cg; ++c) acc[q * cg + c] += weight * pixel[c];
      }
  }
  for (int64_t q = 0; q < P; ++q) std::copy_n(acc + q * cg, cg, out + q * b.spacing);
}

#ifdef INVOLUTION_VECTORS
// gather for a block of kBlock pixels whose windows overlap: tap s of pixel q reads the source pixel A * q + D * s
// steps of `unit` elements from the block's first tap (forward: A = stride / dilation, D = 1; grad_input: A = 1,
// D = -1), so each source pixel of a tap row is loaded once for every tap that reads it. COLS = column_count.
template <typename T, int64_t CG, int64_t COLS, int64_t A, int64_t D>
void overlapping_gather(const TapRows& plan, const Block& b, const T* weights, const T* sources, T* out) {
  using V = Lanes<T, CG>;
  constexpr int64_t P = kBlock, origin = D > 0 ? 0 : COLS - 1, span = A * (P - 1) + COLS;
  const int64_t unit = b.source_pixel_step / A;
  V acc[P] = {};
  for (int64_t r = 0; r < plan.row_count; ++r) {
    const T* w = weights + plan.weight_rows[r] + b.weight_first;
    const T* source = sources + plan.source_rows[r] + b.source_first - origin * unit;
    V row[P] = {};  // a chain of multiply-adds per row, as in gather
    UNROLL for (int64_t e = 0; e < span; ++e) {
      const V x = load<V>(source + e * unit);
      UNROLL for (int64_t q = 0; q < P; ++q) {
        const int64_t s = D * (e - origin - A * q);
        if (s >= 0 && s < COLS) row[q] += w[s * b.weight_step + q * b.weight_pixel_step] * x;
      }
    }
    UNROLL for (int64_t q = 0; q < P; ++q) acc[q] += row[q];
  }
  out += b.out_offset;
  UNROLL for (int64_t q = 0; q < P; ++q) std::memcpy(out + q * b.spacing, &acc[q], sizeof(V));
}

// Runs overlapping_gather where it applies (a full block of a common width whose taps' sources overlap);
// false otherwise.
template <typename T, int64_t CG>
bool gathered_overlapping(const TapRows& plan, const Block& b, const T* weights, const T* sources, T* out) {
  if constexpr (CG > 0) {
    if (b.count != kBlock || b.source_step == 0) return false;
    const int64_t a = b.source_pixel_step / std::abs(b.source_step);
    if (b.source_pixel_step % std::abs(b.source_step)) return false;
    auto run = [&](auto cols) {
      constexpr int64_t C = decltype(cols)::value;
      if (b.source_step > 0 && a == 1) return overlapping_gather<T, CG, C, 1, 1>(plan, b, weights, sources, out), true;
      if (b.source_step > 0 && a == 2) return overlapping_gather<T, CG, C, 2, 1>(plan, b, weights, sources, out), true;
      if (b.source_step < 0 && a == 1) return overlapping_gather<T, CG, C, 1, -1>(plan, b, weights, sources, out), true;
      return false;
    };
    switch (b.column_count) {
      case 3: return run(std::integral_constant<int64_t, 3>());
      case 4: return run(std::integral_constant<int64_t, 4>());
      case 5: return run(std::integral_constant<int64_t, 5>());
      case 7: return run(std::integral_constant<int64_t, 7>());
    }
  }
  return false;
}
#endif

// Computes a row, in one of two orders:
// - BY_GROUP (grad_input): the blocks of kBlock pixels group by group (a group's sources stay in cache while the
//   row is swept), then the single pixels (near the borders; all of them in rows narrower than a block's windows)
//   kBlock (or 2) groups at a time, as independent accumulators, so that their multiply-adds do not wait for each
//   other;
// - otherwise (forward): block after block in the row, each block's groups in turn (each pixel's kernel weights,
//   contiguous across groups, are then read in order).
template <typename T, int64_t CG, bool BY_GROUP>
void gather_row(const Geometry& g, const TapRows& rows, const std::vector<Block>& blocks, const T* weights,
                const T* sources, T* out, T* scratch) {
  const int64_t cg = CG ? CG : g.group_channels();
  // A group wider than a vector register goes in register-wide pieces of its channels, each with the group's
  // weights: GCC keeps the sums of wider vectors in memory (3x the time of 16 channels per group for 32).
  constexpr int64_t piece = CG > kRegisterBytes / int64_t(sizeof(T)) ? kRegisterBytes / int64_t(sizeof(T)) : CG;
  auto run = [&](const Block& block, int64_t group) {
    const T* w = weights + group * g.taps();
    constexpr int64_t pieces = CG ? CG / piece : 1;  // CG = 0 (a width known at run time): one generic pass
    for (int64_t p = 0; p < pieces; ++p) {
      const int64_t first = p * piece;
      const T* source = sources + group * cg + first;
      T* destination = out + group * cg + first;
#ifdef INVOLUTION_VECTORS
      if (gathered_overlapping<T, piece>(rows, block, w, source, destination)) continue;
#endif
      if (block.count == kBlock)
        gather<T, piece, kBlock>(rows, block, cg, w, source, destination, scratch);
      else if (block.count == 2)
        gather<T, piece, 2>(rows, block, cg, w, source, destination, scratch);
      else
        gather<T, piece, 1>(rows, block, cg, w, source, destination, scratch);
    }
  };
  if (!BY_GROUP) {
    for (const Block& block : blocks)
      for (int64_t group = 0; group < g.groups; ++group) run(block, group);
    return;
  }
  for (int64_t group = 0; group < g.groups; ++group)
    for (const Block& block : blocks)
      if (block.count == kBlock) run(block, group);
  for (const Block& block : blocks) {
    if (block.count == kBlock) continue;
    Block groups = block;  // its "pixels" are the groups of this one pixel
    groups.weight_pixel_step = g.taps(), groups.source_pixel_step = cg, groups.spacing = cg;
    int64_t group = 0;
    for (groups.count = kBlock; group + kBlock <= g.groups; group += kBlock) run(groups, group);
    for (groups.count = 2; group + 2 <= g.groups; group += 2) run(groups, group);
    for (; group < g.groups; ++group) run(block, group);
  }
}

// out[b, i, j, c] = sum_{u,v} kernel[b, i, j, g, u, v] * input[b, i*s + u*d - p, j*s + v*d - p, c]
// Pixels whose window lies inside the width in full go kBlock at a time, the others one by one; a block's
// offsets count from its output row (out and kernel) and from its source rows (input).
template <typename T, int64_t CG>
void forward_rows(const Geometry& g, const T* input, const T* kernel, T* out) {
  const int64_t pixel_weights = g.groups * g.taps();
  std::vector<Block> blocks;
  for (int64_t j = 0; j < g.out_w;) {
    int64_t first, last;
    g.taps_inside(j * g.stride - g.padding, g.width, first, last);
    const int64_t block_end = (j + kBlock - 1) * g.stride - g.padding + (g.k - 1) * g.dilation;
    const int64_t count = j + kBlock <= g.out_w && j * g.stride >= g.padding && block_end < g.width ? kBlock : 1;
    blocks.push_back({count, last - first, j * g.channels, g.channels, j * pixel_weights + first, 1, pixel_weights,
                      (j * g.stride + first * g.dilation - g.padding) * g.channels, g.dilation * g.channels,
                      g.stride * g.channels});
    j += count;
  }
  at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) {
    TapRows rows(g.k);
    std::vector<T> scratch(kBlock * g.group_channels());
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.out_h, i = row % g.out_h;
      int64_t first, last;
      g.taps_inside(i * g.stride - g.padding, g.height, first, last);
      rows.row_count = 0;
      for (int64_t u = first; u < last; ++u) {
        rows.weight_rows[rows.row_count] = u * g.k;
        rows.source_rows[rows.row_count++] = (b * g.height + i * g.stride + u * g.dilation - g.padding) * g.width * g.channels;
      }
      gather_row<T, CG, false>(g, rows, blocks, kernel + row * g.out_w * pixel_weights, input,
                        out + row * g.out_w * g.channels, scratch.data());
    }
  });
}

// grad_input[b, y, x, c] = sum of kernel[b, i, j, g, u, v] * grad_out[b, i, j, c] over the taps (u, v) whose
// output pixel (i, j) = ((y + p - u*d) / s, (x + p - v*d) / s) exists (divisible, in range). Input pixels
// x, x + s, ..., x + (kBlock - 1) s read the same taps, of output pixels j, j + 1, ..., so they go together; a
// block's offsets count from its input row (out) and from the tap rows' first pixels (kernel and grad_out).
template <typename T, int64_t CG>
void grad_input_rows(const Geometry& g, const T* grad_out, const T* kernel, T* grad_input) {
  const int64_t pixel_weights = g.groups * g.taps();
  std::vector<Block> blocks;
  std::vector<int64_t> columns(g.k), out_columns(g.k), last_columns(g.k), last_out_columns(g.k);
  for (int64_t residue = 0; residue < std::min(g.stride, g.width); ++residue) {
    for (int64_t x = residue; x < g.width;) {
      const int64_t column_count = g.taps_reading(x, g.out_w, columns.data(), out_columns.data());
      const int64_t last = x + (kBlock - 1) * g.stride;
      bool block = last < g.width &&
                   g.taps_reading(last, g.out_w, last_columns.data(), last_out_columns.data()) == column_count;
      for (int64_t s = 0; block && s < column_count; ++s)
        block = last_columns[s] == columns[s] && last_out_columns[s] == out_columns[s] + kBlock - 1;
      const int64_t count = block ? kBlock : 1;
      const int64_t column_step = column_count > 1 ? columns[1] - columns[0] : 0;
      const int64_t out_step = column_count > 1 ? out_columns[1] - out_columns[0] : 0;
      blocks.push_back({count, column_count, x * g.channels, g.stride * g.channels,
                        out_columns[0] * pixel_weights + columns[0], out_step * pixel_weights + column_step,
                        pixel_weights, out_columns[0] * g.channels, out_step * g.channels, g.channels});
      x += count * g.stride;
    }
  }
  at::parallel_for(0, g.batch * g.height, 1, [&](int64_t begin, int64_t end) {
    TapRows rows(g.k);
    std::vector<int64_t> tap_rows(g.k), out_rows(g.k), next_taps(2 * g.k), next_out_rows(2 * g.k);
    std::vector<T> scratch(kBlock * g.group_channels());
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.height, y = row % g.height;
      rows.row_count = g.taps_reading(y, g.out_h, tap_rows.data(), out_rows.data());
      // The output rows that the next input row reads first, loaded in order: a row's kernel weights are read
      // across many pixels at once, an order the hardware prefetchers do not follow. (This halves grad_input's
      // time where its operands come from memory, as they do in a model.)
      if (row + 1 < end) {
        const int64_t later = (row + 1) % g.height, later_b = (row + 1) / g.height;
        const int64_t count = g.taps_reading(later, g.out_h, next_taps.data(), next_out_rows.data());
        int64_t newest = -1;  // the output rows up to this one were read by the input row before `later`
        if (later > 0 && g.taps_reading(later - 1, g.out_h, next_taps.data() + count, next_out_rows.data() + count))
          newest = next_out_rows[count];
        for (int64_t r = 0; r < count && next_out_rows[r] > newest; ++r) {
          const int64_t pixel = (later_b * g.out_h + next_out_rows[r]) * g.out_w;
          load_lines(kernel + pixel * pixel_weights, g.out_w * pixel_weights * sizeof(T));
          load_lines(grad_out + pixel * g.channels, g.out_w * g.channels * sizeof(T));
        }
      }
      for (int64_t r = 0; r < rows.row_count; ++r) {
        const int64_t pixel = (b * g.out_h + out_rows[r]) * g.out_w;  // the first of that output row
        rows.weight_rows[r] = pixel * pixel_weights + tap_rows[r] * g.k;
        rows.source_rows[r] = pixel * g.channels;
      }
      gather_row<T, CG, true>(g, rows, blocks, kernel, grad_out, grad_input + row * g.width * g.channels,
                              scratch.data());
    }
  });
}

// The kernel gradient's dot products, several taps at a time (tap_sums needs the vector extensions).
#ifdef INVOLUTION_VECTORS
using Float16 = Lanes<float, 16>;
using Float8 = Lanes<float, 8>;

// One level of a transposing sum: in each block of `Block` lanes, the block's halves of x added, then y's, side
// by side (so block b of the result holds x's partial sums of that block, then y's).
template <int Block>
INLINE Float16 fold(Float16 x, Float16 y) {
  if constexpr (Block == 16)
    return __builtin_shufflevector(x, y, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(x, y, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  else if constexpr (Block == 8)
    return __builtin_shufflevector(x, y, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
           __builtin_shufflevector(x, y, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  else if constexpr (Block == 4)
    return __builtin_shufflevector(x, y, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
           __builtin_shufflevector(x, y, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  else
    return __builtin_shufflevector(x, y, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
           __builtin_shufflevector(x, y, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
}

// Lane t of the result is the sum of a[t]'s lanes (a[] is overwritten); the folds leave the sums in
// bit-reversed order, which the last shuffle undoes.
INLINE Float16 tap_sums(Float16* a, std::integral_constant<int64_t, 16>) {
  UNROLL for (int k = 0; k < 8; ++k) a[k] = fold<16>(a[2 * k], a[2 * k + 1]);
  UNROLL for (int k = 0; k < 4; ++k) a[k] = fold<8>(a[2 * k], a[2 * k + 1]);
  UNROLL for (int k = 0; k < 2; ++k) a[k] = fold<4>(a[2 * k], a[2 * k + 1]);
  const Float16 e = fold<2>(a[0], a[1]);
  return __builtin_shufflevector(e, e, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
}

// The same for 8 lanes.
INLINE Float8 tap_sums(Float8* a, std::integral_constant<int64_t, 8>) {
  UNROLL for (int k = 0; k < 4; ++k)
    a[k] = __builtin_shufflevector(a[2 * k], a[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(a[2 * k], a[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  UNROLL for (int k = 0; k < 2; ++k)
    a[k] = __builtin_shufflevector(a[2 * k], a[2 * k + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
           __builtin_shufflevector(a[2 * k], a[2 * k + 1], 2, 3, 10, 11, 6, 7, 14, 15);
  const Float8 e = __builtin_shufflevector(a[0], a[1], 0, 8, 2, 10, 4, 12, 6, 14) +
                   __builtin_shufflevector(a[0], a[1], 1, 9, 3, 11, 5, 13, 7, 15);
  return __builtin_shufflevector(e, e, 0, 4, 2, 6, 1, 5, 3, 7);
}

// out[t] = sum over the group's L * CHUNKS channels of a[c] * source[offsets[t] + c], for t < count.
template <typename T, int64_t L, int64_t CHUNKS>
INLINE void dot_products(const T* a, const T* source, const int64_t* offsets, int64_t count, T* out) {
  using V = Lanes<T, L>;
  V left[CHUNKS];
  UNROLL for (int64_t k = 0; k < CHUNKS; ++k) left[k] = load<V>(a + k * L);
  for (int64_t first = 0; first < count; first += L) {
    V products[L];
    UNROLL for (int64_t t = 0; t < L; ++t) {
      products[t] = V{};
      if (first + t < count)
        UNROLL for (int64_t k = 0; k < CHUNKS; ++k) products[t] += left[k] * load<V>(source + offsets[first + t] + k * L);
    }
    const V sums = tap_sums(products, std::integral_constant<int64_t, L>());
    std::memcpy(out + first, &sums, std::min<int64_t>(L, count - first) * sizeof(T));
  }
}

// The same for two neighbouring groups of 8 channels at once, as 16 lanes: the folds of 8 lanes and below run in
// each half. out[t] and out[taps + t] (the next group's) for t < count.
INLINE void pair_dot_products(const float* a, const float* source, const int64_t* offsets, int64_t count,
                              int64_t taps, float* out) {
  const Float16 left = load<Float16>(a);
  for (int64_t first = 0; first < count; first += 8) {
    Float16 p[8];
    UNROLL for (int64_t t = 0; t < 8; ++t)
      p[t] = first + t < count ? left * load<Float16>(source + offsets[first + t]) : Float16{};
    UNROLL for (int k = 0; k < 4; ++k) p[k] = fold<8>(p[2 * k], p[2 * k + 1]);
    UNROLL for (int k = 0; k < 2; ++k) p[k] = fold<4>(p[2 * k], p[2 * k + 1]);
    Float16 e = fold<2>(p[0], p[1]);
    e = __builtin_shufflevector(e, e, 0, 4, 2, 6, 1, 5, 3, 7, 8, 12, 10, 14, 9, 13, 11, 15);
    const int64_t n = std::min<int64_t>(8, count - first);
    std::memcpy(out + first, &e, n * sizeof(float));
    std::memcpy(out + taps + first, reinterpret_cast<const float*>(&e) + 8, n * sizeof(float));
  }
}
#endif

// The same one tap at a time, for any group width and type.
template <typename T>
void dot_products(const T* a, const T* source, const int64_t* offsets, int64_t count, int64_t cg, T* out) {
  for (int64_t t = 0; t < count; ++t) {
    const T* __restrict__ p = source + offsets[t];
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < cg; ++c) sum += a[c] * p[c];
    out[t] = sum;
  }
}

template <typename T>
void group_dot_products(int64_t cg, const T* a, const T* source, const int64_t* offsets, int64_t count, T* out) {
#ifdef INVOLUTION_VECTORS
  if constexpr (std::is_same<T, float>::value) {
    if (cg == 8) return dot_products<T, 8, 1>(a, source, offsets, count, out);
    if (cg == 16) return dot_products<T, 16, 1>(a, source, offsets, count, out);
    if (cg == 32) return dot_products<T, 16, 2>(a, source, offsets, count, out);
  }
#endif
  dot_products(a, source, offsets, count, cg, out);
}

// grad_kernel[b, i, j, g, u, v] = sum_{c in g} grad_out[b, i, j, c] * input[b, i*s + u*d - p, j*s + v*d - p, c]
// (zero for taps outside the input). Only the taps inside are computed: a rectangle of rows and columns, the
// same for most neighbouring pixels, so its list (input offsets from the window's corner, tap indices) is
// rebuilt only where it changes.
template <typename T>
void grad_kernel_rows(const Geometry& g, const T* grad_out, const T* input, T* grad_kernel) {
  const int64_t cg = g.group_channels(), taps = g.taps();
  at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> offsets(taps), tap_indices(taps);
    std::vector<T> sums(2 * taps);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.out_h, i = row % g.out_h, top = i * g.stride - g.padding;
      int64_t u_first, u_last, v_first = -1, v_last = -1, count = 0;
      g.taps_inside(top, g.height, u_first, u_last);
      for (int64_t j = 0; j < g.out_w; ++j) {
        const int64_t left = j * g.stride - g.padding, pixel = row * g.out_w + j;
        int64_t first, last;
        g.taps_inside(left, g.width, first, last);
        if (first != v_first || last != v_last) {
          v_first = first, v_last = last, count = 0;
          for (int64_t u = u_first; u < u_last; ++u)
            for (int64_t v = v_first; v < v_last; ++v) {
              offsets[count] = (u * g.width + v) * g.dilation * g.channels;
              tap_indices[count++] = u * g.k + v;
            }
        }
        const bool all_taps = count == taps;
        const int64_t corner = ((b * g.height + top) * g.width + left) * g.channels;  // may lie outside the input
        for (int64_t group = 0; group < g.groups;) {
          T* out = grad_kernel + (pixel * g.groups + group) * taps;
          const T* a = grad_out + pixel * g.channels + group * cg;
          const T* source = input + (corner + group * cg);
          T* result = all_taps ? out : sums.data();
          int64_t done = 1;
#ifdef INVOLUTION_VECTORS
          if constexpr (std::is_same<T, float>::value)
            if (cg == 8 && group + 1 < g.groups) {
              pair_dot_products(a, source, offsets.data(), count, taps, result), done = 2;
            }
#endif
          if (done == 1) group_dot_products(cg, a, source, offsets.data(), count, result);
          if (!all_taps)
            for (int64_t d = 0; d < done; ++d) {
              std::fill_n(out + d * taps, taps, T(0));
              for (int64_t t = 0; t < count; ++t) out[d * taps + tap_indices[t]] = sums[d * taps + t];
            }
          group += done;
        }
      }
    }
  });
}

#ifdef INVOLUTION_VECTORS
// The kernel gradient at stride 1 with a vector's lanes over kLanes neighbouring output pixels of a row instead of
// over a group's channels, so that no horizontal sums are needed. Per thread, a row of grad_out and the input rows
// its windows read are transposed to channel-major (an input row once while the thread's rows are swept: a ring of
// slots), with zeros outside the input, so that the kLanes pixels' sources of a tap are contiguous. A tap's kLanes
// dot products are then multiply-adds over the group's channels, collected in a tile (tap by pixel) that is
// transposed on the way out.
constexpr int64_t kLanes = 16;
using Pixels = Lanes<float, kLanes>;

// One round of a 16 x 16 transpose (rows m[0..15]): for rows r without bit H, the lanes with bit H of row r
// swap with the lanes without it of row r + H. Rounds H = 8, 4, 2, 1 transpose m.
template <int64_t H, size_t... I>
INLINE void transpose_round(Pixels* m, std::index_sequence<I...>) {
  UNROLL for (int64_t r = 0; r < kLanes; ++r)
    if (!(r & H)) {
      const Pixels a = m[r], b = m[r + H];
      m[r] = __builtin_shufflevector(a, b, ((I & H) ? 16 + I - H : I)...);
      m[r + H] = __builtin_shufflevector(a, b, ((I & H) ? 16 + I : I + H)...);
    }
}

INLINE void transpose(Pixels* m) {
  transpose_round<8>(m, std::make_index_sequence<kLanes>());
  transpose_round<4>(m, std::make_index_sequence<kLanes>());
  transpose_round<2>(m, std::make_index_sequence<kLanes>());
  transpose_round<1>(m, std::make_index_sequence<kLanes>());
}

// to[c * to_stride + n] = from[n * from_stride + c] for n < count, c < channels (channels-last pixels, or images,
// to channel-major rows); 16 x 16 blocks where channels allow, with the n past count of a block written as zeros
// (to has room for them).
void channel_major(const float* from, int64_t count, int64_t channels, float* to, int64_t to_stride,
                   int64_t from_stride) {
  if (channels % kLanes) {
    for (int64_t n = 0; n < count; ++n)
      for (int64_t c = 0; c < channels; ++c) to[c * to_stride + n] = from[n * from_stride + c];
    return;
  }
  for (int64_t n0 = 0; n0 < count; n0 += kLanes)
    for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
      Pixels m[kLanes];
      UNROLL for (int64_t k = 0; k < kLanes; ++k)
        m[k] = n0 + k < count ? load<Pixels>(from + (n0 + k) * from_stride + c0) : Pixels{};
      transpose(m);
      UNROLL for (int64_t k = 0; k < kLanes; ++k) std::memcpy(to + (c0 + k) * to_stride + n0, &m[k], sizeof(Pixels));
    }
}

// Writes a tile of kernel-gradient rows (tile[t * kLanes + l]: tap t of lane l) to out + l * lane_step + t for
// l < lanes: 16 taps at a time by transposes, the rest one by one.
void write_tile(const float* tile, int64_t taps, int64_t lanes, float* out, int64_t lane_step) {
  int64_t t0 = 0;
  for (; t0 + kLanes <= taps; t0 += kLanes) {
    Pixels m[kLanes];
    UNROLL for (int64_t k = 0; k < kLanes; ++k) m[k] = load<Pixels>(tile + (t0 + k) * kLanes);
    transpose(m);
    for (int64_t l = 0; l < lanes; ++l) std::memcpy(out + l * lane_step + t0, &m[l], sizeof(Pixels));
  }
  for (int64_t l = 0; l < lanes; ++l)
    for (int64_t t = t0; t < taps; ++t) out[l * lane_step + t] = tile[t * kLanes + l];
}

// acc[v] += left * (kLanes sources from lane v of lo, continuing into hi) for each v in V: the taps of a row at
// dilation 1 read shifted windows of the same two vectors, taken apart by shuffles rather than by loads that
// straddle cache lines. With AVX-512 one valignd per window (GCC otherwise emits a copy and a two-table permute).
template <int64_t V, size_t... I>
INLINE Pixels window(Pixels lo, Pixels hi, std::index_sequence<I...>) {
#ifdef __AVX512F__
  if constexpr (V == 0) {
    return lo;
  } else {
    const __m512i lanes = _mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), V);
    return _mm512_castsi512_ps(lanes);
  }
#else
  return __builtin_shufflevector(lo, hi, (I + V)...);
#endif
}

// The windows of a tap row at dilation 1: w[v] = the kLanes sources from lane v of lo, continuing into hi.
template <size_t... V>
INLINE void windows(Pixels* w, Pixels lo, Pixels hi, std::index_sequence<V...>) {
  ((w[V] = window<V>(lo, hi, std::make_index_sequence<kLanes>())), ...);
}

// One input row's products over a group's channels at dilation 1 (x, a0 and a1 at the group's first channel),
// into tile rows out0 and out1. The sums stay in registers (local to this function) until the end.
template <int64_t K, bool FIRST, bool SECOND>
INLINE void tap_row_products(const float* x, int64_t columns, const float* a0, const float* a1, int64_t lanes_w,
                             int64_t cg, float* out0, float* out1) {
  Pixels acc0[K] = {}, acc1[K] = {};
  for (int64_t c = 0; c < cg; ++c) {
    const Pixels lo = load<Pixels>(x + c * columns), hi = load<Pixels>(x + c * columns + kLanes);
    const Pixels left0 = FIRST ? load<Pixels>(a0 + c * lanes_w) : Pixels{};
    const Pixels left1 = SECOND ? load<Pixels>(a1 + c * lanes_w) : Pixels{};
    Pixels w[K];
    windows(w, lo, hi, std::make_index_sequence<K>());
    UNROLL for (int64_t v = 0; v < K; ++v) {
      if constexpr (FIRST) acc0[v] += left0 * w[v];
      if constexpr (SECOND) acc1[v] += left1 * w[v];
    }
  }
  UNROLL for (int64_t v = 0; v < K; ++v) {  // element by element: a copy of the whole array keeps it in memory
    if constexpr (FIRST) std::memcpy(out0 + v * kLanes, &acc0[v], sizeof(Pixels));
    if constexpr (SECOND) std::memcpy(out1 + v * kLanes, &acc1[v], sizeof(Pixels));
  }
}

template <int64_t K>
void grad_kernel_lanes(const Geometry& g, const float* grad_out, const float* input, float* grad_kernel) {
  const int64_t taps = K * K, channels = g.channels, cg = g.group_channels(), d = g.dilation;
  const int64_t lanes_w = (g.out_w + kLanes - 1) / kLanes * kLanes;  // the row's pixels, rounded up
  // A transposed input row: `columns` per channel, from column -padding (room for the last block's transpose).
  // Whole vectors, so that in a buffer from torch's allocator (64-byte aligned) the loads below do not straddle
  // cache lines.
  const int64_t columns = (std::max(lanes_w + (K - 1) * d, g.width + g.padding + kLanes) + kLanes - 1) / kLanes * kLanes;
  // At dilation 1, two output rows per pass: tap row u of row i and tap row u - 1 of row i + 1 read the same input
  // row, whose windows are then shuffled out once for both.
  const int64_t most_rows = d == 1 ? 2 : 1;
  const int64_t slots = (K - 1) * d + most_rows;
  const int64_t row_floats = g.out_w * g.groups * taps;
  at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) {
    // Zeros where no input column lands (the padding), once: the transposes below rewrite the same columns.
    const at::Tensor row_buffer = at::zeros({slots * channels * columns + most_rows * channels * lanes_w}, at::kFloat);
    float* rows = row_buffer.mutable_data_ptr<float>();
    float* grad_rows = rows + slots * channels * columns;
    std::vector<int64_t> tags(slots, -1);  // which input row (b * height + y) each slot holds
    alignas(64) float tiles[2][K * K * kLanes];
    // The rows' kernel gradient is assembled here and then copied out whole: written straight to memory, the
    // tiles' scattered stores (each pixel's taps in four pieces, most straddling two lines) stall on the lines'
    // misses (they cost 12-27% more with the caches evicted before the call).
    const at::Tensor rows_out_buffer = at::empty({most_rows * row_floats}, at::kFloat);
    float* rows_out = rows_out_buffer.mutable_data_ptr<float>();
    const float* sources[K + 1];
    for (int64_t row = begin; row < end;) {
      const int64_t b = row / g.out_h, i = row % g.out_h;
      const int64_t count = most_rows == 2 && row + 1 < end && i + 1 < g.out_h ? 2 : 1;
      const int64_t tap_rows = K + count - 1;  // the input rows of the pass: y = i + e * d - padding
      for (int64_t q = 0; q < count; ++q)
        channel_major(grad_out + (row + q) * g.out_w * channels, g.out_w, channels, grad_rows + q * channels * lanes_w,
                      lanes_w, channels);
      for (int64_t e = 0; e < tap_rows; ++e) {
        const int64_t y = i + e * d - g.padding, tag = b * g.height + y;
        sources[e] = nullptr;
        if (y < 0 || y >= g.height) continue;
        float* slot = rows + y % slots * channels * columns;
        sources[e] = slot;
        if (tags[y % slots] != tag) {
          tags[y % slots] = tag;
          channel_major(input + tag * g.width * channels, g.width, channels, slot + g.padding, columns, channels);
        }
      }
      // What the next pass transposes, loaded in order while this one computes (as in grad_input): its grad_out
      // rows and the input rows it adds to the ring.
      const int64_t next = row + count;
      for (int64_t q = 0; q < most_rows && next + q < end; ++q) {
        load_lines(grad_out + (next + q) * g.out_w * channels, g.out_w * channels * sizeof(float));
        const int64_t next_b = (next + q) / g.out_h, y = (next + q) % g.out_h + (K - 1) * d - g.padding;
        if (y >= 0 && y < g.height)
          load_lines(input + (next_b * g.height + y) * g.width * channels, g.width * channels * sizeof(float));
      }
      for (int64_t group = 0; group < g.groups; ++group)
        for (int64_t j0 = 0; j0 < g.out_w; j0 += kLanes) {
          const float* a0 = grad_rows + group * cg * lanes_w + j0;
          const float* a1 = a0 + channels * lanes_w;
          for (int64_t e = 0; e < tap_rows; ++e) {
            // Input row e is tap row e of the pass's first row and tap row e - 1 of its second.
            const bool first = e < K, second = count == 2 && e > 0;
            float* out0 = tiles[0] + e * K * kLanes;
            float* out1 = second ? tiles[1] + (e - 1) * K * kLanes : nullptr;
            const float* x = sources[e] ? sources[e] + group * cg * columns + j0 : nullptr;
            if (!x) {
              if (first) std::fill_n(out0, K * kLanes, 0.f);
              if (second) std::fill_n(out1, K * kLanes, 0.f);
            } else if (d != 1) {
              Pixels acc[K] = {};
              for (int64_t c = 0; c < cg; ++c) {
                const Pixels left = load<Pixels>(a0 + c * lanes_w);
                UNROLL for (int64_t v = 0; v < K; ++v) acc[v] += left * load<Pixels>(x + c * columns + v * d);
              }
              std::memcpy(out0, acc, sizeof acc);
            } else if (first && second) {
              tap_row_products<K, true, true>(x, columns, a0, a1, lanes_w, cg, out0, out1);
            } else if (first) {
              tap_row_products<K, true, false>(x, columns, a0, a1, lanes_w, cg, out0, out1);
            } else {
              tap_row_products<K, false, true>(x, columns, a0, a1, lanes_w, cg, out0, out1);
            }
          }
          for (int64_t q = 0; q < count; ++q)
            write_tile(tiles[q], taps, std::min(kLanes, g.out_w - j0),
                       rows_out + q * row_floats + (j0 * g.groups + group) * taps, g.groups * taps);
        }
      std::memcpy(grad_kernel + row * row_floats, rows_out, count * row_floats * sizeof(float));
      row = next;
    }
  });
}

// What grad_kernel_images assembles before copying out (1/16 or 4x as much was slower on the demo's layers).
constexpr int64_t kStagedBytes = int64_t(1) << 17;

// The kernel gradient with the lanes over kLanes images (the same output pixel of each), for rows too narrow to
// fill a vector or groups of few channels: any stride, dilation and padding, and only the taps inside the input
// computed. Per chunk of
// kLanes images, the input and grad_out are first transposed to (pixel, channel, image) order.
template <int64_t K>
void grad_kernel_images(const Geometry& g, const float* grad_out, const float* input, float* grad_kernel) {
  const int64_t taps = K * K, channels = g.channels, cg = g.group_channels(), d = g.dilation;
  const int64_t in_pixels = g.height * g.width, out_pixels = g.out_h * g.out_w;
  at::parallel_for(0, (g.batch + kLanes - 1) / kLanes, 1, [&](int64_t begin, int64_t end) {
    // From torch's allocator: 64-byte aligned, so that no vector load straddles two cache lines.
    const at::Tensor copies = at::empty({(in_pixels + out_pixels) * channels * kLanes}, at::kFloat);
    float* sources = copies.mutable_data_ptr<float>();
    float* grads = sources + in_pixels * channels * kLanes;
    alignas(64) float tile[K * K * kLanes];
    // The kernel gradient of `span` pixels is assembled here for the kLanes images and then copied out as one
    // piece per image: written straight to memory, each tile's taps go to kLanes images' places at once.
    const int64_t pixel_floats = g.groups * taps;
    const int64_t span = std::max<int64_t>(1, kStagedBytes / int64_t(kLanes * pixel_floats * sizeof(float)));
    const at::Tensor staged_buffer = at::empty({kLanes * span * pixel_floats}, at::kFloat);
    float* staged = staged_buffer.mutable_data_ptr<float>();
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b0 = chunk * kLanes, images = std::min(kLanes, g.batch - b0);
      for (int64_t n = 0; n < in_pixels; ++n)
        channel_major(input + (b0 * in_pixels + n) * channels, images, channels,
                      sources + n * channels * kLanes, kLanes, in_pixels * channels);
      for (int64_t n = 0; n < out_pixels; ++n)
        channel_major(grad_out + (b0 * out_pixels + n) * channels, images, channels,
                      grads + n * channels * kLanes, kLanes, out_pixels * channels);
      for (int64_t pixel = 0; pixel < out_pixels; ++pixel) {
        const int64_t top = pixel / g.out_w * g.stride - g.padding, left = pixel % g.out_w * g.stride - g.padding;
        int64_t u_first, u_last, v_first, v_last;
        g.taps_inside(top, g.height, u_first, u_last);
        g.taps_inside(left, g.width, v_first, v_last);
        for (int64_t group = 0; group < g.groups; ++group) {
          const float* a = grads + (pixel * channels + group * cg) * kLanes;
          for (int64_t u = 0; u < K; ++u) {
            Pixels acc[K] = {};
            if (u >= u_first && u < u_last) {
              const int64_t row = ((top + u * d) * g.width + left) * channels + group * cg;  // tap (u, 0)'s pixel
              for (int64_t c = 0; c < cg; ++c) {
                const Pixels grad = load<Pixels>(a + c * kLanes);
                UNROLL for (int64_t v = 0; v < K; ++v)
                  if (v >= v_first && v < v_last)
                    acc[v] += grad * load<Pixels>(sources + (row + v * d * channels + c) * kLanes);
              }
            }
            std::memcpy(tile + u * K * kLanes, acc, sizeof acc);
          }
          write_tile(tile, taps, images, staged + (pixel % span * g.groups + group) * taps, span * pixel_floats);
        }
        if (pixel % span == span - 1 || pixel == out_pixels - 1) {
          const int64_t first = pixel - pixel % span;
          for (int64_t l = 0; l < images; ++l)
            std::memcpy(grad_kernel + ((b0 + l) * out_pixels + first) * pixel_floats, staged + l * span * pixel_floats,
                        (pixel - first + 1) * pixel_floats * sizeof(float));
        }
      }
    }
  });
}

// The lanes paths where they apply (float): over images in a batch of at least kWideRow images, for rows narrower
// than kWideRow pixels or groups of at most 8 channels (K = 3, 5 or 7; a thread's copies of kLanes images within
// kImageCopyBytes); otherwise over a row's pixels for rows of at least kWideRow pixels (stride 1, K = 5 or 7);
// false otherwise. (With 8 channels per group, copying and writing out a row costs the pixel lanes as much as
// their multiply-adds; the images' copies are shared by all the taps of a pixel.)
constexpr int64_t kWideRow = 12, kImageCopyBytes = int64_t(1) << 26;

template <typename T>
bool grad_kernel_by_lanes(const Geometry& g, const T* grad_out, const T* input, T* grad_kernel) {
  if constexpr (std::is_same<T, float>::value) {
    const int64_t copy_bytes = (g.height * g.width + g.out_h * g.out_w) * g.channels * kLanes * sizeof(float);
    if ((g.out_w < kWideRow || g.group_channels() <= 8) && g.batch >= kWideRow && copy_bytes <= kImageCopyBytes) {
      switch (g.k) {
        case 3: return grad_kernel_images<3>(g, grad_out, input, grad_kernel), true;
        case 5: return grad_kernel_images<5>(g, grad_out, input, grad_kernel), true;
        case 7: return grad_kernel_images<7>(g, grad_out, input, grad_kernel), true;
      }
    }
    if (g.stride != 1 || g.out_w < kWideRow) return false;
    switch (g.k) {
      case 5: return grad_kernel_lanes<5>(g, grad_out, input, grad_kernel), true;
      case 7: return grad_kernel_lanes<7>(g, grad_out, input, grad_kernel), true;
    }
  }
  return false;
}
#endif

void check(const at::Tensor& t, int64_t dim, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "involution cpp backend: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == dim && t.is_contiguous(), "involution cpp backend: ", name, " must be a contiguous ",
              dim, "-D tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "involution cpp backend: ", name, " must be float32 or float64, got ", t.scalar_type());
}

// image: (B, H, W, C); pixels: (B, Ho, Wo, ...).
Geometry geometry(const at::Tensor& image, const at::Tensor& pixels, int64_t k, int64_t groups, int64_t stride,
                  int64_t padding, int64_t dilation) {
  TORCH_CHECK(image.size(3) % groups == 0, "involution cpp backend: channels not divisible by groups");
  return {image.size(0), image.size(3), groups, k, image.size(1), image.size(2), pixels.size(1), pixels.size(2),
          stride, padding, dilation};
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& kernel, int64_t k, int64_t groups, int64_t stride,
                   int64_t padding, int64_t dilation) {
  check(input, 4, "input");
  check(kernel, 4, "kernel");  // (B, Ho, Wo, G*K*K)
  TORCH_CHECK(kernel.size(3) == groups * k * k, "involution cpp backend: kernel must be (B, Ho, Wo, G*K*K)");
  const Geometry g = geometry(input, kernel, k, groups, stride, padding, dilation);
  at::Tensor out = at::empty({g.batch, g.out_h, g.out_w, g.channels}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "involution_forward", [&] {
    with_group_width(g.group_channels(), [&](auto width) {
      forward_rows<scalar_t, decltype(width)::value>(g, input.const_data_ptr<scalar_t>(),
                                                     kernel.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
    });
  });
  return out;
}

at::Tensor grad_input(const at::Tensor& grad_out, const at::Tensor& kernel, int64_t k, int64_t groups, int64_t height,
                      int64_t width, int64_t stride, int64_t padding, int64_t dilation) {
  check(grad_out, 4, "grad_out");
  check(kernel, 4, "kernel");
  at::Tensor grad = at::empty({grad_out.size(0), height, width, grad_out.size(3)}, grad_out.options());
  const Geometry g = geometry(grad, grad_out, k, groups, stride, padding, dilation);
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "involution_grad_input", [&] {
    with_group_width(g.group_channels(), [&](auto width) {
      grad_input_rows<scalar_t, decltype(width)::value>(g, grad_out.const_data_ptr<scalar_t>(),
                                                        kernel.const_data_ptr<scalar_t>(), grad.mutable_data_ptr<scalar_t>());
    });
  });
  return grad;
}

at::Tensor grad_kernel(const at::Tensor& grad_out, const at::Tensor& input, int64_t k, int64_t groups,
                       int64_t stride, int64_t padding, int64_t dilation) {
  check(grad_out, 4, "grad_out");
  check(input, 4, "input");
  const Geometry g = geometry(input, grad_out, k, groups, stride, padding, dilation);
  at::Tensor grad = at::empty({g.batch, g.out_h, g.out_w, groups * k * k}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "involution_grad_kernel", [&] {
    const scalar_t *a = grad_out.const_data_ptr<scalar_t>(), *x = input.const_data_ptr<scalar_t>();
    scalar_t* out = grad.mutable_data_ptr<scalar_t>();
#ifdef INVOLUTION_VECTORS
    if (grad_kernel_by_lanes(g, a, x, out)) return;
#endif
    grad_kernel_rows<scalar_t>(g, a, x, out);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY(involution_cpu, m) {
  m.def("forward(Tensor input, Tensor kernel, int k, int groups, int stride, int padding, int dilation) -> Tensor", &forward);
  m.def("grad_input(Tensor grad_out, Tensor kernel, int k, int groups, int height, int width, int stride, int padding, "
        "int dilation) -> Tensor",
        &grad_input);
  m.def("grad_kernel(Tensor grad_out, Tensor input, int k, int groups, int stride, int padding, int dilation)"
        " -> Tensor",
        &grad_kernel);
}
