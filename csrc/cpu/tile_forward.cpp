// The CPU forward of one crossbar tile: see tile_forward.h. Every step keeps the order of
// floating-point operations of docs/numerics.md, "The crossbar MVM" (this file is compiled with
// -ffp-contract=off, like every CPU source: no implicit FMA).
#include "tile_forward.h"

#include <ATen/Parallel.h>
#include <lorafusion/philox.h>
#include <lorafusion/quant.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>

#include "normals.h"

namespace lorafusion::cpu {
namespace {

// Bound-test probe (see pass_must_fail): calls of at least kProbeMinRows tokens probe
// max(kProbeMinProbe, M / kProbeFraction) rows (under 1% of the pass's GEMM), then at most
// kProbeColumns output columns over every row when a probed row reached kProbeColumnsFrom of
// the ADC bound.
constexpr int64_t kProbeMinRows = 256, kProbeMinProbe = 16, kProbeFraction = 128, kProbeColumns = 8;
constexpr double kProbeColumnsFrom = 0.7;

// One-hot inputs (the drift-compensation read-out's eye(K), and any xq whose rows hold at most
// one non-zero): col[i] = the column of row i's non-zero, -1 for an all-zero row. False (and
// col undefined) as soon as a row holds two non-zeros, so an ordinary input costs a few reads.
template <typename T>
bool one_hot_rows(const T* xq, int64_t mp, int64_t kt, std::vector<int64_t>& col) {
  col.assign(mp, -1);
  for (int64_t i = 0; i < mp; ++i) {
    const T* r = xq + i * kt;
    for (int64_t j = 0; j < kt; ++j) {
      if (r[j] != T(0)) {
        if (col[i] >= 0) return false;
        col[i] = j;
      }
    }
  }
  return true;
}

template <typename T>
bool all_finite(const at::Tensor& w) {
  const T* p = w.data_ptr<T>();
  const int64_t rows = w.size(0), cols = w.size(1), ld = w.stride(0);
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < cols; ++k)
      if (!std::isfinite(p[n * ld + k])) return false;
  return true;
}

// ybuf [mp, nt] = xq @ W^T for one-hot rows, without the GEMM: each output is the sum of exact
// zeros and one product, i.e. that product rounded once, and + 0 turns a -0 product into the
// +0 the GEMM's zero-started sum gives. Bit-equal to the GEMM for finite W (a 0 * inf in the
// GEMM would be NaN: the caller checks W first).
template <typename T>
void one_hot_mvm(const T* xq, int64_t kt, const std::vector<int64_t>& col, const at::Tensor& w, T* ybuf) {
  const T* wp = w.data_ptr<T>();
  const int64_t nt = w.size(0), ld = w.stride(0), mp = static_cast<int64_t>(col.size());
  at::parallel_for(0, mp, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T* y = ybuf + i * nt;
      if (col[i] < 0) {
        std::fill(y, y + nt, T(0));
        continue;
      }
      const T v = xq[i * kt + col[i]];
      const T* wc = wp + col[i];
      for (int64_t n = 0; n < nt; ++n) y[n] = v * wc[n * ld] + T(0);
    }
  });
}

}  // namespace

template <typename T>
const T* TileForward<T>::tile_input(const TileRange& t, int64_t m, T* buf) const {
  const T* xr = x + m * K + t.k0;
  if (!input_range) return xr;
  // AIHWKIT: clamp(x, min=-|r|, max=|r|) (r.item() as the bounds), then x / r (the tensor).
  const T r = input_range[t.index];  // index = it * tout + ot
  const T bound = std::abs(r);
  const int64_t kt = t.k1 - t.k0;
  for (int64_t k = 0; k < kt; ++k) buf[k] = clamp_nan<T>(xr[k], -bound, bound) / r;
  return buf;
}

// Quantised inputs of `rows` (row indices into x) at per-row scale s into xq [rows, Kt];
// with `norms` also each row's (sum |xq|, sum xq^2), taken while the row is in cache.
// Whether tile t reads the identity, x = eye(K) as the drift-compensation read-out feeds it
// (one tile, M = K rows): row m's quantised input is then DAC(s_m) at column m and exact
// zeros elsewhere, known without the K^2 passes of noise management, DAC and the one-hot
// scan. Only where those passes would give exactly that: no input range, input noise,
// stochastic rounding, per-sample weights or IR drop. One read of x, stopping at the first
// entry off the identity (an ordinary input costs a few reads).
template <typename T>
bool TileForward<T>::identity_input(const TileRange& t) const {
  const int64_t kt = t.k1 - t.k0;
  if (tin != 1 || t.k0 != 0 || kt != K || M != K || input_range != nullptr || p.inp_noise > 0.0 ||
      p.inp_sto_round || sample_rows > 0 || ir_drop)
    return false;
  for (int64_t m = 0; m < M; ++m) {
    const T* r = x + m * K;
    for (int64_t k = 0; k < K; ++k)
      if (!(r[k] == (k == m ? T(1) : T(0)))) return false;
  }
  return true;
}

