// Involution on the CPU in one pass over the kernel taps (the "cpp" backend; built by cpp_ops.py).
//
// Channels-last layouts: input (B, H, W, C), kernel map (B, Ho, Wo, G, K, K), output and grad_out (B, Ho, Wo, C),
// float or double, contiguous. The channels of a group are contiguous and share one weight per tap, so the
// innermost loops run over a group's channels (vectorised; for 4 to 32 channels per group the count is a
// compile-time constant and a pixel's accumulators stay in registers while the K x K taps stream through them).
// All three kernels gather into the pixel they write, so threads (one image row each) never write the same
// element: the forward, the kernel gradient (a per-tap dot product over a group's channels, also the local
// correlation of a query with a key), and the input gradient (the forward's windows read backwards).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace {

struct Geometry {
  int64_t batch, channels, groups, k, height, width, out_h, out_w, stride, padding, dilation;
  int64_t group_channels() const { return channels / groups; }
  int64_t taps() const { return k * k; }
  // The taps t in [first, last) of an output pixel whose input position start + t * dilation lies in [0, size)
  // (start = output position * stride - padding): the loops below skip the taps outside without testing them.
  void taps_inside(int64_t start, int64_t size, int64_t& first, int64_t& last) const {
    first = start >= 0 ? 0 : (-start + dilation - 1) / dilation;
    last = start >= size ? 0 : std::min(k, (size - 1 - start) / dilation + 1);
  }
  // The taps t of an input position whose output position (position + padding - t * dilation) / stride exists:
  // from first to last (exclusive) in steps of step; with dilation > 1 (step 1) some are not divisible (check).
  void taps_reading(int64_t position, int64_t out_size, int64_t& first, int64_t& last, int64_t& step) const {
    const int64_t reach = position + padding;  // = output position * stride + t * dilation
    first = std::max<int64_t>(0, (reach - (out_size - 1) * stride + dilation - 1) / dilation);
    last = std::min(k, reach / dilation + 1);
    step = 1;
    if (dilation == 1 && stride > 1) {  // t = reach (mod stride)
      first += ((reach - first) % stride + stride) % stride;
      step = stride;
    }
  }
};

// Calls body(std::integral_constant<int64_t, N>) for the common group widths, body(0-constant) otherwise.
template <typename Body>
void with_group_width(int64_t width, Body body) {
  switch (width) {
    case 4: return body(std::integral_constant<int64_t, 4>());
    case 8: return body(std::integral_constant<int64_t, 8>());
    case 16: return body(std::integral_constant<int64_t, 16>());
    case 32: return body(std::integral_constant<int64_t, 32>());
    default: return body(std::integral_constant<int64_t, 0>());
  }
}

// out[b, i, j, c] = sum_{u,v} kernel[b, i, j, g, u, v] * input[b, i*s + u*d - p, j*s + v*d - p, c]
template <typename T, int64_t CG>
void forward_rows(const Geometry& g, const T* input, const T* kernel, T* out) {
  const int64_t cg = CG ? CG : g.group_channels(), taps = g.taps();
  at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(CG ? 0 : cg);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.out_h, i = row % g.out_h;
      int64_t u_first, u_last, v_first, v_last;
      g.taps_inside(i * g.stride - g.padding, g.height, u_first, u_last);
      for (int64_t j = 0; j < g.out_w; ++j) {
        g.taps_inside(j * g.stride - g.padding, g.width, v_first, v_last);
        const T* weights = kernel + (row * g.out_w + j) * g.groups * taps;
        T* o = out + (row * g.out_w + j) * g.channels;
        for (int64_t group = 0; group < g.groups; ++group) {
          T fixed[CG ? CG : 1];
          T* __restrict__ acc = CG ? fixed : scratch.data();
          for (int64_t c = 0; c < cg; ++c) acc[c] = T(0);
          for (int64_t u = u_first; u < u_last; ++u) {
            const int64_t y = i * g.stride + u * g.dilation - g.padding;
            for (int64_t v = v_first; v < v_last; ++v) {
              const int64_t x = j * g.stride + v * g.dilation - g.padding;
              const T w = weights[group * taps + u * g.k + v];
              const T* __restrict__ pixel = input + ((b * g.height + y) * g.width + x) * g.channels + group * cg;
              for (int64_t c = 0; c < cg; ++c) acc[c] += w * pixel[c];
            }
          }
          for (int64_t c = 0; c < cg; ++c) o[group * cg + c] = acc[c];
        }
      }
    }
  });
}

