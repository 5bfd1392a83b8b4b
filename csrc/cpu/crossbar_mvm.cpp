// CPU implementation of the crossbar MVM: per tile, one quantised input per pass, the GEMM
// (ATen's, so that the result is bit-identical to AIHWKIT's `x @ W.T`), then one fused pass
// for output noise, ADC, the bound test and the digital periphery.
#include "crossbar_mvm.h"
#include "normals.h"

#include <ATen/Parallel.h>
#include <lorafusion/philox.h>
#include <lorafusion/quant.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <limits>
#include <vector>

namespace lorafusion::cpu {
namespace {

constexpr int64_t kGrain = 16;  // rows per parallel chunk
// Bound-test probe (see pass_must_fail): calls of at least kProbeMinRows tokens probe
// max(kProbeMinProbe, M / kProbeFraction) rows (about 3% of the pass's GEMM), then at most
// kProbeColumns output columns over every row when a probed row reached kProbeColumnsFrom of
// the ADC bound.
constexpr int64_t kProbeMinRows = 256, kProbeMinProbe = 16, kProbeFraction = 32, kProbeColumns = 8;
constexpr double kProbeColumnsFrom = 0.7;

struct TileRange {
  int64_t k0, k1, o0, o1;
  int64_t it;  // input-tile index (the tiles whose outputs are summed)
  int64_t index;
};

std::vector<TileRange> make_tiles(int64_t K, int64_t N, const CrossbarParams& p) {
  const int64_t tin = split_count(K, p.max_in), tout = split_count(N, p.max_out);
  std::vector<TileRange> tiles;
  for (int64_t it = 0; it < tin; ++it) {
    for (int64_t ot = 0; ot < tout; ++ot) {
      tiles.push_back({split_start(K, tin, it), split_start(K, tin, it + 1),
                       split_start(N, tout, ot), split_start(N, tout, ot + 1), it,
                       it * tout + ot});
    }
  }
  return tiles;
}

uint64_t rng_value(const at::Tensor& rng, int64_t i) {
  return static_cast<uint64_t>(rng.data_ptr<int64_t>()[i]);
}

// max_k |row_k|, NaN if any element is NaN. On the IEEE bit patterns of |v| (sign cleared)
// unsigned order is value order and every NaN is above +inf, so one unsigned max — which
// vectorises, unlike a float max that must keep NaN — gives both.
template <typename T>
T row_absmax(const T* row, int64_t n) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr Bits kMagnitude = ~Bits{0} >> 1;
  constexpr Bits kInf = static_cast<Bits>(sizeof(T) == 4 ? 0x7F800000ull : 0x7FF0000000000000ull);
  Bits m = 0;
  for (int64_t k = 0; k < n; ++k) {
    Bits b;
    std::memcpy(&b, row + k, sizeof(T));
    b &= kMagnitude;
    m = b > m ? b : m;
  }
  if (m > kInf) return std::numeric_limits<T>::quiet_NaN();
  T v;
  std::memcpy(&v, &m, sizeof(T));
  return v;
}

// max_k row_k (signed), NaN if any element is NaN (torch's max), for MAX noise management.
template <typename T>
T row_max(const T* row, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
  bool nan = false;
  for (int64_t k = 0; k < n; ++k) {
    const T v = row[k];
    nan |= v != v;
    m = v > m ? v : m;
  }
  return nan ? std::numeric_limits<T>::quiet_NaN() : m;
}

// The tile's weights as the crossbar sees them: a contiguous [No, Kt] block, plus the
// ADD_NORMAL modifier noise (std * max|W_tile| * N(0,1)) when training.
template <typename T>
at::Tensor tile_weight(const at::Tensor& weight, const TileRange& t, const CrossbarParams& p,
                       bool training, uint64_t seed, uint64_t offset,
                       const std::optional<at::Tensor>& noise_weight) {
  const int64_t N = weight.size(0), K = weight.size(1);
  at::Tensor w = weight;
  if (t.k0 != 0 || t.k1 != K || t.o0 != 0 || t.o1 != N) {
    w = weight.slice(0, t.o0, t.o1).slice(1, t.k0, t.k1).contiguous();
  }
  if (!training || (p.modifier_std <= 0.0 && p.modifier_res <= 0.0 && p.modifier_mult_std <= 0.0)) return w;
  if (p.modifier_mult_std > 0.0) {
    // AIHWKIT MULT_NORMAL: noise = (W * std) * randn; W~ = W + noise (no max|W| involved).
    const T sd = static_cast<T>(p.modifier_mult_std);
    at::Tensor out = at::empty_like(w);
    const int64_t no = w.size(0), kt = w.size(1);
    const T* src = w.data_ptr<T>();
    T* dst = out.data_ptr<T>();
    const NoiseKey key = make_noise_key(seed, offset, kStreamWeight, 0, 0);
    const T* injected = noise_weight ? noise_weight->data_ptr<T>() : nullptr;
    at::parallel_for(0, no, 4, [&](int64_t begin, int64_t end) {
      std::vector<float> normals(kt);
      for (int64_t o = begin; o < end; ++o) {
        const int64_t go = t.o0 + o;
        if (!injected) fill_normals(key, static_cast<uint64_t>(go) * K + t.k0, kt, normals.data());
        for (int64_t k = 0; k < kt; ++k) {
          const T n = injected ? injected[go * K + t.k0 + k] : static_cast<T>(normals[k]);
          const T v = src[o * kt + k];
          dst[o * kt + k] = v + (v * sd) * n;
        }
      }
    });
    return out;
  }
  const T wmax = row_absmax<T>(w.data_ptr<T>(), w.numel());
  if (p.modifier_res > 0.0) {
    // AIHWKIT DISCRETIZE (UniformQuantize): step = res * (2 max|W|), W~ = round(W / step) * step.
    const double res = p.modifier_res > 1.0 ? 1.0 / p.modifier_res : p.modifier_res;
    const T step = static_cast<T>(res) * (T(2) * wmax);
    at::Tensor out = at::empty_like(w);
    const T* src = w.data_ptr<T>();
    T* dst = out.data_ptr<T>();
    const int64_t n = w.numel();
    at::parallel_for(0, n, 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dst[i] = lf_rint(src[i] / step) * step;
    });
    return out;
  }
  // AIHWKIT: noise = (std * max|W|) * randn; W~ = W + noise, each product rounded in T.
  const T amp = static_cast<T>(static_cast<T>(p.modifier_std) * wmax);
  at::Tensor out = at::empty_like(w);
  const int64_t no = w.size(0), kt = w.size(1);
  const T* src = w.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  const NoiseKey key = make_noise_key(seed, offset, kStreamWeight, 0, 0);
  const T* injected = noise_weight ? noise_weight->data_ptr<T>() : nullptr;
  at::parallel_for(0, no, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> normals(kt);
    for (int64_t o = begin; o < end; ++o) {
      const int64_t go = t.o0 + o;
      if (!injected) {
        fill_normals(key, static_cast<uint64_t>(go) * K + t.k0, kt, normals.data());
      }
      for (int64_t k = 0; k < kt; ++k) {
        const T n = injected ? injected[go * K + t.k0 + k] : static_cast<T>(normals[k]);
        dst[o * kt + k] = src[o * kt + k] + amp * n;
      }
    }
  });
  return out;
}