template <typename T>
void TileForward<T>::quantize(const TileRange& t, const std::vector<int64_t>& rows, int pass, const T* s, T* xq,
                              std::vector<std::pair<T, T>>* norms, bool identity) const {
  const int64_t kt = t.k1 - t.k0;
  if (identity) {
    // The rows of eye(K) through the DAC loop below: 0 * s_m rounds to +0, 1 * s_m is s_m,
    // no asymmetry applies to a positive value; the norms of one non-zero are exact.
    const T step = dac_step(), bound = static_cast<T>(p.inp_bound);
    const bool scaling = p.noise_management != NoiseManagement::kNone ||
                         p.bound_management != BoundManagement::kNone;
    at::parallel_for(0, static_cast<int64_t>(rows.size()), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t m = rows[i];
        T* q = xq + i * kt;
        std::fill(q, q + kt, T(0));
        q[m] = dac_quantize<T>(scaling ? T(1) * s[m] : T(1), step, bound);
        if (norms) (*norms)[i] = {std::abs(q[m]), q[m] * q[m]};
      }
    });
    return;
  }
  const T inp_sigma = static_cast<T>(p.inp_noise);
  const T step = dac_step(), bound = static_cast<T>(p.inp_bound);
  const bool scaling = p.noise_management != NoiseManagement::kNone ||
                       p.bound_management != BoundManagement::kNone;
  const bool asymmetric = p.inp_asymmetry != 0.0;
  const T asym = static_cast<T>(1.0 - p.inp_asymmetry);
  const bool ranged = input_range != nullptr;
  const T r = ranged ? input_range[t.index] : T(1);
  const T r_bound = std::abs(r);
  at::parallel_for(0, static_cast<int64_t>(rows.size()), kGrain, [&](int64_t b, int64_t e) {
    std::vector<float> normals(inp_sigma > T(0) ? kt : 0);
    std::vector<float> offsets(p.inp_sto_round ? kt : 0);
    for (int64_t i = b; i < e; ++i) {
      const int64_t m = rows[i];
      T* q = xq + i * kt;
      const T sm = s[m];
      if (p.inp_sto_round) {
        // With input ranges the tile's input lands in q first; the loop reads and writes q[k]
        // at the same k, so it may run in place.
        const T* xr = tile_input(t, m, q);
        dac_round_offsets(seed, offset, t, K, m, pass, offsets.data());
        const T f = scaling ? sm : T(1);
        for (int64_t k = 0; k < kt; ++k) q[k] = dac_quantize_sto<T>(xr[k] * f, step, bound, offsets[k]);
      } else if (ranged) {
        // The range in the same loop as the DAC (tile_input's arithmetic): one pass over the row.
        const T* xr = x + m * K + t.k0;
        if (scaling) {
          for (int64_t k = 0; k < kt; ++k) q[k] = dac_quantize<T>((clamp_nan<T>(xr[k], -r_bound, r_bound) / r) * sm, step, bound);
        } else {
          for (int64_t k = 0; k < kt; ++k) q[k] = dac_quantize<T>(clamp_nan<T>(xr[k], -r_bound, r_bound) / r, step, bound);
        }
      } else if (scaling) {
        const T* xr = x + m * K + t.k0;
        for (int64_t k = 0; k < kt; ++k) q[k] = dac_quantize<T>(xr[k] * sm, step, bound);
      } else {
        const T* xr = x + m * K + t.k0;
        for (int64_t k = 0; k < kt; ++k) q[k] = dac_quantize<T>(xr[k], step, bound);
      }
      if (inp_sigma > T(0)) {  // AIHWKIT: after the DAC clamp, before the asymmetry
        input_noise(seed, offset, t, K, m, pass, normals.data());
        for (int64_t k = 0; k < kt; ++k) q[k] = q[k] + inp_sigma * static_cast<T>(normals[k]);
      }
      if (asymmetric) {  // AIHWKIT: after the DAC clamp, negative inputs * (1 - inp_asymmetry)
        for (int64_t k = 0; k < kt; ++k) q[k] = q[k] < T(0) ? q[k] * asym : q[k];
      }
      if (norms) {
        // Any summation order will do (a ranking and a bound), so let it vectorise.
        T l1 = T(0), l2 = T(0);
#pragma omp simd reduction(+ : l1, l2)
        for (int64_t k = 0; k < kt; ++k) {
          l1 += std::abs(q[k]);
          l2 += q[k] * q[k];
        }
        (*norms)[i] = {l1, l2};
      }
    }
  });
}