// grad_kernel[b, i, j, g, u, v] = sum_{c in g} grad_out[b, i, j, c] * input[b, i*s + u*d - p, j*s + v*d - p, c]
template <typename T, int64_t CG>
void grad_kernel_rows(const Geometry& g, const T* grad_out, const T* input, T* grad_kernel) {
  const int64_t cg = CG ? CG : g.group_channels(), taps = g.taps();
  at::parallel_for(0, g.batch * g.out_h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.out_h, i = row % g.out_h;
      int64_t u_first, u_last, v_first, v_last;
      g.taps_inside(i * g.stride - g.padding, g.height, u_first, u_last);
      for (int64_t j = 0; j < g.out_w; ++j) {
        g.taps_inside(j * g.stride - g.padding, g.width, v_first, v_last);
        T* gk = grad_kernel + (row * g.out_w + j) * g.groups * taps;
        std::fill(gk, gk + g.groups * taps, T(0));
        for (int64_t u = u_first; u < u_last; ++u) {
          const int64_t y = i * g.stride + u * g.dilation - g.padding;
          for (int64_t v = v_first; v < v_last; ++v) {
            const int64_t x = j * g.stride + v * g.dilation - g.padding;
            const T* pixel = input + ((b * g.height + y) * g.width + x) * g.channels;
            const T* go = grad_out + (row * g.out_w + j) * g.channels;
            for (int64_t group = 0; group < g.groups; ++group) {
              const T* __restrict__ a = go + group * cg;
              const T* __restrict__ p = pixel + group * cg;
              T sum = T(0);
#pragma omp simd reduction(+ : sum)
              for (int64_t c = 0; c < cg; ++c) sum += a[c] * p[c];
              gk[group * taps + u * g.k + v] = sum;
            }
          }
        }
      }
    }
  });
}

// grad_input[b, y, x, c] = sum of kernel[b, i, j, g, u, v] * grad_out[b, i, j, c] over the taps (u, v) whose
// output pixel (i, j) = ((y + p - u*d) / s, (x + p - v*d) / s) exists (divisible, in range).
template <typename T, int64_t CG>
void grad_input_rows(const Geometry& g, const T* grad_out, const T* kernel, T* grad_input) {
  const int64_t cg = CG ? CG : g.group_channels(), taps = g.taps();
  at::parallel_for(0, g.batch * g.height, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(CG ? 0 : cg);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / g.height, y = row % g.height;
      int64_t u_first, u_last, u_step, v_first, v_last, v_step;
      g.taps_reading(y, g.out_h, u_first, u_last, u_step);
      for (int64_t x = 0; x < g.width; ++x) {
        g.taps_reading(x, g.out_w, v_first, v_last, v_step);
        T* gx = grad_input + (row * g.width + x) * g.channels;
        for (int64_t group = 0; group < g.groups; ++group) {
          T fixed[CG ? CG : 1];
          T* __restrict__ acc = CG ? fixed : scratch.data();
          for (int64_t c = 0; c < cg; ++c) acc[c] = T(0);
          for (int64_t u = u_first; u < u_last; u += u_step) {
            const int64_t top = y + g.padding - u * g.dilation;
            if (u_step < g.stride && top % g.stride) continue;
            const int64_t i = g.stride > 1 ? top / g.stride : top;
            for (int64_t v = v_first; v < v_last; v += v_step) {
              const int64_t left = x + g.padding - v * g.dilation;
              if (v_step < g.stride && left % g.stride) continue;
              const int64_t j = g.stride > 1 ? left / g.stride : left;
              const int64_t pixel = (b * g.out_h + i) * g.out_w + j;
              const T w = kernel[(pixel * g.groups + group) * taps + u * g.k + v];
              const T* __restrict__ go = grad_out + pixel * g.channels + group * cg;
              for (int64_t c = 0; c < cg; ++c) acc[c] += w * go[c];
            }
          }
          for (int64_t c = 0; c < cg; ++c) gx[group * cg + c] = acc[c];
        }
      }
    }
  });
}

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
    with_group_width(g.group_channels(), [&](auto width) {
      grad_kernel_rows<scalar_t, decltype(width)::value>(g, grad_out.const_data_ptr<scalar_t>(),
                                                         input.const_data_ptr<scalar_t>(), grad.mutable_data_ptr<scalar_t>());
    });
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
