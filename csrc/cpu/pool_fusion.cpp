// CPU pooled LoRA fusion. The pool is stacked once per call (A_cat [K·r, d_in] is a view of
// A; B_cat [d_out, K·r] one copy of B), so every mode is one shrink GEMM, one pass over the
// [M, K·r] hidden state (coefficients, per column or per row) and one expand GEMM; nothing
// loops over K outside that pass and no per-sample ΔW exists.
#include "pool_fusion.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace lorafusion::cpu {
namespace {

// Rows per parallel chunk: enough work per chunk to amortise the thread hand-off.
int64_t row_grain(int64_t width) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, width)); }

at::Tensor stack_b(const at::Tensor& B) {
  const int64_t K = B.size(0), N = B.size(1), r = B.size(2);
  return B.permute({1, 0, 2}).reshape({N, K * r});
}

// The coefficient row of token m: the shared vector, or the task's row of the table.
template <typename T>
struct Coeffs {
  const T* c;
  const int64_t* ids;
  int64_t K;
  const T* row(int64_t m) const { return ids ? c + ids[m] * K : c; }
};

template <typename T>
Coeffs<T> coeff_rows(const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids) {
  return {coeffs.data_ptr<T>(), task_ids ? task_ids->data_ptr<int64_t>() : nullptr,
          coeffs.size(-1)};
}

// S = s · (c ⊗ 1_r) ⊙ H (sum) or S = s · c ⊗ (Σ_k c_k H_k) (lorahub), row by row.
template <typename T>
void scale_hidden(const at::Tensor& H, at::Tensor& S, const Coeffs<T>& cf, int64_t r, T s,
                  PoolMode mode) {
  const int64_t M = H.size(0), K = cf.K, w = K * r;
  const T* hp = H.data_ptr<T>();
  T* sp = S.data_ptr<T>();
  at::parallel_for(0, M, row_grain(w), [&](int64_t b, int64_t e) {
    std::vector<T> h(mode == PoolMode::kLoraHub ? r : 0);
    for (int64_t m = b; m < e; ++m) {
      const T* cm = cf.row(m);
      const T* Hm = hp + m * w;
      T* Sm = sp + m * w;
      if (mode == PoolMode::kSum) {
        for (int64_t k = 0; k < K; ++k) {
          const T ck = cm[k] * s;
          for (int64_t j = 0; j < r; ++j) Sm[k * r + j] = Hm[k * r + j] * ck;
        }
      } else {
        std::fill(h.begin(), h.end(), T(0));
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = 0; j < r; ++j) h[j] += cm[k] * Hm[k * r + j];
        for (int64_t k = 0; k < K; ++k) {
          const T ck = cm[k] * s;
          for (int64_t j = 0; j < r; ++j) Sm[k * r + j] = ck * h[j];
        }
      }
    }
  });
}

// The per-row part of the backward, from dS = G · B_cat (unscaled) and H:
//   sum:     dH = s c ⊙ dS,  dc_mk = s Σ_j dS ⊙ H,          S = s c ⊙ H
//   lorahub: h = Σ_k c_k H_k, dh = s Σ_k c_k dS_k, dH_k = c_k dh,
//            dc_mk = s <dS_k, h> + <dh, H_k>,               S_k = s c_k h
// Any of dH, dc_rows, S may be undefined (not needed).
template <typename T>
void backward_rows(const at::Tensor& dS, const at::Tensor& H, const Coeffs<T>& cf, int64_t r,
                   T s, PoolMode mode, at::Tensor& dH, at::Tensor& dc_rows, at::Tensor& S) {
  const int64_t M = H.size(0), K = cf.K, w = K * r;
  const T* dsp = dS.data_ptr<T>();
  const T* hp = H.data_ptr<T>();
  T* dhp = dH.defined() ? dH.data_ptr<T>() : nullptr;
  T* dcp = dc_rows.defined() ? dc_rows.data_ptr<T>() : nullptr;
  T* sp = S.defined() ? S.data_ptr<T>() : nullptr;
  at::parallel_for(0, M, row_grain(w), [&](int64_t b, int64_t e) {
    std::vector<T> h(mode == PoolMode::kLoraHub ? r : 0), dh(h.size());
    for (int64_t m = b; m < e; ++m) {
      const T* cm = cf.row(m);
      const T* Hm = hp + m * w;
      const T* dSm = dsp + m * w;
      if (mode == PoolMode::kSum) {
        for (int64_t k = 0; k < K; ++k) {
          const T ck = cm[k] * s;
          if (dcp) {
            T acc = T(0);
            for (int64_t j = 0; j < r; ++j) acc += dSm[k * r + j] * Hm[k * r + j];
            dcp[m * K + k] = acc * s;
          }
          if (dhp)
            for (int64_t j = 0; j < r; ++j) dhp[m * w + k * r + j] = dSm[k * r + j] * ck;
          if (sp)
            for (int64_t j = 0; j < r; ++j) sp[m * w + k * r + j] = Hm[k * r + j] * ck;
        }
      } else {
        std::fill(h.begin(), h.end(), T(0));
        std::fill(dh.begin(), dh.end(), T(0));
        for (int64_t k = 0; k < K; ++k) {
          for (int64_t j = 0; j < r; ++j) {
            h[j] += cm[k] * Hm[k * r + j];
            dh[j] += cm[k] * dSm[k * r + j];
          }
        }
        for (int64_t j = 0; j < r; ++j) dh[j] *= s;
        for (int64_t k = 0; k < K; ++k) {
          if (dcp) {
            T a = T(0), bsum = T(0);
            for (int64_t j = 0; j < r; ++j) {
              a += dSm[k * r + j] * h[j];
              bsum += dh[j] * Hm[k * r + j];
            }
            dcp[m * K + k] = a * s + bsum;
          }
          if (dhp)
            for (int64_t j = 0; j < r; ++j) dhp[m * w + k * r + j] = cm[k] * dh[j];
          if (sp) {
            const T ck = cm[k] * s;
            for (int64_t j = 0; j < r; ++j) sp[m * w + k * r + j] = ck * h[j];
          }
        }
      }
    }
  });
}