// Whether probing can skip passes of this call: iterative-global bound management discards
// a whole pass when one output saturates, so a pass that is certain to fail need not be
// computed. Small batches are not worth a probe; injected test noise has no known bound.
template <typename T>
bool TileForward<T>::probe_enabled() const {
  // Output asymmetry rescales outputs before the ADC: the probe's bound would not hold.
  // Input noise has no bound either.
  return p.bound_management == BoundManagement::kIterativeGlobal && p.max_passes > 1 &&
         p.out_bound > 0.0 && noise_out == nullptr && M >= kProbeMinRows && p.out_asymmetry == 0.0 &&
         p.inp_noise == 0.0 && !p.inp_sto_round && !p.out_sto_round && sample_rows == 0 && !ir_drop;
}

// True when the pass with quantised inputs xq [M, Kt] certainly fails the global bound test,
// judged on a small part of its GEMM: first the rows most likely to saturate (largest
// ||xq||_2), then, over every row, the output columns that came out largest in those rows
// (saturation concentrates in a few outlier features). An output certainly saturates when
// its magnitude exceeds the ADC bound by more than a full ADC step plus every difference the
// real pass could make: the largest output noise (kNormalMaxAbs sigma) and the GEMM's
// summation order (2 gamma_K sum|xq| max|W|, Higham's bound for two orders). The pass's
// outputs would then be discarded anyway; its noise is keyed by the pass index, so skipping
// it leaves every later pass unchanged.
template <typename T>
bool TileForward<T>::pass_must_fail(const TileRange& t, const at::Tensor& xq, const at::Tensor& w_tile,
                                    const std::vector<std::pair<T, T>>& norms, double w_absmax) const {
  const int64_t kt = t.k1 - t.k0;
  const double unit = std::numeric_limits<T>::epsilon() / 2;
  const double kt_u = static_cast<double>(kt) * unit;
  if (!(kt_u < 0.01) || !(w_absmax < std::numeric_limits<double>::infinity())) return false;
  ProbeLimit lim;
  lim.kt_u = kt_u;
  lim.gamma2 = 2.0 * kt_u / (1.0 - kt_u);
  lim.noise = p.out_noise * static_cast<double>(kNormalMaxAbs);
  lim.limit = (p.out_bound + 2.0 * p.out_bound * p.out_res) * (1.0 + 1e-6);
  lim.w_absmax = w_absmax;
  std::vector<double> column_peak;
  if (probe_rows_fail(t, xq, w_tile, norms, lim, column_peak)) return true;
  // No probed row is over; a column probe is worth its cost only when some came close.
  const double peak = *std::max_element(column_peak.begin(), column_peak.end());
  if (!(peak >= kProbeColumnsFrom * p.out_bound)) return false;
  return probe_columns_fail(t, xq, w_tile, norms, lim, column_peak);
}

// The row probe: the GEMM of the rows with the largest ||xq||_2. True when one of their
// outputs certainly saturates; otherwise column_peak [Nt] holds each column's largest |y|.
template <typename T>
bool TileForward<T>::probe_rows_fail(const TileRange& t, const at::Tensor& xq, const at::Tensor& w_tile,
                                     const std::vector<std::pair<T, T>>& norms, const ProbeLimit& lim,
                                     std::vector<double>& column_peak) const {
  const int64_t nt = t.o1 - t.o0;
  const at::TensorOptions index_options = at::TensorOptions().dtype(at::kLong);
  const int64_t rows = std::min<int64_t>(M, std::max<int64_t>(kProbeMinProbe, M / kProbeFraction));
  std::vector<int64_t> order(M);
  for (int64_t m = 0; m < M; ++m) order[m] = m;
  std::nth_element(order.begin(), order.begin() + (rows - 1), order.end(),
                   [&](int64_t a, int64_t b) { return norms[a].second > norms[b].second; });
  order.resize(rows);
  // y^T [nt, rows] = W xq[order]^T: MKL's call costs about a quarter less in this orientation
  // than xq[order] W^T (2.7 % against 3.7 % of the pass's GEMM on 2048x384->1536, Intel host).
  const at::Tensor yt = at::mm(w_tile, xq.index_select(0, at::tensor(order, index_options)).t());
  const T* y = yt.data_ptr<T>();
  std::vector<double> need(rows);
  for (int64_t i = 0; i < rows; ++i) need[i] = lim.threshold(static_cast<double>(norms[order[i]].first));
  column_peak.assign(nt, 0.0);
  for (int64_t n = 0; n < nt; ++n) {
    for (int64_t i = 0; i < rows; ++i) {
      const double v = std::abs(static_cast<double>(y[n * rows + i]));
      if (v > need[i]) return true;
      column_peak[n] = std::max(column_peak[n], v);
    }
  }
  return false;
}

