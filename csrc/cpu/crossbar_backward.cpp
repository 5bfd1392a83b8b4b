// CPU backward of the crossbar MVM (straight-through): per tile, the output gradient masked
// where the ADC clamped and scaled by the digital periphery, the DAC's straight-through mask
// and the weight gradient's operand regenerated from the forward's noise keys, then the two
// GEMMs. With a backward read (params.bwd_read) the input gradient's GEMM is instead a read of
// the tile transposed, through the backward periphery (backward_read). See docs/numerics.md,
// "The crossbar MVM" and "The backward read".
#include <ATen/Parallel.h>
#include <lorafusion/philox.h>
#include <lorafusion/quant.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <tuple>
#include <vector>

#include "crossbar_mvm.h"
#include "crossbar_tile.h"
#include "tile_forward.h"

namespace lorafusion::cpu {
namespace {

// The input gradient of tile t read through the crossbar: the tile's output gradient g [M, Nt]
// is the input of a forward read (TileForward, with K and N swapped) through the transposed
// tile, with the backward periphery `pb`: noise management of g's rows, the backward DAC, the
// GEMM g_q W~ (W~ [Nt, Kt], the tile's weights as the forward read them), output noise on its
// own stream (kStreamBackwardOutput, key tile field t.index, element m * K + global input
// column), the backward ADC with bound management, and the scale undone. Returns [M, Kt].
// `weight_of(sample)`: the tile's W~ (of batch sample `sample` with per-sample weight noise).
template <typename T>
at::Tensor backward_read(const at::Tensor& g, const TileRange& t, const CrossbarParams& pb, int64_t K,
                         int64_t sample_rows, uint64_t seed, uint64_t offset,
                         const std::function<at::Tensor(int64_t)>& weight_of) {
  const int64_t M = g.size(0), nt = t.o1 - t.o0, kt = t.k1 - t.k0;
  const auto opt = g.options();
  at::Tensor y = at::empty({M, kt}, opt);
  at::Tensor s = at::empty({1, M}, opt);
  at::Tensor passes = at::empty({1, M}, opt.dtype(at::kInt));
  TileForward<T> f{pb,      g.data_ptr<T>(), M,       nt,    kt,      nullptr, 0,       1,
                   nullptr, nullptr,         1,       y,     seed,    offset,  false,   sample_rows,
                   false,   y.data_ptr<T>(), s.data_ptr<T>(), nullptr, passes.data_ptr<int32_t>()};
  f.out_stream = kStreamBackwardOutput;
  f.noise_tile = t.index;
  f.noise_ld = K;
  f.noise_col0 = t.k0;
  const TileRange rt{0, nt, 0, kt, 0, 0};
  if (sample_rows > 0) {
    // TileForward's GEMM is xq @ w.t(): w = W~_s^T (a view) makes it g_q @ W~_s.
    f.run_tile(rt, at::Tensor(), [&](int64_t sample) { return weight_of(sample).t(); });
  } else {
    // A transposed view: the GEMM then reads W~ as it is laid out (the ideal backward's call),
    // and the bound-test probe gathers the few columns it needs by stride.
    f.run_tile(rt, weight_of(0).t(), {});
  }
  return y;
}

template <typename T>
void backward_impl(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                   const at::Tensor& out_scales, const at::Tensor& rng, const at::Tensor& s,
                   const at::Tensor& mask, const CrossbarParams& p, bool training,
                   at::Tensor& grad_x, at::Tensor& grad_w,
                   const std::optional<at::Tensor>& noise_weight) {
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const int64_t S = out_scales.size(0), tin = split_count(K, p.max_in);
  const auto tiles = make_tiles(K, N, p);
  const T step = static_cast<T>(2.0 * p.inp_bound * p.inp_res);
  const T bound = static_cast<T>(p.inp_bound);
  const bool scaling = p.noise_management != NoiseManagement::kNone ||
                       p.bound_management != BoundManagement::kNone;
  const T out_scale = static_cast<T>(p.out_scale);
  const T* gy = grad_y.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  const T* sc = out_scales.data_ptr<T>();
  const uint8_t* mk = reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>());  // vectorises, bool does not
  const auto opt = x.options();
  const CrossbarParams read_params = backward_read_params(p);
  for (const auto& t : tiles) {
    const int64_t kt = t.k1 - t.k0, nt = t.o1 - t.o0;
    const T* st = s.data_ptr<T>() + t.index * M;
    // G = dL/dy * (ADC clamp inactive) * periphery scales: the ADC is straight-through.
    at::Tensor g = at::empty({M, nt}, opt);
    T* gp = g.data_ptr<T>();
    at::parallel_for(0, M, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t m = b; m < e; ++m) {
        const uint8_t* mr = mk + (t.it * M + m) * N + t.o0;
        const T* gr = gy + (p.per_input_tile ? t.it * M * N : 0) + m * N + t.o0;
        T* out = gp + m * nt;
        for (int64_t n = 0; n < nt; ++n) out[n] = mr[n] != 0 ? gr[n] : T(0);
        for (int64_t j = 0; j < S; ++j) {  // the scale rows in forward order
          const T* scr = sc + (j * tin + t.it) * N + t.o0;
          for (int64_t n = 0; n < nt; ++n) out[n] = out[n] * scr[n];
        }
        // out_scale multiplies the output after the ADC: both gradients carry it once (the
        // weight gradient's operand xs below is scaled by 1/s only).
        if (out_scale != T(1)) {
          for (int64_t n = 0; n < nt; ++n) out[n] = out[n] * out_scale;
        }
      }
    });
    // The DAC is straight-through, masked where its clamp was active. With abs-max noise
    // management |x * s| <= 1, so a DAC range that holds the largest code needs no mask.
    const double largest_code = dac_quantize<double>(1.0, 2.0 * p.inp_bound * p.inp_res, 0.0);
    // Input asymmetry scales the gradient of negative DAC outputs: it rides on the same mask.
    const bool asymmetric = p.inp_asymmetry != 0.0;
    const T asym = static_cast<T>(1.0 - p.inp_asymmetry);
    // Stochastic rounding may round the largest input up to a code beyond the range.
    const bool dac_may_clamp =
        asymmetric || (p.inp_bound > 0.0 && (p.inp_sto_round ||
                                             !(p.noise_management == NoiseManagement::kAbsMax &&
                                               p.nm_thres == 0.0 && largest_code <= p.inp_bound)));
    const T inp_sigma = static_cast<T>(p.inp_noise);
    const int max_passes = p.bound_management == BoundManagement::kNone ? 1 : p.max_passes;
    at::Tensor xs, in_mask;
    // Input noise changes the weight gradient's operand and, with asymmetry, the DAC slope.
    if (grad_w.defined() || dac_may_clamp) {
      // xs: the quantised input scaled back by 1/s, the weight gradient's operand.
      xs = at::empty({M, kt}, opt);
      in_mask = dac_may_clamp ? at::empty({M, kt}, opt) : at::Tensor();
      T* xsp = xs.data_ptr<T>();
      T* imp = dac_may_clamp ? in_mask.data_ptr<T>() : nullptr;
      const bool plain_dac = !p.inp_sto_round && !(inp_sigma > T(0)) && !asymmetric;
      at::parallel_for(0, M, kGrain, [&](int64_t b, int64_t e) {
        std::vector<float> normals(inp_sigma > T(0) ? kt : 0);
        std::vector<float> offsets(p.inp_sto_round ? kt : 0);
        for (int64_t m = b; m < e; ++m) {
          const T sm = scaling ? st[m] : T(1);
          const T inv_s = back_scale<T>(p, sm);
          if (plain_dac) {  // the general loop below with its branches folded away: it vectorises
            const T* xr = xp + m * K + t.k0;
            T* xo = xsp + m * kt;
            for (int64_t k = 0; k < kt; ++k) xo[k] = dac_quantize<T>(xr[k] * sm, step, bound) * inv_s;
            if (imp) {
              T* io = imp + m * kt;
              for (int64_t k = 0; k < kt; ++k) io[k] = dac_passes_gradient<T>(xr[k] * sm, step, bound) ? T(1) : T(0);
            }
            continue;
          }
          if (inp_sigma > T(0) || p.inp_sto_round) {
            // The input noise of the row's accepted pass: the pass whose scale, computed as the
            // forward computes it (inv_a / reduction, reduction doubling in T), is s_m.
            bool unused = true;
            const T inv_a = nm_inverse_scale<T>(p, xp + m * K + t.k0, kt, &unused);
            int pass = 0;
            T reduction = T(1);
            for (int q = 0; q < max_passes; ++q, reduction *= T(2)) {
              if (inv_a / reduction == sm) {
                pass = q;
                break;
              }
            }
            if (inp_sigma > T(0)) input_noise(rng_value(rng, 0), rng_value(rng, 1), t, K, m, pass, normals.data());
            if (p.inp_sto_round) dac_round_offsets(rng_value(rng, 0), rng_value(rng, 1), t, K, m, pass, offsets.data());
          }
          for (int64_t k = 0; k < kt; ++k) {
            const T v = xp[m * K + t.k0 + k] * sm;
            T q = p.inp_sto_round ? dac_quantize_sto<T>(v, step, bound, offsets[k]) : dac_quantize<T>(v, step, bound);
            if (inp_sigma > T(0)) q = q + inp_sigma * static_cast<T>(normals[k]);
            const T slope = asymmetric && q < T(0) ? asym : T(1);
            q = asymmetric && q < T(0) ? q * asym : q;
            xsp[m * kt + k] = q * inv_s;
            if (imp) {
              bool inside;
              if (p.inp_sto_round) {  // the clamp saw the stochastically rounded value
                const T r = step > T(0) ? lf_rint(v / step + static_cast<T>(offsets[k])) * step : v;
                inside = !(bound > T(0)) || (r >= -bound && r <= bound);
              } else {
                inside = dac_passes_gradient<T>(v, step, bound);
              }
              imp[m * kt + k] = inside ? slope : T(0);
            }
          }
        }
      });
    }
    if (grad_x.defined()) {
      at::Tensor gx;
      const int64_t sample_rows = weight_noise_sample_rows(p, training);
      if (p.bwd_read) {
        gx = backward_read<T>(g, t, read_params, K, sample_rows, rng_value(rng, 0), rng_value(rng, 1),
                              [&](int64_t sample) {
                                return tile_weight<T>(weight, t, p, training, rng_value(rng, 0),
                                                      rng_value(rng, 1), noise_weight, sample);
                              });
      } else if (sample_rows > 0) {  // each sample's rows through its own noisy weights
        gx = at::empty({M, kt}, opt);
        for (int64_t m0 = 0; m0 < M; m0 += sample_rows) {
          const at::Tensor w = tile_weight<T>(weight, t, p, training, rng_value(rng, 0), rng_value(rng, 1),
                                              noise_weight, m0 / sample_rows);
          at::Tensor out = gx.narrow(0, m0, sample_rows);
          at::mm_out(out, g.narrow(0, m0, sample_rows), w);
        }
      } else {
        gx = at::mm(g, tile_weight<T>(weight, t, p, training, rng_value(rng, 0), rng_value(rng, 1), noise_weight));
      }
      if (dac_may_clamp) gx.mul_(in_mask);
      if (tiles.size() == 1) {
        grad_x = gx;
      } else {
        grad_x.slice(1, t.k0, t.k1).add_(gx);
      }
    }
    if (grad_w.defined()) {
      grad_w.slice(0, t.o0, t.o1).slice(1, t.k0, t.k1).copy_(at::mm(g.t(), xs));
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> crossbar_mvm_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& out_scales, const at::Tensor& rng, const at::Tensor& scales,
    const at::Tensor& mask, const CrossbarParams& params, bool training, bool need_grad_x,
    bool need_grad_weight, const std::optional<at::Tensor>& noise_weight) {
  const bool one_tile = split_count(x.size(1), params.max_in) == 1 &&
                        split_count(weight.size(0), params.max_out) == 1;
  // One tile: the tile's GEMM is the whole gradient (no zero fill, no accumulation).
  at::Tensor grad_x = need_grad_x ? (one_tile ? at::empty({0}, x.options()) : at::zeros_like(x))
                                  : at::Tensor();
  at::Tensor grad_w = need_grad_weight
                          ? (one_tile ? at::empty_like(weight) : at::zeros_like(weight))
                          : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "crossbar_mvm_backward", [&] {
    backward_impl<scalar_t>(grad_y, x, weight, out_scales, rng, scales, mask, params, training,
                            grad_x, grad_w, noise_weight);
  });
  return {grad_x, grad_w};
}

}  // namespace lorafusion::cpu
