// The CPU forward of one crossbar tile (tile_forward.cpp): per bound-management pass, the
// quantised inputs, the tile's GEMM (ATen's, so that the result is bit-identical to AIHWKIT's
// `x @ W.T`) or the IR-drop model in its place, then one fused epilogue for output noise, the
// ADC, the bound test and the digital periphery. crossbar_mvm.cpp runs it over a call's tiles.
// See docs/numerics.md, "The crossbar MVM".
#pragma once
#include <ATen/ATen.h>
#include <lorafusion/params.h>
#include <lorafusion/philox.h>

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "crossbar_tile.h"
#include "ir_drop.h"

namespace lorafusion::cpu {

// What a probed output must exceed to certainly saturate the ADC (TileForward::pass_must_fail).
struct ProbeLimit {
  double kt_u;      // K_t * the unit roundoff of T
  double gamma2;    // 2 gamma_Kt: the GEMM's summation-order allowance per sum|xq| max|W|
  double noise;     // the largest output noise (kNormalMaxAbs sigma)
  double limit;     // the ADC bound plus a full ADC step
  double w_absmax;  // max|W| of the tile
  // The smallest |y| of a row with sum|xq| = l1 (summed in T) that certainly saturates; a NaN
  // norm gives NaN: no decision.
  double threshold(double l1) const {
    // sum|xq| was itself summed in T: inflate it by its own worst-case rounding.
    const double l1_bound = l1 * (1.0 + 2.0 * kt_u);
    return limit + gamma2 * l1_bound * w_absmax + noise;
  }
};

// One call's inputs, outputs and settings; run_tile(t, ...) computes tile t into the outputs.
// Read-only while the tiles run (run_tile is const): only the output buffers are written.
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
  int64_t sample_rows;  // per-sample weight noise: token rows per sample; 0: one shared draw
  bool ir_drop;         // time-dependent IR drop replaces the tile's GEMM (inference only)
  // outputs
  T* y;          // [M, N]
  T* s_out;      // [T, M]
  // [Tin, M, N] or null: the bool tensor's bytes (0 or 1), written as uint8_t because GCC
  // does not vectorise a loop that stores bool.
  uint8_t* mask;
  int32_t* passes;  // [T, M]
  // The output noise's key and elements: by default the forward's (stream kStreamOutput, key
  // tile field t.it, element m * N + t.o0 + n); the backward read (crossbar_backward.cpp) runs
  // a tile transposed and sets its own stream, tile field and the layer's element layout.
  uint32_t out_stream = kStreamOutput;
  int64_t noise_tile = -1;  // the key's tile field; -1: t.it
  int64_t noise_ld = 0;     // elements per token row; 0: N
  int64_t noise_col0 = 0;   // the tile's first element column, added to t.o0
  // [Tin, Tout] learned input ranges or null: tile (i, o) reads clamp(x, -|r|, |r|) / r,
  // r = input_range[t.index] (= i * tout + o; AIHWKIT's pre_forward), in the DAC loop.
  const T* input_range = nullptr;

  // x row m of tile t as the tile reads it: through the tile's input range into `buf` [Kt]
  // (returned), or x itself without ranges.
  const T* tile_input(const TileRange& t, int64_t m, T* buf) const;

  // Tile t's forward into y, s_out, mask and passes: noise management, then the
  // bound-management loop over passes. w_tile: the tile's weights shared by every row, or
  // undefined with per-sample weight noise, where sample_weight(s) gives batch sample s's.
  void run_tile(const TileRange& t, const at::Tensor& w_tile,
                const std::function<at::Tensor(int64_t)>& sample_weight) const;

  T dac_step() const { return static_cast<T>(2.0 * p.inp_bound * p.inp_res); }
  T adc_step() const { return static_cast<T>(2.0 * p.out_bound * p.out_res); }

  // --- the steps of run_tile, in order (each documented at its definition)
  bool identity_input(const TileRange& t) const;
  bool noise_management_scales(const TileRange& t, std::vector<T>& inv_a, bool identity) const;
  void zero_tile(const TileRange& t, T* s_tile, int32_t* passes_tile) const;
  void quantize(const TileRange& t, const std::vector<int64_t>& rows, int pass, const T* s, T* xq,
                std::vector<std::pair<T, T>>* norms, bool identity) const;
  bool pass_must_fail(const TileRange& t, const at::Tensor& xq, const at::Tensor& w_tile,
                      const std::vector<std::pair<T, T>>& norms, double w_absmax) const;
  at::Tensor tile_mvm(const TileRange& t, const std::vector<int64_t>& rows, const at::Tensor& xq,
                      const at::Tensor& w_tile, const std::function<at::Tensor(int64_t)>& sample_weight,
                      const IrDropTile<T>* ir_tile, bool identity) const;
  void epilogue(const TileRange& t, const std::vector<int64_t>& rows, int pass, T* ybuf,
                std::vector<uint8_t>& row_ok, const T* s, bool direct) const;
  void settle_pass(const TileRange& t, std::vector<int64_t>& rows, const std::vector<uint8_t>& row_ok,
                   bool last, T* ybuf, const T* s_tile) const;

  // --- the bound-test probe
  bool probe_enabled() const;
  bool probe_rows_fail(const TileRange& t, const at::Tensor& xq, const at::Tensor& w_tile,
                       const std::vector<std::pair<T, T>>& norms, const ProbeLimit& lim,
                       std::vector<double>& column_peak) const;
  bool probe_columns_fail(const TileRange& t, const at::Tensor& xq, const at::Tensor& w_tile,
                          const std::vector<std::pair<T, T>>& norms, const ProbeLimit& lim,
                          const std::vector<double>& column_peak) const;

  // --- the epilogue's rows: output noise, ADC, bound test, periphery
  uint8_t* mask_row(const TileRange& t, int64_t m) const;
  const T* injected_noise_row(const TileRange& t, int64_t m, int pass) const;
  const float* output_normals(const TileRange& t, int64_t m, int pass, std::vector<float>& normals) const;
  bool adc_row(const TileRange& t, int64_t m, int pass, const T* src, T* dst,
               std::vector<float>& normals) const;
  void periphery_row(const TileRange& t, T s_m, T* row, const T* bias) const;
  bool fused_epilogue() const;
  template <int kScales>
  bool fused_row(const TileRange& t, int64_t m, int pass, T s_m, const T* src, T* dst,
                 std::vector<float>& normals) const;
  void accumulate(const TileRange& t, const std::vector<int64_t>& rows, T* ybuf,
                  const std::vector<uint8_t>* accept, const T* s) const;

  // --- the tile's MVM variants
  void sample_gemm(const at::Tensor& xq, const std::vector<int64_t>& rows, at::Tensor& ybuf,
                   const std::function<at::Tensor(int64_t)>& sample_weight) const;
  IrDropParams ir_drop_params() const;
};

extern template struct TileForward<float>;
extern template struct TileForward<double>;

}  // namespace lorafusion::cpu