// The column probe: the kProbeColumns columns with the largest peaks in the row probe, over
// every row. True when one of those outputs certainly saturates.
template <typename T>
bool TileForward<T>::probe_columns_fail(const TileRange& t, const at::Tensor& xq, const at::Tensor& w_tile,
                                        const std::vector<std::pair<T, T>>& norms, const ProbeLimit& lim,
                                        const std::vector<double>& column_peak) const {
  const int64_t kt = t.k1 - t.k0, nt = t.o1 - t.o0;
  const int64_t cols = std::min<int64_t>(nt, kProbeColumns);
  std::vector<int64_t> by_peak(nt);
  for (int64_t n = 0; n < nt; ++n) by_peak[n] = n;
  std::nth_element(by_peak.begin(), by_peak.begin() + (cols - 1), by_peak.end(),
                   [&](int64_t a, int64_t b) { return column_peak[a] > column_peak[b]; });
  // A few dot products per row, in cache: a BLAS call this skinny costs several times more.
  // w_tile may be a transposed view (the backward read's W~^T): gather its rows by stride.
  std::vector<T> wc(cols * kt);
  const T* w = w_tile.data_ptr<T>();
  const int64_t ld0 = w_tile.stride(0), ld1 = w_tile.stride(1);
  for (int64_t j = 0; j < cols; ++j) {
    const T* row = w + by_peak[j] * ld0;
    if (ld1 == 1) {
      std::copy(row, row + kt, wc.begin() + j * kt);
    } else {
      for (int64_t k = 0; k < kt; ++k) wc[j * kt + k] = row[k * ld1];
    }
  }
  // Rows that cannot reach the bound in these columns need no dot products: by Cauchy-Schwarz
  // |y| <= ||xq_m|| max_j ||W_j||, and a computed dot exceeds the exact one by less than the
  // rounding allowance in threshold(), so a row whose bound is within the ADC limit is never
  // over (sum xq^2, summed in T, inflated by its own worst-case rounding).
  double w_norm = 0.0;
  for (int64_t j = 0; j < cols; ++j) {
    double ss = 0.0;
    for (int64_t k = 0; k < kt; ++k) ss += static_cast<double>(wc[j * kt + k]) * static_cast<double>(wc[j * kt + k]);
    w_norm = std::max(w_norm, std::sqrt(ss));
  }
  w_norm *= 1.0 + 1e-9;
  const T* xqp = xq.data_ptr<T>();
  std::atomic<bool> over{false};
  at::parallel_for(0, M, 64, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e && !over.load(std::memory_order_relaxed); ++m) {
      const double x_norm = std::sqrt(static_cast<double>(norms[m].second) * (1.0 + 2.0 * lim.kt_u));
      if (x_norm * w_norm <= lim.limit) continue;
      const double need = lim.threshold(static_cast<double>(norms[m].first));
      const T* xr = xqp + m * kt;
      for (int64_t j = 0; j < cols; ++j) {
        const T* wr = wc.data() + j * kt;
        T dot = T(0);
#pragma omp simd reduction(+ : dot)
        for (int64_t k = 0; k < kt; ++k) dot += xr[k] * wr[k];
        if (std::abs(static_cast<double>(dot)) > need) {
          over.store(true, std::memory_order_relaxed);
          break;
        }
      }
    }
  });
  return over.load();
}

// Row m of tile t's clamp mask, or null without one.
template <typename T>
uint8_t* TileForward<T>::mask_row(const TileRange& t, int64_t m) const {
  return mask ? mask + (t.it * M + m) * N + t.o0 : nullptr;
}

// Row m of the injected output noise of tile t at `pass`.
template <typename T>
const T* TileForward<T>::injected_noise_row(const TileRange& t, int64_t m, int pass) const {
  return noise_out + ((pass * tin + t.it) * M + m) * N + t.o0;
}

// The output noise (standard normals) of row m of tile t at `pass`, drawn into `normals`.
template <typename T>
const float* TileForward<T>::output_normals(const TileRange& t, int64_t m, int pass, std::vector<float>& normals) const {
  const int64_t nt = t.o1 - t.o0;
  const NoiseKey key = make_noise_key(seed, offset, out_stream, static_cast<uint32_t>(pass),
                                      static_cast<uint32_t>(noise_tile >= 0 ? noise_tile : t.it));
  normals.resize(nt);
  fill_normals(key, static_cast<uint64_t>(m) * (noise_ld > 0 ? noise_ld : N) + noise_col0 + t.o0, nt,
               normals.data());
  return normals.data();
}