// Â = Σ c_k A_k [r, d_in] and B̂ = Σ c_k B_k [d_out, r] as two small GEMVs over the pool.
std::pair<at::Tensor, at::Tensor> merge_pool(const at::Tensor& A, const at::Tensor& B,
                                             const at::Tensor& coeffs) {
  const int64_t K = A.size(0), r = A.size(1), d_in = A.size(2), N = B.size(1);
  const at::Tensor cv = coeffs.view({1, K});
  return {at::mm(cv, A.view({K, r * d_in})).view({r, d_in}),
          at::mm(cv, B.view({K, N * r})).view({N, r})};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> pool_fusion_forward(const at::Tensor& x, const at::Tensor& A,
                                                       const at::Tensor& B,
                                                       const at::Tensor& coeffs,
                                                       const std::optional<at::Tensor>& task_ids,
                                                       double scale, PoolMode mode) {
  const int64_t K = A.size(0), r = A.size(1), d_in = A.size(2);
  if (pool_merged(mode, task_ids.has_value())) {
    // One coefficient vector: the published composition (ΣcB)(ΣcA) is a rank-r LoRA.
    auto [a_hat, b_hat] = merge_pool(A, B, coeffs);
    at::Tensor h = at::mm(x, a_hat.t());
    at::Tensor y = at::mm(h, b_hat.mul_(scale).t());
    return {y, h};
  }
  at::Tensor H = at::mm(x, A.view({K * r, d_in}).t());
  at::Tensor S = at::empty_like(H);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool_fusion_forward", [&] {
    scale_hidden<scalar_t>(H, S, coeff_rows<scalar_t>(coeffs, task_ids), r,
                           static_cast<scalar_t>(scale), mode);
  });
  at::Tensor y = at::mm(S, stack_b(B).t());
  return {y, H};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pool_fusion_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& coeffs, const std::optional<at::Tensor>& task_ids, const at::Tensor& hidden,
    double scale, PoolMode mode, bool need_x, bool need_coeffs, bool need_A, bool need_B) {
  const int64_t K = A.size(0), r = A.size(1), d_in = A.size(2), N = B.size(1);
  at::Tensor gx, gc, gA, gB;
  if (pool_merged(mode, task_ids.has_value())) {
    auto [a_hat, b_hat] = merge_pool(A, B, coeffs);
    const at::Tensor& h = hidden;  // [M, r]
    at::Tensor dh = at::mm(grad_y, b_hat).mul_(scale);
    if (need_x) gx = at::mm(dh, a_hat);
    at::Tensor da_hat, db_hat;
    if (need_coeffs || need_A) da_hat = at::mm(dh.t(), x);
    if (need_coeffs || need_B) db_hat = at::mm(grad_y.t(), h).mul_(scale);
    if (need_coeffs) {
      gc = at::mv(A.view({K, r * d_in}), da_hat.reshape({-1}))
               .add_(at::mv(B.view({K, N * r}), db_hat.reshape({-1})));
    }
    if (need_A) gA = at::mm(coeffs.view({K, 1}), da_hat.reshape({1, r * d_in})).view({K, r, d_in});
    if (need_B) gB = at::mm(coeffs.view({K, 1}), db_hat.reshape({1, N * r})).view({K, N, r});
    return {gx, gc, gA, gB};
  }
  const at::Tensor& H = hidden;  // [M, K·r]
  const at::Tensor b_cat = stack_b(B);
  at::Tensor dH, dc_rows, S;
  const int64_t M = x.size(0);
  if (need_x || need_A) dH = at::empty_like(H);
  if (need_coeffs) dc_rows = at::empty({M, K}, x.options());
  if (need_B) S = at::empty_like(H);
  if (need_x || need_A || need_coeffs) {
    at::Tensor dS = at::mm(grad_y, b_cat);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool_fusion_backward", [&] {
      backward_rows<scalar_t>(dS, H, coeff_rows<scalar_t>(coeffs, task_ids), r,
                              static_cast<scalar_t>(scale), mode, dH, dc_rows, S);
    });
  } else if (need_B) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool_fusion_backward", [&] {
      scale_hidden<scalar_t>(H, S, coeff_rows<scalar_t>(coeffs, task_ids), r,
                             static_cast<scalar_t>(scale), mode);
    });
  }
  if (need_x) gx = at::mm(dH, A.view({K * r, d_in}));
  if (need_A) gA = at::mm(dH.t(), x).view({K, r, d_in});
  if (need_B) gB = at::mm(grad_y.t(), S).view({N, K, r}).permute({1, 0, 2}).contiguous();
  if (need_coeffs) {
    if (task_ids) {
      gc = at::zeros_like(coeffs).index_add_(0, *task_ids, dc_rows);
    } else {
      gc = dc_rows.sum(0);
    }
  }
  return {gx, gc, gA, gB};
}

}  // namespace lorafusion::cpu
