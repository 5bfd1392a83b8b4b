// Time-dependent IR drop of one crossbar tile (AIHWKIT 1.1's TorchInferenceRPUConfigIRDropT,
// forward.mv_type ONE_PASS), replacing the tile's GEMM in inference. No torch here.
//
// The model (docs/numerics.md, "IR drop"): the quantised input x_k in [-1, 1] drives its row
// as a pulse of width |x_k| (PWM); at time t_j of T steps in [0, 1] a row is at 0.6 V (x > t),
// 0.2 V (x < -t) or 0.4 V (off), through the pair (g+, g-) of its column. Per column the rows
// are cut into S segments; each segment is a Thevenin source, and the segments are joined by
// the wire resistance between them towards the column's ADC (even columns: the last rows,
// odd columns: the first). The ADC reads i(t) = (V_th - v_read) / R_th; the charge is the
// time integral of i, scaled back to weight units.
//
// Per token row the segments' conductance sums are updated incrementally as rows switch off
// (each row once), and the Thevenin chain is re-evaluated only at time steps where some row
// switched: the cost is one GEMM row for the updates plus S divisions per column and changed
// step, against AIHWKIT's tensors of [rows, segments, columns, time steps].
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace lorafusion::cpu {

struct IrDropParams {
  double scale;          // wire-resistance scale (AIHWKIT forward.ir_drop); > 0
  double rs;             // wire resistance between unit cells, Ohm
  int32_t segments;      // S
  int32_t time_steps;    // T
  int64_t rows;          // physical tile rows P the input is padded to (symmetric)
  double v_read;         // ADC read voltage, V
  bool sum;              // integrate by summing the steps (else trapz with a repeated first step)
  double adc_frequency;  // quantise the integrated current: trunc(q / 100 * f) * 100 / f; 0: off
  double g_max, g_min;   // SinglePairConductanceConverter, uS
  double inp_bound, inp_res;  // the DAC: normalisation by inp_bound / inp_res / 2
};

// One tile's conductances, shared by its token rows. Columns are reordered even first, then
// odd, so that each direction's columns are contiguous.
template <typename T>
class IrDropTile {
 public:
  // w: the tile's weights [nt, kt] row-major (output, input), as the crossbar holds them.
  IrDropTile(const IrDropParams& p, const T* w, int64_t nt, int64_t kt) : p_(p), nt_(nt), kt_(kt) {
    ne_ = (nt + 1) / 2;
    seg_rows_ = p.rows / p.segments;
    pad1_ = (p.rows - kt) / 2;
    // The time grid of torch.linspace(0, 1, steps), bit for bit (ATen's fma form), in float32
    // whatever T: AIHWKIT builds it with the default dtype and compares a float64 input with
    // its float32 steps promoted. The quantised inputs sit exactly on its steps, so each
    // comparison must be AIHWKIT's.
    const int32_t steps = p.time_steps;
    const float step = steps > 1 ? 1.0f / static_cast<float>(steps - 1) : 0.0f;
    t_.resize(steps);
    for (int32_t j = 0; j < steps; ++j) {
      t_[j] = static_cast<T>(j < steps / 2 ? std::fma(step, static_cast<float>(j), 0.0f)
                                           : std::fma(-step, static_cast<float>(steps - 1 - j), 1.0f));
    }
    // SinglePairConductanceConverter in T, as AIHWKIT: scale_ratio = (g_max - g_min) /
    // max(max|W|, 1e-7); g+ = clamp(W * ratio, 0, g_max) + g_min; g- likewise for -W.
    T amax = T(0);
    for (int64_t i = 0; i < nt * kt; ++i) amax = std::max(amax, std::abs(w[i]));
    const T gmax = static_cast<T>(p.g_max), gmin = static_cast<T>(p.g_min);
    ratio_ = static_cast<T>(p.g_max - p.g_min) / std::max(amax, static_cast<T>(1e-7));
    gp_.resize(kt * nt);
    gm_.resize(kt * nt);
    for (int64_t n = 0; n < nt; ++n) {
      const int64_t c = column_slot(n);
      for (int64_t k = 0; k < kt; ++k) {
        const T v = w[n * kt + k] * ratio_;
        gp_[k * nt + c] = static_cast<double>(std::min(std::max(v, T(0)), gmax) + gmin);
        gm_[k * nt + c] = static_cast<double>(std::min(std::max(-v, T(0)), gmax) + gmin);
      }
    }
    // Segment of each input row, per direction (odd columns see the rows flipped), and the
    // conductance of the zero-padded rows (always off) per segment.
    seg_even_.resize(kt);
    seg_odd_.resize(kt);
    for (int64_t k = 0; k < kt; ++k) {
      const int64_t r = k + pad1_;
      seg_even_[k] = static_cast<int32_t>(r / seg_rows_);
      seg_odd_[k] = static_cast<int32_t>((p.rows - 1 - r) / seg_rows_);
    }
    pad_even_.assign(p.segments, 0.0);
    pad_odd_.assign(p.segments, 0.0);
    for (int64_t r = 0; r < p.rows; ++r) {
      if (r >= pad1_ && r < pad1_ + kt) continue;
      pad_even_[r / seg_rows_] += 2.0 * static_cast<double>(gmin);
      pad_odd_[(p.rows - 1 - r) / seg_rows_] += 2.0 * static_cast<double>(gmin);
    }
  }

  // y[n] (n < nt) for one quantised input row x[kt].
  void row(const T* x, T* y) const {
    const int32_t S = p_.segments, steps = p_.time_steps;
    const int64_t nt = nt_, ne = ne_;
    // Steps each input row is on for: #{j : |x_k| > t_j} (x > t_j, or x < -t_j).
    std::vector<int32_t> on(kt_);
    std::vector<int32_t> first(steps + 2, 0);  // counting sort of the rows by `on`
    for (int64_t k = 0; k < kt_; ++k) {
      const T a = std::abs(x[k]);
      on[k] = static_cast<int32_t>(std::lower_bound(t_.begin(), t_.end(), a) - t_.begin());
      if (!(a == a)) on[k] = 0;  // NaN: never on (every comparison false)
      ++first[on[k] + 1];
    }
    for (int32_t j = 0; j <= steps; ++j) first[j + 1] += first[j];
    std::vector<int64_t> by_on(kt_);
    {
      std::vector<int32_t> fill(first.begin(), first.end() - 1);
      for (int64_t k = 0; k < kt_; ++k) by_on[fill[on[k]]++] = k;
    }
    // Per segment s and column slot c: A = sum of the conductances at 0.6 V, B at 0.2 V, Z off.
    std::vector<double> A(S * nt, 0.0), B(S * nt, 0.0), Z(S * nt, 0.0);
    for (int32_t s = 0; s < S; ++s) {
      for (int64_t c = 0; c < nt; ++c) Z[s * nt + c] = c < ne ? pad_even_[s] : pad_odd_[s];
    }
    for (int64_t k = 0; k < kt_; ++k) {
      const double* gp = gp_.data() + k * nt;
      const double* gm = gm_.data() + k * nt;
      const bool live = on[k] > 0;
      const bool pos = x[k] > T(0);
      const double* ga = pos ? gp : gm;  // at 0.6 V while on
      const double* gb = pos ? gm : gp;  // at 0.2 V while on
      add_row(k, live ? ga : nullptr, live ? gb : nullptr, gp, gm, live, A.data(), B.data(), Z.data(), 1.0);
    }
    const double rw = 1e-6 * p_.rs * p_.scale * static_cast<double>(seg_rows_);
    std::vector<double> cur(nt), prev(nt), acc(nt, 0.0), V(nt), R(nt);
    for (int32_t j = 0; j < steps; ++j) {
      bool changed = j == 0;
      for (int32_t i = first[j]; i < first[j + 1]; ++i) {  // rows whose pulse ended before t_j
        const int64_t k = by_on[i];
        if (j == 0) continue;  // never on: counted as off already
        const double* gp = gp_.data() + k * nt;
        const double* gm = gm_.data() + k * nt;
        const bool pos = x[k] > T(0);
        switch_off(k, pos ? gp : gm, pos ? gm : gp, gp, gm, A.data(), B.data(), Z.data());
        changed = true;
      }
      if (changed) currents(A.data(), B.data(), Z.data(), rw, V.data(), R.data(), cur.data());
      if (p_.sum || j == 0) {
        // Sum; or torch.trapz over [i_0, i_0, i_1, ..., i_{T-1}]: i_0, then the trapezoids.
        for (int64_t c = 0; c < nt; ++c) acc[c] += cur[c];
      } else {
        for (int64_t c = 0; c < nt; ++c) acc[c] += 0.5 * (prev[c] + cur[c]);
      }
      if (!p_.sum) std::copy(cur.begin(), cur.end(), prev.begin());
    }
    const double norm = static_cast<double>(ratio_) * 0.2 * (p_.inp_bound / p_.inp_res / 2.0);
    for (int64_t n = 0; n < nt; ++n) {
      double q = acc[column_slot(n)];
      if (p_.adc_frequency > 0.0) q = std::trunc(q / 100.0 * p_.adc_frequency) * 100.0 / p_.adc_frequency;
      y[n] = static_cast<T>(q / norm);
    }
  }

 private:
  int64_t column_slot(int64_t n) const { return (n % 2 == 0) ? n / 2 : ne_ + n / 2; }

  // Row k on (its conductances at 0.6 V and 0.2 V) or off (both at 0.4 V), by `sign`.
  void add_row(int64_t k, const double* ga, const double* gb, const double* gp, const double* gm, bool live,
               double* A, double* B, double* Z, double sign) const {
    const int64_t nt = nt_, ne = ne_;
    const int64_t se = seg_even_[k], so = seg_odd_[k];
    double* Ae = A + se * nt;
    double* Be = B + se * nt;
    double* Ze = Z + se * nt;
    double* Ao = A + so * nt;
    double* Bo = B + so * nt;
    double* Zo = Z + so * nt;
    if (live) {
      for (int64_t c = 0; c < ne; ++c) {
        Ae[c] += sign * ga[c];
        Be[c] += sign * gb[c];
      }
      for (int64_t c = ne; c < nt; ++c) {
        Ao[c] += sign * ga[c];
        Bo[c] += sign * gb[c];
      }
    } else {
      for (int64_t c = 0; c < ne; ++c) Ze[c] += sign * (gp[c] + gm[c]);
      for (int64_t c = ne; c < nt; ++c) Zo[c] += sign * (gp[c] + gm[c]);
    }
  }

  void switch_off(int64_t k, const double* ga, const double* gb, const double* gp, const double* gm, double* A,
                  double* B, double* Z) const {
    add_row(k, ga, gb, gp, gm, true, A, B, Z, -1.0);
    add_row(k, nullptr, nullptr, gp, gm, false, A, B, Z, 1.0);
  }

  // i_c = (V_th - v_read) / R_th of every column slot: the segments' Norton sources
  // (G_s = A + B + Z + 1e-12, J_s = 0.6 A + 0.2 B + 0.4 Z) joined from the far end towards
  // the ADC through rw each, as AIHWKIT's chain r1 = R + rw, R' = r1 || 1/G_s,
  // V' = (V / r1 + J_s) R', with half a wire segment after the last.
  void currents(const double* A, const double* B, const double* Z, double rw, double* V, double* R,
                double* out) const {
    const int32_t S = p_.segments;
    const int64_t nt = nt_;
    // Segment by segment over all columns, so that the column loop vectorises.
#pragma omp simd
    for (int64_t c = 0; c < nt; ++c) {
      const double g = A[c] + B[c] + Z[c] + 1e-12;
      V[c] = (0.6 * A[c] + 0.2 * B[c] + 0.4 * Z[c]) / g;
      R[c] = 1.0 / g;
    }
    for (int32_t s = 1; s < S; ++s) {
      const double* a = A + s * nt;
      const double* b = B + s * nt;
      const double* z = Z + s * nt;
#pragma omp simd
      for (int64_t c = 0; c < nt; ++c) {
        const double gs = a[c] + b[c] + z[c] + 1e-12;
        const double js = 0.6 * a[c] + 0.2 * b[c] + 0.4 * z[c];
        const double r1 = R[c] + rw;
        const double d = 1.0 / (1.0 + r1 * gs);
        V[c] = (V[c] + js * r1) * d;
        R[c] = r1 * d;
      }
    }
    const double v_read = p_.v_read, half = 0.5 * rw;
#pragma omp simd
    for (int64_t c = 0; c < nt; ++c) out[c] = (V[c] - v_read) / (R[c] + half);
  }

  IrDropParams p_;
  int64_t nt_, kt_, ne_ = 0, seg_rows_ = 1, pad1_ = 0;
  T ratio_ = T(1);
  std::vector<T> t_;
  std::vector<double> gp_, gm_, pad_even_, pad_odd_;
  std::vector<int32_t> seg_even_, seg_odd_;
};

}  // namespace lorafusion::cpu