// Output noise + ADC + bound test of GEMM row `src` (row m of the tile at `pass`) into
// `dst` (may alias src); returns whether no ADC clamp was active.
template <typename T>
bool TileForward<T>::adc_row(const TileRange& t, int64_t m, int pass, const T* src, T* dst,
                             std::vector<float>& normals) const {
  const int64_t nt = t.o1 - t.o0;
  const T step = adc_step();
  const T bound = p.out_bound > 0 ? static_cast<T>(p.out_bound)
                                  : std::numeric_limits<T>::infinity();
  const T sigma = static_cast<T>(p.out_noise);
  if (p.out_asymmetry != 0.0) {  // AIHWKIT: negative outputs * (1 - out_asymmetry), then noise
    const T asym = static_cast<T>(1.0 - p.out_asymmetry);
    for (int64_t n = 0; n < nt; ++n) dst[n] = src[n] < T(0) ? src[n] * asym : src[n];
    src = dst;
  }
  if (sigma > T(0)) {
    if (noise_out) {
      const T* nz = injected_noise_row(t, m, pass);
      for (int64_t n = 0; n < nt; ++n) dst[n] = src[n] + sigma * nz[n];
    } else {
      const float* nz = output_normals(t, m, pass, normals);
      for (int64_t n = 0; n < nt; ++n) dst[n] = src[n] + sigma * static_cast<T>(nz[n]);
    }
    src = dst;
  }
  int bad = 0;
  uint8_t* mr = mask_row(t, m);
  if (p.out_sto_round && step > T(0)) {
    // AIHWKIT's UniformQuantize with stochastic rounding: v / step + U(-1/2, 1/2), rounded.
    const NoiseKey key = make_noise_key(seed, offset, kStreamOutputRound, static_cast<uint32_t>(pass),
                                        static_cast<uint32_t>(t.index));
    normals.resize(nt);  // the output noise, if any, is already added: reuse its buffer
    fill_uniforms(key, static_cast<uint64_t>(m) * N + t.o0, nt, normals.data());
    for (int64_t n = 0; n < nt; ++n) {
      const T v = lf_rint(src[n] / step + static_cast<T>(normals[n])) * step;
      const bool inside = v <= bound && v >= -bound;
      if (mr) mr[n] = inside;
      bad |= !inside;
      dst[n] = clamp_nan<T>(v, -bound, bound);
    }
    return bad == 0;
  }
  if (mr) {
    for (int64_t n = 0; n < nt; ++n) {
      const T v = adc_round<T>(src[n], step);
      const bool inside = v <= bound && v >= -bound;
      mr[n] = inside;
      bad |= !inside;
      dst[n] = clamp_nan<T>(v, -bound, bound);
    }
  } else {
    for (int64_t n = 0; n < nt; ++n) {
      const T v = adc_round<T>(src[n], step);
      bad |= !(v <= bound && v >= -bound);
      dst[n] = clamp_nan<T>(v, -bound, bound);
    }
  }
  return bad == 0;
}

// Digital periphery of one row in place: v * fl(out_scale / s), then each scale row, then the bias.
template <typename T>
void TileForward<T>::periphery_row(const TileRange& t, T s_m, T* row, const T* bias) const {
  const int64_t nt = t.o1 - t.o0;
  const T inv_s = output_factor<T>(p, s_m);
  for (int64_t n = 0; n < nt; ++n) row[n] = row[n] * inv_s;
  for (int64_t j = 0; j < S; ++j) {
    const T* sc = out_scales + (j * tin + t.it) * N + t.o0;
    for (int64_t n = 0; n < nt; ++n) row[n] = row[n] * sc[n];
  }
  if (bias) {
    const T* b = bias + t.o0;
    for (int64_t n = 0; n < nt; ++n) row[n] = row[n] + b[n];
  }
}

// Whether a single-input-tile epilogue can run as one loop per row (fused_row): the common
// case, without the output asymmetry or stochastic rounding that reorder its steps.
template <typename T>
bool TileForward<T>::fused_epilogue() const {
  return tin == 1 && p.out_asymmetry == 0.0 && !p.out_sto_round && S <= 2;
}

// Output noise, ADC, bound test and periphery of GEMM row `src` (row m of the tile at
// `pass`) into `dst` (may alias src), in one loop: every element goes through the same
// rounded operations, in the same order, as adc_row followed by periphery_row, but is loaded
// and stored once (the separate loops each streamed the row through L1 again). Returns
// whether no ADC clamp was active.
template <typename T>
template <int kScales>
bool TileForward<T>::fused_row(const TileRange& t, int64_t m, int pass, T s_m, const T* src, T* dst,
                               std::vector<float>& normals) const {
  const int64_t nt = t.o1 - t.o0;
  const T step = adc_step();
  const T bound = p.out_bound > 0 ? static_cast<T>(p.out_bound) : std::numeric_limits<T>::infinity();
  const T sigma = static_cast<T>(p.out_noise);
  const T inv_s = output_factor<T>(p, s_m);
  const T* sc0 = kScales > 0 ? out_scales + t.it * N + t.o0 : nullptr;
  const T* sc1 = kScales > 1 ? out_scales + (tin + t.it) * N + t.o0 : nullptr;
  const T* b = bias ? bias + t.o0 : nullptr;
  uint8_t* mr = mask_row(t, m);
  const float* nz = nullptr;
  const T* nz_injected = nullptr;
  if (sigma > T(0)) {
    if (noise_out) {
      nz_injected = injected_noise_row(t, m, pass);
    } else {
      nz = output_normals(t, m, pass, normals);
    }
  }
  int bad = 0;
  // One loop body per variant, so that each vectorises without per-element branches.
  auto run = [&](auto noisy, auto masked, auto biased) {
    for (int64_t n = 0; n < nt; ++n) {
      T v = src[n];
      if constexpr (decltype(noisy)::value == 1) v = v + sigma * static_cast<T>(nz[n]);
      if constexpr (decltype(noisy)::value == 2) v = v + sigma * nz_injected[n];
      v = adc_round<T>(v, step);
      const bool inside = v <= bound && v >= -bound;
      if constexpr (decltype(masked)::value) mr[n] = inside;
      bad |= !inside;
      v = clamp_nan<T>(v, -bound, bound) * inv_s;
      if constexpr (kScales > 0) v = v * sc0[n];
      if constexpr (kScales > 1) v = v * sc1[n];
      if constexpr (decltype(biased)::value) v = v + b[n];
      dst[n] = v;
    }
  };
  using I0 = std::integral_constant<int, 0>;
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  auto with_noise = [&](auto masked, auto biased) {
    if (nz) {
      run(I1{}, masked, biased);
    } else if (nz_injected) {
      run(I2{}, masked, biased);
    } else {
      run(I0{}, masked, biased);
    }
  };
  auto with_mask = [&](auto biased) {
    if (mr) {
      with_noise(std::true_type{}, biased);
    } else {
      with_noise(std::false_type{}, biased);
    }
  };
  if (b) {
    with_mask(std::true_type{});
  } else {
    with_mask(std::false_type{});
  }
  return bad == 0;
}

