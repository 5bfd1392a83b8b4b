// CPU crossbar MVM, the op's forward entry: allocates the outputs and runs the tile forward
// (tile_forward.h) over the call's tiles; the backward is in crossbar_backward.cpp.
#include "crossbar_mvm.h"

#include <ATen/Parallel.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "crossbar_tile.h"
#include "tile_forward.h"

namespace lorafusion::cpu {
namespace {

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
                  const std::optional<at::Tensor>& bias, const at::Tensor& rng,
                  const CrossbarParams& p, bool training, bool need_aux,
                  const std::optional<at::Tensor>& noise_out,
                  const std::optional<at::Tensor>& noise_weight, const std::optional<at::Tensor>& input_range,
                  at::Tensor& y, at::Tensor& s, at::Tensor& mask, at::Tensor& passes) {
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const auto tiles = make_tiles(K, N, p);
  const int64_t tin = split_count(K, p.max_in);
  TileForward<T> f{p,
                   x.data_ptr<T>(),
                   M,
                   K,
                   N,
                   out_scales.data_ptr<T>(),
                   out_scales.size(0),
                   tin,
                   noise_out ? noise_out->data_ptr<T>() : nullptr,
                   bias ? bias->data_ptr<T>() : nullptr,
                   split_count(N, p.max_out),
                   y,
                   rng_value(rng, 0),
                   rng_value(rng, 1),
                   need_aux,
                   weight_noise_sample_rows(p, training),
                   p.ir_drop > 0.0 && !training,
                   y.data_ptr<T>(),
                   s.data_ptr<T>(),
                   need_aux ? reinterpret_cast<uint8_t*>(mask.data_ptr<bool>()) : nullptr,
                   passes.data_ptr<int32_t>()};
  if (input_range) f.input_range = input_range->data_ptr<T>();
  for (const auto& t : tiles) {
    if (f.sample_rows > 0) {
      f.run_tile(t, at::Tensor(), [&](int64_t sample) {
        return tile_weight<T>(weight, t, p, training, f.seed, f.offset, noise_weight, sample);
      });
    } else {
      f.run_tile(t, tile_weight<T>(weight, t, p, training, f.seed, f.offset, noise_weight), {});
    }
  }
  if (bias && tin > 1) {
    const T* b = bias->data_ptr<T>();
    T* yp = y.data_ptr<T>();
    at::parallel_for(0, M, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m)
        for (int64_t n = 0; n < N; ++n) yp[m * N + n] = yp[m * N + n] + b[n];
    });
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> crossbar_mvm_forward(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
    const std::optional<at::Tensor>& bias, const at::Tensor& rng, const CrossbarParams& params,
    bool training, bool need_aux, const std::optional<at::Tensor>& noise_out,
    const std::optional<at::Tensor>& noise_weight, const std::optional<at::Tensor>& input_range) {
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const int64_t tin = split_count(K, params.max_in), tout = split_count(N, params.max_out);
  // per_input_tile: [Tin * M, N] here (one [M, N] block per input tile), viewed [Tin, M, N].
  const int64_t y_rows = params.per_input_tile ? tin * M : M;
  at::Tensor y = tin > 1 ? at::zeros({y_rows, N}, x.options()) : at::empty({y_rows, N}, x.options());
  at::Tensor s = at::empty({tin * tout, M}, x.options());
  at::Tensor mask = need_aux ? at::empty({tin, M, N}, x.options().dtype(at::kBool))
                             : at::empty({0}, x.options().dtype(at::kBool));
  at::Tensor passes = at::empty({tin * tout, M}, x.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "crossbar_mvm_forward", [&] {
    forward_impl<scalar_t>(x, weight, out_scales, bias, rng, params, training, need_aux,
                           noise_out, noise_weight, input_range, y, s, mask, passes);
  });
  if (params.per_input_tile) y = y.view({tin, M, N});
  return {y, s, mask, passes};
}

}  // namespace lorafusion::cpu