template <typename T>
struct TileForward {
  const CrossbarParams& p;
  const T* x;
  int64_t M, K, N;
  const T* out_scales;  // [S, Tin, N]
  int64_t S, tin;
  const T* noise_out;  // [P, Tin, M, N] or null
  const T* bias;       // [N] or null
  int64_t tout;
  at::Tensor y_tensor;
  uint64_t seed, offset;
  bool need_aux;
  // outputs
  T* y;          // [M, N]
  T* s_out;      // [T, M]
  bool* mask;    // [Tin, M, N] or null
  int32_t* passes;  // [T, M]

  T dac_step() const { return static_cast<T>(2.0 * p.inp_bound * p.inp_res); }
  T adc_step() const { return static_cast<T>(2.0 * p.out_bound * p.out_res); }

  // Quantised inputs of `rows` (row indices into x) at per-row scale s into xq [rows, Kt];
  // with `norms` also each row's (sum |xq|, sum xq^2), taken while the row is in cache.
  void quantize(const TileRange& t, const std::vector<int64_t>& rows, const T* s, T* xq,
                std::vector<std::pair<T, T>>* norms) const {
    const int64_t kt = t.k1 - t.k0;
    const T step = dac_step(), bound = static_cast<T>(p.inp_bound);
    const bool scaling = p.noise_management != NoiseManagement::kNone ||
                         p.bound_management != BoundManagement::kNone;
    const bool asymmetric = p.inp_asymmetry != 0.0;
    const T asym = static_cast<T>(1.0 - p.inp_asymmetry);
    at::parallel_for(0, static_cast<int64_t>(rows.size()), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t m = rows[i];
        const T* xr = x + m * K + t.k0;
        T* q = xq + i * kt;
        const T sm = s[m];
        if (scaling) {
          for (int64_t k = 0; k < kt; ++k) q[k] = dac_quantize<T>(xr[k] * sm, step, bound);
        } else {
          for (int64_t k = 0; k < kt; ++k) q[k] = dac_quantize<T>(xr[k], step, bound);
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
  bool probe_enabled() const {
    // Output asymmetry rescales outputs before the ADC: the probe's bound would not hold.
    return p.bound_management == BoundManagement::kIterativeGlobal && p.max_passes > 1 &&
           p.out_bound > 0.0 && noise_out == nullptr && M >= kProbeMinRows && p.out_asymmetry == 0.0;
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
  bool pass_must_fail(const TileRange& t, const at::Tensor& xq, const at::Tensor& w_tile,
                      const std::vector<std::pair<T, T>>& norms, double w_absmax) const {
    const int64_t kt = t.k1 - t.k0, nt = t.o1 - t.o0;
    const double unit = std::numeric_limits<T>::epsilon() / 2;
    const double kt_u = static_cast<double>(kt) * unit;
    if (!(kt_u < 0.01) || !(w_absmax < std::numeric_limits<double>::infinity())) return false;
    const double gamma2 = 2.0 * kt_u / (1.0 - kt_u);
    const double noise = p.out_noise * static_cast<double>(kNormalMaxAbs);
    const double limit = (p.out_bound + 2.0 * p.out_bound * p.out_res) * (1.0 + 1e-6);
    // The smallest |y| of row m that certainly saturates; NaN norms give NaN: no decision.
    auto threshold = [&](int64_t m) {
      // sum|xq| was itself summed in T: inflate it by its own worst-case rounding.
      const double l1 = static_cast<double>(norms[m].first) * (1.0 + 2.0 * kt_u);
      return limit + gamma2 * l1 * w_absmax + noise;
    };
    const at::TensorOptions index_options = at::TensorOptions().dtype(at::kLong);

    const int64_t rows = std::min<int64_t>(M, std::max<int64_t>(kProbeMinProbe, M / kProbeFraction));
    std::vector<int64_t> order(M);
    for (int64_t m = 0; m < M; ++m) order[m] = m;
    std::nth_element(order.begin(), order.begin() + (rows - 1), order.end(),
                     [&](int64_t a, int64_t b) { return norms[a].second > norms[b].second; });
    order.resize(rows);
    const at::Tensor yr = at::mm(xq.index_select(0, at::tensor(order, index_options)), w_tile.t());
    const T* y = yr.data_ptr<T>();
    std::vector<double> column_peak(nt, 0.0);
    for (int64_t i = 0; i < rows; ++i) {
      const double need = threshold(order[i]);
      for (int64_t n = 0; n < nt; ++n) {
        const double v = std::abs(static_cast<double>(y[i * nt + n]));
        if (v > need) return true;
        column_peak[n] = std::max(column_peak[n], v);
      }
    }
    // No probed row is over; a column probe is worth its cost only when some came close.
    const double peak = *std::max_element(column_peak.begin(), column_peak.end());
    if (!(peak >= kProbeColumnsFrom * p.out_bound)) return false;
    const int64_t cols = std::min<int64_t>(nt, kProbeColumns);
    std::vector<int64_t> by_peak(nt);
    for (int64_t n = 0; n < nt; ++n) by_peak[n] = n;
    std::nth_element(by_peak.begin(), by_peak.begin() + (cols - 1), by_peak.end(),
                     [&](int64_t a, int64_t b) { return column_peak[a] > column_peak[b]; });
    // A few dot products per row, in cache: a BLAS call this skinny costs several times more.
    std::vector<T> wc(cols * kt);
    const T* w = w_tile.data_ptr<T>();
    for (int64_t j = 0; j < cols; ++j) std::copy(w + by_peak[j] * kt, w + (by_peak[j] + 1) * kt, wc.begin() + j * kt);
    const T* xqp = xq.data_ptr<T>();
    std::atomic<bool> over{false};
    at::parallel_for(0, M, 64, [&](int64_t b, int64_t e) {
      for (int64_t m = b; m < e && !over.load(std::memory_order_relaxed); ++m) {
        const double need = threshold(m);
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

  // Output noise + ADC + bound test of GEMM row `src` (row m of the tile at `pass`) into
  // `dst` (may alias src); returns whether no ADC clamp was active.
  bool adc_row(const TileRange& t, int64_t m, int pass, const T* src, T* dst,
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
        const T* nz = noise_out + ((pass * tin + t.it) * M + m) * N + t.o0;
        for (int64_t n = 0; n < nt; ++n) dst[n] = src[n] + sigma * nz[n];
      } else {
        const NoiseKey key = make_noise_key(seed, offset, kStreamOutput,
                                            static_cast<uint32_t>(pass), static_cast<uint32_t>(t.it));
        normals.resize(nt);
        fill_normals(key, static_cast<uint64_t>(m) * N + t.o0, nt, normals.data());
        const float* nz = normals.data();
        for (int64_t n = 0; n < nt; ++n) dst[n] = src[n] + sigma * static_cast<T>(nz[n]);
      }
      src = dst;
    }
    int bad = 0;
    bool* mr = mask ? mask + (t.it * M + m) * N + t.o0 : nullptr;
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

  // Digital periphery of one row in place: v * fl(1/s), then each scale row, then the bias.
  void periphery_row(const TileRange& t, T s_m, T* row, const T* bias) const {
    const int64_t nt = t.o1 - t.o0;
    const T inv_s = back_scale<T>(p, s_m);
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

  // One pass of the epilogue over the GEMM rows `ybuf` of `rows`. With a single input tile
  // the final values (periphery and bias included) go straight to y: a pass that fails the
  // bound test is simply overwritten by the next one. With several input tiles the ADC
  // values stay in ybuf until the tile's pass is accepted (see accumulate).
  void epilogue(const TileRange& t, const std::vector<int64_t>& rows, int pass, T* ybuf,
                std::vector<uint8_t>& row_ok, const T* s, bool direct) const {
    const int64_t nt = t.o1 - t.o0;
    at::parallel_for(0, static_cast<int64_t>(rows.size()), kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> normals;
      for (int64_t i = b; i < e; ++i) {
        const int64_t m = rows[i];
        T* dst = direct ? y + m * N + t.o0 : ybuf + i * nt;
        row_ok[i] = adc_row(t, m, pass, ybuf + i * nt, dst, normals);
        if (direct) periphery_row(t, s[m], dst, bias);
      }
    });
  }

  // Several input tiles: add the accepted rows' periphery outputs into y.
  void accumulate(const TileRange& t, const std::vector<int64_t>& rows, T* ybuf,
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

  void run_tile(const TileRange& t, const at::Tensor& w_tile) const {
    const bool direct = tin == 1;
    const int64_t kt = t.k1 - t.k0, nt = t.o1 - t.o0;
    // Abs-max noise management: one scale per row, fixed across passes.
    std::vector<T> inv_a(M, T(1));
    bool all_zero = false;
    if (p.noise_management == NoiseManagement::kAbsMax || p.noise_management == NoiseManagement::kMax) {
      const bool signed_max = p.noise_management == NoiseManagement::kMax;
      std::atomic<bool> any_nonzero{false};
      at::parallel_for(0, M, kGrain, [&](int64_t b, int64_t e) {
        bool nz = false;
        for (int64_t m = b; m < e; ++m) {
          // AIHWKIT: all rows' a == 0 gives zeros; then a <= 0 (a negative MAX too) becomes 1.
          T a = signed_max ? row_max<T>(x + m * K + t.k0, kt) : row_absmax<T>(x + m * K + t.k0, kt);
          if (p.nm_thres > 0.0 && a > static_cast<T>(p.nm_thres)) a = static_cast<T>(p.nm_thres);
          nz |= !(a == T(0));
          if (a <= T(0)) a = T(1);  // a zero row is not rescaled
          inv_a[m] = T(1) / a;
        }
        if (nz) any_nonzero.store(true, std::memory_order_relaxed);
      });
      all_zero = !any_nonzero.load();
    } else if (p.noise_management == NoiseManagement::kConstant && p.nm_thres > 0.0) {
      // AIHWKIT: scale = 1 / nm_thres in double, rounded to T where it multiplies the input.
      std::fill(inv_a.begin(), inv_a.end(), static_cast<T>(1.0 / p.nm_thres));
    }
    T* s_tile = s_out + t.index * M;
    int32_t* passes_tile = passes + t.index * M;
    if (all_zero) {
      // AIHWKIT returns exact zeros (no noise) when the whole tile input is zero.
      for (int64_t m = 0; m < M; ++m) {
        s_tile[m] = T(1);
        passes_tile[m] = 1;
        if (direct) {
          T* row = y + m * N + t.o0;
          std::fill(row, row + (t.o1 - t.o0), T(0));
          if (bias) std::copy(bias + t.o0, bias + t.o1, row);
        }
        if (mask) std::fill(mask + (t.it * M + m) * N + t.o0, mask + (t.it * M + m) * N + t.o1, false);
      }
      return;
    }
    const bool per_row = p.bound_management == BoundManagement::kIterativePerRow;
    const int max_passes = p.bound_management == BoundManagement::kNone ? 1 : p.max_passes;
    std::vector<int64_t> rows(M);
    for (int64_t m = 0; m < M; ++m) rows[m] = m;
    const auto xopt = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    const bool probe = probe_enabled();
    std::vector<std::pair<T, T>> norms(probe ? M : 0);
    double w_absmax = -1.0;  // max|W| of the tile, taken at the first probe
    const at::Tensor xq_all = at::empty({M, kt}, xopt);  // later passes use its first rows
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
      quantize(t, rows, s_tile, xq.data_ptr<T>(), probe_pass ? &norms : nullptr);
      if (probe_pass) {
        if (w_absmax < 0.0) {
          w_absmax = static_cast<double>(row_absmax<T>(w_tile.data_ptr<T>(), w_tile.numel()));
        }
        if (pass_must_fail(t, xq, w_tile, norms, w_absmax)) continue;
      }
      at::Tensor ybuf;
      if (direct && tout == 1 && mp == M) {
        // GEMM straight into y (same BLAS call as x @ W.T), epilogue in place.
        ybuf = y_tensor;
        at::mm_out(ybuf, xq, w_tile.t());
      } else {
        ybuf = at::mm(xq, w_tile.t());
      }
      T* yb = ybuf.data_ptr<T>();
      std::vector<uint8_t> row_ok(mp, 1);
      epilogue(t, rows, pass, yb, row_ok, s_tile, direct);
      const bool last = pass + 1 == max_passes;
      if (per_row) {
        std::vector<uint8_t> accept(mp);
        std::vector<int64_t> pending;
        for (int64_t i = 0; i < mp; ++i) {
          accept[i] = row_ok[i] || last;
          if (!accept[i]) pending.push_back(rows[i]);
        }
        if (!direct) accumulate(t, rows, yb, &accept, s_tile);
        rows.swap(pending);
      } else {
        bool ok = true;
        for (uint8_t r : row_ok) ok &= r != 0;
        if (ok || last || p.bound_management == BoundManagement::kNone) {
          if (!direct) accumulate(t, rows, yb, nullptr, s_tile);
          rows.clear();
        }
      }
    }
    (void)nt;
  }
};

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
                  const std::optional<at::Tensor>& bias, const at::Tensor& rng,
                  const CrossbarParams& p, bool training, bool need_aux,
                  const std::optional<at::Tensor>& noise_out,
                  const std::optional<at::Tensor>& noise_weight, at::Tensor& y, at::Tensor& s,
                  at::Tensor& mask, at::Tensor& passes) {
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
                   y.data_ptr<T>(),
                   s.data_ptr<T>(),
                   need_aux ? mask.data_ptr<bool>() : nullptr,
                   passes.data_ptr<int32_t>()};
  for (const auto& t : tiles) {
    const at::Tensor w = tile_weight<T>(weight, t, p, training, f.seed, f.offset, noise_weight);
    f.run_tile(t, w);
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
  const T* gy = grad_y.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  const T* sc = out_scales.data_ptr<T>();
  const bool* mk = mask.data_ptr<bool>();
  const auto opt = x.options();
  for (const auto& t : tiles) {
    const int64_t kt = t.k1 - t.k0, nt = t.o1 - t.o0;
    const T* st = s.data_ptr<T>() + t.index * M;
    // G = dL/dy * (ADC clamp inactive) * periphery scales: the ADC is straight-through.
    at::Tensor g = at::empty({M, nt}, opt);
    T* gp = g.data_ptr<T>();
    at::parallel_for(0, M, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t m = b; m < e; ++m) {
        const bool* mr = mk + (t.it * M + m) * N + t.o0;
        const T* gr = gy + (p.per_input_tile ? t.it * M * N : 0) + m * N + t.o0;
        T* out = gp + m * nt;
        for (int64_t n = 0; n < nt; ++n) out[n] = mr[n] ? gr[n] : T(0);
        for (int64_t j = 0; j < S; ++j) {  // the scale rows in forward order
          const T* scr = sc + (j * tin + t.it) * N + t.o0;
          for (int64_t n = 0; n < nt; ++n) out[n] = out[n] * scr[n];
        }
      }
    });
    // The DAC is straight-through, masked where its clamp was active. With abs-max noise
    // management |x * s| <= 1, so a DAC range that holds the largest code needs no mask.
    const double largest_code = dac_quantize<double>(1.0, 2.0 * p.inp_bound * p.inp_res, 0.0);
    // Input asymmetry scales the gradient of negative DAC outputs: it rides on the same mask.
    const bool asymmetric = p.inp_asymmetry != 0.0;
    const T asym = static_cast<T>(1.0 - p.inp_asymmetry);
    const bool dac_may_clamp =
        asymmetric || (p.inp_bound > 0.0 && !(p.noise_management == NoiseManagement::kAbsMax &&
                                              p.nm_thres == 0.0 && largest_code <= p.inp_bound));
    at::Tensor xs, in_mask;
    if (grad_w.defined() || dac_may_clamp) {
      // xs: the quantised input scaled back by 1/s, the weight gradient's operand.
      xs = at::empty({M, kt}, opt);
      in_mask = dac_may_clamp ? at::empty({M, kt}, opt) : at::Tensor();
      T* xsp = xs.data_ptr<T>();
      T* imp = dac_may_clamp ? in_mask.data_ptr<T>() : nullptr;
      at::parallel_for(0, M, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t m = b; m < e; ++m) {
          const T sm = scaling ? st[m] : T(1);
          const T inv_s = back_scale<T>(p, sm);
          for (int64_t k = 0; k < kt; ++k) {
            const T v = xp[m * K + t.k0 + k] * sm;
            T q = dac_quantize<T>(v, step, bound);
            const T slope = asymmetric && q < T(0) ? asym : T(1);
            q = asymmetric && q < T(0) ? q * asym : q;
            xsp[m * kt + k] = q * inv_s;
            if (imp) imp[m * kt + k] = dac_passes_gradient<T>(v, step, bound) ? slope : T(0);
          }
        }
      });
    }
    if (grad_x.defined()) {
      const at::Tensor w = tile_weight<T>(weight, t, p, training, rng_value(rng, 0),
                                          rng_value(rng, 1), noise_weight);
      at::Tensor gx = at::mm(g, w);
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> crossbar_mvm_forward(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out_scales,
    const std::optional<at::Tensor>& bias, const at::Tensor& rng, const CrossbarParams& params,
    bool training, bool need_aux, const std::optional<at::Tensor>& noise_out,
    const std::optional<at::Tensor>& noise_weight) {
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
                           noise_out, noise_weight, y, s, mask, passes);
  });
  if (params.per_input_tile) y = y.view({tin, M, N});
  return {y, s, mask, passes};
}

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