// One pass of the epilogue over the GEMM rows `ybuf` of `rows`. With a single input tile
// the final values (periphery and bias included) go straight to y: a pass that fails the
// bound test is simply overwritten by the next one. With several input tiles the ADC
// values stay in ybuf until the tile's pass is accepted (see accumulate).
template <typename T>
void TileForward<T>::epilogue(const TileRange& t, const std::vector<int64_t>& rows, int pass, T* ybuf,
                              std::vector<uint8_t>& row_ok, const T* s, bool direct) const {
  const int64_t nt = t.o1 - t.o0;
  const bool fused = direct && fused_epilogue();
  at::parallel_for(0, static_cast<int64_t>(rows.size()), kGrain, [&](int64_t b, int64_t e) {
    std::vector<float> normals;
    for (int64_t i = b; i < e; ++i) {
      const int64_t m = rows[i];
      if (fused) {
        const T* src = ybuf + i * nt;
        T* dst = y + m * N + t.o0;
        row_ok[i] = S == 0   ? fused_row<0>(t, m, pass, s[m], src, dst, normals)
                    : S == 1 ? fused_row<1>(t, m, pass, s[m], src, dst, normals)
                             : fused_row<2>(t, m, pass, s[m], src, dst, normals);
        continue;
      }
      T* dst = direct ? y + m * N + t.o0 : ybuf + i * nt;
      row_ok[i] = adc_row(t, m, pass, ybuf + i * nt, dst, normals);
      if (direct) periphery_row(t, s[m], dst, bias);
    }
  });
}

// Several input tiles: add the accepted rows' periphery outputs into y.
template <typename T>
void TileForward<T>::accumulate(const TileRange& t, const std::vector<int64_t>& rows, T* ybuf,
                                const std::vector<uint8_t>* accept, const T* s) const {
  const int64_t nt = t.o1 - t.o0;
  at::parallel_for(0, static_cast<int64_t>(rows.size()), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (accept && !(*accept)[i]) continue;
      T* row = ybuf + i * nt;
      periphery_row(t, s[rows[i]], row, nullptr);
      T* dst = y + (p.per_input_tile ? t.it * M * N : 0) + rows[i] * N + t.o0;
      for (int64_t n = 0; n < nt; ++n) dst[n] = dst[n] + row[n];
    }
  });
}

// ybuf [rows, Nt] = xq @ W_s.T with each row's batch sample's noisy weights W_s: one GEMM per
// run of consecutive rows of one sample (`rows` is ascending).
template <typename T>
void TileForward<T>::sample_gemm(const at::Tensor& xq, const std::vector<int64_t>& rows, at::Tensor& ybuf,
                                 const std::function<at::Tensor(int64_t)>& sample_weight) const {
  const int64_t mp = static_cast<int64_t>(rows.size());
  for (int64_t i = 0; i < mp;) {
    const int64_t sample = rows[i] / sample_rows;
    int64_t j = i + 1;
    while (j < mp && rows[j] / sample_rows == sample) ++j;
    at::Tensor out = ybuf.narrow(0, i, j - i);
    at::mm_out(out, xq.narrow(0, i, j - i), sample_weight(sample).t());
    i = j;
  }
}

template <typename T>
IrDropParams TileForward<T>::ir_drop_params() const {
  return {p.ir_drop, p.ir_drop_rs, p.ir_drop_segments, p.ir_drop_time_steps,
          p.ir_drop_rows > 0 ? p.ir_drop_rows : K, p.ir_drop_v_read, p.ir_drop_sum,
          p.ir_drop_adc_frequency, p.ir_drop_g_max, p.ir_drop_g_min, p.inp_bound, p.inp_res};
}

// Noise management: each row's 1 / a into inv_a (fixed across passes; 1 without). Returns
// whether AIHWKIT's shortcut applies: no row of the tile has a != 0 (exact zeros out).
template <typename T>
bool TileForward<T>::noise_management_scales(const TileRange& t, std::vector<T>& inv_a, bool identity) const {
  const int64_t kt = t.k1 - t.k0;
  if (identity && (p.noise_management == NoiseManagement::kAbsMax || p.noise_management == NoiseManagement::kMax)) {
    // Every row of eye(K) has max = abs-max = 1: the scale of the row {1}.
    const T one = T(1);
    bool unused = true;
    std::fill(inv_a.begin(), inv_a.end(), nm_inverse_scale<T>(p, &one, 1, &unused));
    return false;
  }
  if (p.noise_management == NoiseManagement::kAbsMax || p.noise_management == NoiseManagement::kMax) {
    std::atomic<bool> any_nonzero{false};
    at::parallel_for(0, M, kGrain, [&](int64_t b, int64_t e) {
      bool nz = false;
      std::vector<T> ranged(input_range ? kt : 0);
      for (int64_t m = b; m < e; ++m) {
        bool row_nz = true;
        inv_a[m] = nm_inverse_scale<T>(p, tile_input(t, m, ranged.data()), kt, &row_nz);
        nz |= row_nz;
      }
      if (nz) any_nonzero.store(true, std::memory_order_relaxed);
    });
    // AIHWKIT's shortcut (every row's a == 0: zeros) is skipped when input noise is on.
    return !any_nonzero.load() && p.inp_noise <= 0.0;
  }
  if (p.noise_management == NoiseManagement::kConstant) {
    bool unused = true;
    std::fill(inv_a.begin(), inv_a.end(), nm_inverse_scale<T>(p, x, 0, &unused));
  }
  return false;
}

// AIHWKIT returns exact zeros (no noise) when the whole tile input is zero: one pass at scale
// 1, every ADC clamp counted active, and y = the bias (added here with a single input tile).
template <typename T>
void TileForward<T>::zero_tile(const TileRange& t, T* s_tile, int32_t* passes_tile) const {
  const bool direct = tin == 1;
  for (int64_t m = 0; m < M; ++m) {
    s_tile[m] = T(1);
    passes_tile[m] = 1;
    if (direct) {
      T* row = y + m * N + t.o0;
      std::fill(row, row + (t.o1 - t.o0), T(0));
      if (bias) std::copy(bias + t.o0, bias + t.o1, row);
    }
    if (mask) std::fill_n(mask_row(t, m), t.o1 - t.o0, uint8_t{0});
  }
}

// The pass's analog MVM of xq [rows, Kt] into ybuf [rows, Nt]: the IR-drop model row by row,
// one GEMM per batch sample, the products alone for one-hot rows (one_hot_mvm), or one GEMM (straight into y when the tile's outputs are y's and
// every row runs, so that it is the same BLAS call as x @ W.T, the epilogue then in place).
template <typename T>
at::Tensor TileForward<T>::tile_mvm(const TileRange& t, const std::vector<int64_t>& rows, const at::Tensor& xq,
                                    const at::Tensor& w_tile,
                                    const std::function<at::Tensor(int64_t)>& sample_weight,
                                    const IrDropTile<T>* ir_tile, bool identity) const {
  const int64_t kt = t.k1 - t.k0, nt = t.o1 - t.o0;
  const int64_t mp = static_cast<int64_t>(rows.size());
  const bool into_y = tin == 1 && tout == 1 && mp == M;
  const auto xopt = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  if (ir_tile) {
    at::Tensor ybuf = into_y ? y_tensor : at::empty({mp, nt}, xopt);
    const T* xqp = xq.data_ptr<T>();
    T* yp = ybuf.data_ptr<T>();
    at::parallel_for(0, mp, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ir_tile->row(xqp + i * kt, yp + i * nt);
    });
    return ybuf;
  }
  if (sample_rows > 0) {
    at::Tensor ybuf = into_y ? y_tensor : at::empty({mp, nt}, xopt);
    sample_gemm(xq, rows, ybuf, sample_weight);
    return ybuf;
  }
  // One-hot rows (the identity read-out): the products alone, bit-equal to the GEMM, K times
  // fewer operations.
  std::vector<int64_t> col;
  bool one_hot = false;
  if (w_tile.dim() == 2 && w_tile.stride(1) == 1) {
    if (identity) {  // row i holds its one non-zero (if the DAC kept one) at column rows[i]
      const T* q = xq.data_ptr<T>();
      col.resize(mp);
      for (int64_t i = 0; i < mp; ++i) col[i] = q[i * kt + rows[i]] != T(0) ? rows[i] : -1;
      one_hot = true;
    } else {
      one_hot = one_hot_rows(xq.data_ptr<T>(), mp, kt, col);
    }
  }
  if (one_hot && all_finite<T>(w_tile)) {
    at::Tensor ybuf = into_y ? y_tensor : at::empty({mp, nt}, xopt);
    one_hot_mvm(xq.data_ptr<T>(), kt, col, w_tile, ybuf.data_ptr<T>());
    return ybuf;
  }
  if (into_y) {
    at::Tensor ybuf = y_tensor;
    at::mm_out(ybuf, xq, w_tile.t());
    return ybuf;
  }
  return at::mm(xq, w_tile.t());
}

// Bound management after a pass's epilogue: the rows whose outputs are final are kept (added
// into y with several input tiles); `rows` is left with those that run again, scaled down.
// Per row, each row that saturated runs again; globally, every row does when one saturated.
// The last pass is accepted as it is.
template <typename T>
void TileForward<T>::settle_pass(const TileRange& t, std::vector<int64_t>& rows, const std::vector<uint8_t>& row_ok,
                                 bool last, T* ybuf, const T* s_tile) const {
  const bool direct = tin == 1;
  const int64_t mp = static_cast<int64_t>(rows.size());
  if (p.bound_management == BoundManagement::kIterativePerRow) {
    std::vector<uint8_t> accept(mp);
    std::vector<int64_t> pending;
    for (int64_t i = 0; i < mp; ++i) {
      accept[i] = row_ok[i] || last;
      if (!accept[i]) pending.push_back(rows[i]);
    }
    if (!direct) accumulate(t, rows, ybuf, &accept, s_tile);
    rows.swap(pending);
    return;
  }
  bool ok = true;
  for (uint8_t r : row_ok) ok &= r != 0;
  if (ok || last || p.bound_management == BoundManagement::kNone) {
    if (!direct) accumulate(t, rows, ybuf, nullptr, s_tile);
    rows.clear();
  }
}

// The bound-management loop: per pass, the rows still to run are scaled by 1 / reduction
// (doubling each pass), quantised, probed (a pass that certainly fails is skipped), put
// through the tile's MVM and the epilogue, then settled.
template <typename T>
void TileForward<T>::run_tile(const TileRange& t, const at::Tensor& w_tile,
                              const std::function<at::Tensor(int64_t)>& sample_weight) const {
  const int64_t kt = t.k1 - t.k0, nt = t.o1 - t.o0;
  std::vector<T> inv_a(M, T(1));
  const bool identity = identity_input(t);
  const bool all_zero = noise_management_scales(t, inv_a, identity);
  T* s_tile = s_out + t.index * M;
  int32_t* passes_tile = passes + t.index * M;
  if (all_zero) {
    zero_tile(t, s_tile, passes_tile);
    return;
  }
  const int max_passes = p.bound_management == BoundManagement::kNone ? 1 : p.max_passes;
  std::vector<int64_t> rows(M);
  for (int64_t m = 0; m < M; ++m) rows[m] = m;
  const auto xopt = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  const bool probe = probe_enabled();
  std::vector<std::pair<T, T>> norms(probe ? M : 0);
  double w_absmax = -1.0;  // max|W| of the tile, taken at the first probe
  const at::Tensor xq_all = at::empty({M, kt}, xopt);  // later passes use its first rows
  std::optional<IrDropTile<T>> ir_tile;
  if (ir_drop) ir_tile.emplace(ir_drop_params(), w_tile.data_ptr<T>(), nt, kt);
  T reduction = T(1);
  for (int pass = 0; pass < max_passes && !rows.empty(); ++pass, reduction *= T(2)) {
    const int64_t mp = static_cast<int64_t>(rows.size());
    for (int64_t m : rows) {
      // AIHWKIT: scale = (1 / a) / reduction, both rounded.
      s_tile[m] = inv_a[m] / reduction;
      passes_tile[m] = pass + 1;
    }
    const at::Tensor xq = xq_all.narrow(0, 0, mp);
    const bool probe_pass = probe && pass + 1 < max_passes;
    quantize(t, rows, pass, s_tile, xq.data_ptr<T>(), probe_pass ? &norms : nullptr, identity);
    if (probe_pass) {
      if (w_absmax < 0.0) {
        w_absmax = static_cast<double>(row_absmax<T>(w_tile.data_ptr<T>(), w_tile.numel()));
      }
      if (pass_must_fail(t, xq, w_tile, norms, w_absmax)) continue;
    }
    const at::Tensor ybuf = tile_mvm(t, rows, xq, w_tile, sample_weight, ir_tile ? &*ir_tile : nullptr, identity);
    T* yb = ybuf.data_ptr<T>();
    std::vector<uint8_t> row_ok(mp, 1);
    epilogue(t, rows, pass, yb, row_ok, s_tile, tin == 1);
    settle_pass(t, rows, row_ok, pass + 1 == max_passes, yb, s_tile);
  }
}

template struct TileForward<float>;
template struct TileForward<double>;

}  // namespace lorafusion::cpu
