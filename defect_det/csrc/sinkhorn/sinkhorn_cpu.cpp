// CPU kernel of the batched, masked, log-domain Sinkhorn-Knopp op (float32 / float64).
//
// Notation (per batch element; see projects/SinkhornNMS/SINKHORN_OP.md):
//   L = -C / eps (N, M), -inf at masked entries; scaled duals u = f / eps (N), v = g / eps (M).
//   u^t_i = log a_i - LSE_j(L_ij + v^{t-1}_j),  v^t_j = log b_j - LSE_i(L_ij + u^t_i).
// Both half-steps are the same "row update" applied to L (rows i) or to its transposed copy LT
// (rows j), so every inner loop walks contiguous memory and is parallel over batch x rows.
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "sinkhorn.h"

namespace defect_det {
namespace {

// exp(x) by Cody-Waite range reduction x = n ln2 + r, |r| <= ln2 / 2, and a Taylor polynomial
// (degree 7 for float, 13 for double: truncation error < 1e-8 resp. 5e-18 relative). Written
// branch-free so that GCC vectorises the loops calling it; the file must be compiled without
// -ffast-math / -fassociative-math, which would fold the round-to-nearest trick below. Returns exactly 0 below the smallest
// normal exponent (including -inf, used for masked entries).
template <typename T>
struct FastExp;

template <>
struct FastExp<float> {
  static inline float eval(float x) {
    const float lo = -87.0f, hi = 88.0f;
    float xc = std::min(std::max(x, lo), hi);
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln2)
    float r = xc - n * 0.693145751953125f - n * 1.42860682030941723e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return x < lo ? 0.0f : p * scale;
  }
};

template <>
struct FastExp<double> {
  static inline double eval(double x) {
    const double lo = -708.0, hi = 709.0;
    double xc = std::min(std::max(x, lo), hi);
    double n = (xc * 1.4426950408889634074 + 6755399441055744.0) - 6755399441055744.0;
    double r = xc - n * 0.693147180369123816490 - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;  // 1 / 13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t bits = (static_cast<int64_t>(n) + 1023) << 52;
    double scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return x < lo ? 0.0 : p * scale;
  }
};

template <typename T>
inline T fexp(T x) {
  return FastExp<T>::eval(x);
}

constexpr int kLanes = 8;

// log sum_c exp(x[c] + beta[c]) over c < C, in two passes over the row (it stays in L1): the
// maximum, then the sum of exp(x + beta - max); both with kLanes independent accumulators so that
// GCC vectorises them without reassociation flags. Returns -inf when every term is -inf.
template <typename T>
T row_lse(const T* __restrict x, const T* __restrict beta, int64_t C) {
  const T ninf = -std::numeric_limits<T>::infinity();
  T lm[kLanes];
  for (int l = 0; l < kLanes; ++l) lm[l] = ninf;
  int64_t k = 0;
  for (; k + kLanes <= C; k += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const T y = x[k + l] + beta[k + l];
      lm[l] = y > lm[l] ? y : lm[l];
    }
  }
  T m = ninf;
  for (; k < C; ++k) {
    const T y = x[k] + beta[k];
    m = y > m ? y : m;
  }
  for (int l = 0; l < kLanes; ++l) m = lm[l] > m ? lm[l] : m;
  if (m == ninf) return ninf;
  T acc[kLanes] = {};
  for (k = 0; k + kLanes <= C; k += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += fexp<T>(x[k + l] + beta[k + l] - m);
  }
  T s = 0;
  for (; k < C; ++k) s += fexp<T>(x[k] + beta[k] - m);
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return m + std::log(s);
}

// One row of the adjoint pass: t_c = w[c] * exp(x[c] + al + beta[c]);  xb[c] -= t_c;  returns sum_c t_c.
template <typename T>
T row_adjoint(const T* __restrict x, const T* __restrict beta, const T* __restrict w, T al, int64_t C,
              T* __restrict xb) {
  T lacc[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {  // kLanes independent sums
    for (int l = 0; l < kLanes; ++l) {
      const T t = w[c + l] * fexp<T>(x[c + l] + al + beta[c + l]);
      xb[c + l] -= t;
      lacc[l] += t;
    }
  }
  T s = 0;
  for (; c < C; ++c) {
    const T t = w[c] * fexp<T>(x[c] + al + beta[c]);
    xb[c] -= t;
    s += t;
  }
  for (int l = 0; l < kLanes; ++l) s += lacc[l];
  return s;
}

#if defined(__AVX2__) && defined(__FMA__)
// float32 hot loops with AVX2/FMA intrinsics (GCC only partially vectorises the generic loops:
// ~1.1 ns per element instead of ~0.2). Same exp as FastExp<float>: Cody-Waite reduction by
// round(x / ln2), degree-7 polynomial, exponent bits; exactly 0 below -87 (and at -inf).
inline __m256 exp256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860682030941723e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

inline float hmax256(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

template <>
inline float row_lse<float>(const float* __restrict x, const float* __restrict beta, int64_t C) {
  const float ninf = -std::numeric_limits<float>::infinity();
  __m256 vm = _mm256_set1_ps(ninf);
  int64_t k = 0;
  for (; k + 8 <= C; k += 8)
    vm = _mm256_max_ps(vm, _mm256_add_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(beta + k)));
  float m = hmax256(vm);
  for (; k < C; ++k) m = std::max(m, x[k] + beta[k]);
  if (m == ninf) return ninf;
  const __m256 mm = _mm256_set1_ps(m);
  __m256 vs = _mm256_setzero_ps();
  for (k = 0; k + 8 <= C; k += 8)
    vs = _mm256_add_ps(vs, exp256(_mm256_sub_ps(_mm256_add_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(beta + k)), mm)));
  float s = hsum256(vs);
  for (; k < C; ++k) s += fexp<float>(x[k] + beta[k] - m);
  return m + std::log(s);
}

template <>
inline float row_adjoint<float>(const float* __restrict x, const float* __restrict beta,
                                const float* __restrict w, float al, int64_t C, float* __restrict xb) {
  const __m256 va = _mm256_set1_ps(al);
  __m256 vs = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    const __m256 e = exp256(_mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(x + c), va), _mm256_loadu_ps(beta + c)));
    const __m256 t = _mm256_mul_ps(_mm256_loadu_ps(w + c), e);
    _mm256_storeu_ps(xb + c, _mm256_sub_ps(_mm256_loadu_ps(xb + c), t));
    vs = _mm256_add_ps(vs, t);
  }
  float s = hsum256(vs);
  for (; c < C; ++c) {
    const float t = w[c] * fexp<float>(x[c] + al + beta[c]);
    xb[c] -= t;
    s += t;
  }
  return s;
}
#endif  // __AVX2__ && __FMA__

// Row update on one batch element: for valid rows r of X (R, C)
//   out[r] = logm[r] - LSE_c(X[r, c] + beta[c]);   err[r] = w[r] * |exp(old[r] - out[r]) - 1|
// and out[r] = 0, err[r] = 0 at invalid rows. `old` may be null (no error needed).
template <typename T>
void lse_update(const T* X, int64_t B, int64_t R, int64_t C, const T* beta, const T* logm,
                const bool* valid, const T* w, const T* old, T* out, T* err) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
  at::parallel_for(0, B * R, grain, [&](int64_t begin, int64_t end) {
    for (int64_t br = begin; br < end; ++br) {
      const int64_t bi = br / R;
      if (!valid[br]) {
        out[br] = 0;
        if (err) err[br] = 0;
        continue;
      }
      T lse = row_lse<T>(X + br * C, beta + bi * C, C);
      T val = logm[br] - lse;
      out[br] = val;
      if (err) err[br] = old ? w[br] * std::abs(std::exp(old[br] - val) - T(1)) : T(0);
    }
  });
}

// Adjoint row pass on one batch: for valid rows r of X (R, C), with e_rc = exp(X_rc + alpha_r + beta_c)
//   Xbar[r, c] -= wcol[c] * e_rc;   acc[r] = sum_c wcol[c] * e_rc      (acc = 0 at invalid rows).
template <typename T>
void adjoint_rows(const T* X, int64_t B, int64_t R, int64_t C, const T* alpha, const T* beta,
                  const T* wcol, const bool* valid, T* Xbar, T* acc) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
  at::parallel_for(0, B * R, grain, [&](int64_t begin, int64_t end) {
    for (int64_t br = begin; br < end; ++br) {
      if (!valid[br]) {
        acc[br] = 0;
        continue;
      }
      const int64_t bi = br / R;
      acc[br] = row_adjoint<T>(X + br * C, beta + bi * C, wcol + bi * C, alpha[br], C, Xbar + br * C);
    }
  });
}

void check_inputs(const at::Tensor& cost, const at::Tensor& log_a, const at::Tensor& log_b,
                  const at::Tensor& row_valid, const at::Tensor& col_valid) {
  TORCH_CHECK(cost.dim() == 3, "sinkhorn: cost must be (B, N, M)");
  const int64_t B = cost.size(0), N = cost.size(1), M = cost.size(2);
  TORCH_CHECK(log_a.sizes() == at::IntArrayRef({B, N}) && log_b.sizes() == at::IntArrayRef({B, M}),
              "sinkhorn: log_a / log_b must be (B, N) / (B, M)");
  TORCH_CHECK(row_valid.sizes() == log_a.sizes() && col_valid.sizes() == log_b.sizes(),
              "sinkhorn: row_valid / col_valid must be (B, N) / (B, M)");
  TORCH_CHECK(log_a.scalar_type() == cost.scalar_type() && log_b.scalar_type() == cost.scalar_type(),
              "sinkhorn: log_a / log_b must have the dtype of cost");
}


}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> sinkhorn_forward_cpu(
    const at::Tensor& cost_in, double eps, const at::Tensor& log_a_in, const at::Tensor& log_b_in,
    const at::Tensor& a_in, const at::Tensor& row_valid_in, const at::Tensor& col_valid_in,
    int64_t max_iter, double tol) {
  check_inputs(cost_in, log_a_in, log_b_in, row_valid_in, col_valid_in);
  TORCH_CHECK(max_iter >= 1, "sinkhorn: max_iter must be >= 1");
  const int64_t B = cost_in.size(0), N = cost_in.size(1), M = cost_in.size(2);
  auto row_valid = row_valid_in.to(at::kBool).contiguous();
  auto col_valid = col_valid_in.to(at::kBool).contiguous();
  auto log_a = log_a_in.contiguous(), log_b = log_b_in.contiguous();
  auto a = a_in.to(cost_in.scalar_type()).contiguous();
  auto L = masked_logits(cost_in, eps, row_valid, col_valid);  // (B, N, M)
  auto LT = L.transpose(1, 2).contiguous();                     // (B, M, N)
  auto U = at::zeros({max_iter, B, N}, L.options());
  auto V = at::zeros({max_iter + 1, B, M}, L.options());
  auto err = at::zeros({B, N}, L.options());
  int64_t n_iter = 0;
  AT_DISPATCH_FLOATING_TYPES(L.scalar_type(), "sinkhorn_forward_cpu", [&] {
    const scalar_t* Lp = L.data_ptr<scalar_t>();
    const scalar_t* LTp = LT.data_ptr<scalar_t>();
    const scalar_t* lap = log_a.data_ptr<scalar_t>();
    const scalar_t* lbp = log_b.data_ptr<scalar_t>();
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const bool* rv = row_valid.data_ptr<bool>();
    const bool* cv = col_valid.data_ptr<bool>();
    scalar_t* Up = U.data_ptr<scalar_t>();
    scalar_t* Vp = V.data_ptr<scalar_t>();
    scalar_t* ep = err.data_ptr<scalar_t>();
    for (int64_t t = 1; t <= max_iter; ++t) {
      const bool check = tol > 0 && t > 1;
      scalar_t* u_new = Up + (t - 1) * B * N;
      const scalar_t* u_old = check ? Up + (t - 2) * B * N : nullptr;
      const scalar_t* v_prev = Vp + (t - 1) * B * M;
      lse_update<scalar_t>(Lp, B, N, M, v_prev, lap, rv, ap, u_old, u_new, check ? ep : nullptr);
      bool stop = false;
      if (check) {
        double worst = 0;
        for (int64_t bi = 0; bi < B; ++bi) {
          double s = 0;
          for (int64_t i = 0; i < N; ++i) s += ep[bi * N + i];
          worst = std::max(worst, s);
        }
        stop = worst < tol;
      }
      lse_update<scalar_t>(LTp, B, M, N, u_new, lbp, cv, nullptr, nullptr, Vp + t * B * M, nullptr);
      n_iter = t;
      if (stop) break;
    }
  });
  U = U.narrow(0, 0, n_iter);
  V = V.narrow(0, 0, n_iter + 1);
  // plan = exp(L + u + v); exactly 0 at masked entries (L = -inf).
  auto plan = (L + U[n_iter - 1].unsqueeze(2) + V[n_iter].unsqueeze(1)).exp_();
  return std::make_tuple(plan, U.contiguous(), V.contiguous());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sinkhorn_backward_cpu(
    const at::Tensor& grad_plan, const at::Tensor& grad_u, const at::Tensor& grad_v,
    const at::Tensor& cost, double eps, const at::Tensor& plan, const at::Tensor& log_a_in,
    const at::Tensor& log_b_in, const at::Tensor& row_valid_in, const at::Tensor& col_valid_in,
    const at::Tensor& U_in, const at::Tensor& V_in) {
  check_inputs(cost, log_a_in, log_b_in, row_valid_in, col_valid_in);
  const int64_t B = cost.size(0), N = cost.size(1), M = cost.size(2);
  const int64_t T = U_in.size(0);
  TORCH_CHECK(T >= 1 && V_in.size(0) == T + 1, "sinkhorn_backward: U (T, B, N) and V (T+1, B, M)");
  auto row_valid = row_valid_in.to(at::kBool).contiguous();
  auto col_valid = col_valid_in.to(at::kBool).contiguous();
  auto rvf = row_valid.to(cost.scalar_type()), cvf = col_valid.to(cost.scalar_type());
  auto log_a = log_a_in.contiguous(), log_b = log_b_in.contiguous();
  auto U = U_in.contiguous(), V = V_in.contiguous();
  auto L = masked_logits(cost, eps, row_valid, col_valid);
  auto LT = L.transpose(1, 2).contiguous();
  // Adjoints through the plan: Lbar = Pbar * P; ubar = sum_j Pbar P; vbar = sum_i Pbar P.
  auto PP = (grad_plan * plan).masked_fill_(plan == 0, 0);  // (B, N, M)
  auto Lbar = PP.contiguous();
  auto LbarT = at::zeros({B, M, N}, L.options());
  auto ubar = ((PP.sum(2) + grad_u) * rvf).contiguous();  // (B, N)
  auto vbar = ((PP.sum(1) + grad_v) * cvf).contiguous();  // (B, M)
  auto gla = at::zeros({B, N}, L.options());
  auto glb = at::zeros({B, M}, L.options());
  auto acc_n = at::empty({B, N}, L.options());
  auto acc_m = at::empty({B, M}, L.options());
  auto beta_m = at::empty({B, M}, L.options());
  auto beta_n = at::empty({B, N}, L.options());
  AT_DISPATCH_FLOATING_TYPES(L.scalar_type(), "sinkhorn_backward_cpu", [&] {
    const scalar_t* Lp = L.data_ptr<scalar_t>();
    const scalar_t* LTp = LT.data_ptr<scalar_t>();
    const scalar_t* lap = log_a.data_ptr<scalar_t>();
    const scalar_t* lbp = log_b.data_ptr<scalar_t>();
    const bool* rv = row_valid.data_ptr<bool>();
    const bool* cv = col_valid.data_ptr<bool>();
    const scalar_t* Up = U.data_ptr<scalar_t>();
    const scalar_t* Vp = V.data_ptr<scalar_t>();
    scalar_t* Lb = Lbar.data_ptr<scalar_t>();
    scalar_t* LbT = LbarT.data_ptr<scalar_t>();
    scalar_t* ub = ubar.data_ptr<scalar_t>();
    scalar_t* vb = vbar.data_ptr<scalar_t>();
    scalar_t* glap = gla.data_ptr<scalar_t>();
    scalar_t* glbp = glb.data_ptr<scalar_t>();
    scalar_t* an = acc_n.data_ptr<scalar_t>();
    scalar_t* am = acc_m.data_ptr<scalar_t>();
    scalar_t* bm = beta_m.data_ptr<scalar_t>();
    scalar_t* bn = beta_n.data_ptr<scalar_t>();
    for (int64_t t = T; t >= 1; --t) {
      const scalar_t* u_t = Up + (t - 1) * B * N;
      const scalar_t* v_t = Vp + t * B * M;
      const scalar_t* v_prev = Vp + (t - 1) * B * M;
      // v^t_j = log b_j - LSE_i(L_ij + u^t_i); Q_ij = exp(L_ij + u^t_i + v^t_j - log b_j).
      //   (log b)bar_j += vbar_j;  Lbar_ij -= vbar_j Q_ij;  ubar_i -= sum_j vbar_j Q_ij.
      for (int64_t k = 0; k < B * M; ++k) {
        glbp[k] += vb[k];
        bm[k] = v_t[k] - lbp[k];
      }
      adjoint_rows<scalar_t>(Lp, B, N, M, u_t, bm, vb, rv, Lb, an);
      for (int64_t k = 0; k < B * N; ++k) ub[k] -= an[k];
      // u^t_i = log a_i - LSE_j(L_ij + v^{t-1}_j); R_ij = exp(L_ij + v^{t-1}_j + u^t_i - log a_i).
      //   (log a)bar_i += ubar_i;  Lbar_ij -= ubar_i R_ij;  vbar^{t-1}_j = -sum_i ubar_i R_ij.
      for (int64_t k = 0; k < B * N; ++k) {
        glap[k] += ub[k];
        bn[k] = u_t[k] - lap[k];
      }
      adjoint_rows<scalar_t>(LTp, B, M, N, v_prev, bn, ub, cv, LbT, am);
      // (at t = 1 this vbar belongs to the constant v^0 and is not used)
      for (int64_t k = 0; k < B * M; ++k) vb[k] = -am[k];
      // u^{t-1} only feeds v^{t-1}, whose adjoint is now in vbar: ubar restarts from 0.
      for (int64_t k = 0; k < B * N; ++k) ub[k] = 0;
    }
  });
  // C = -eps L: Cbar = -Lbar / eps; masked entries have zero gradient.
  auto grad_cost = (Lbar + LbarT.transpose(1, 2)) / (-eps);
  auto valid = row_valid.unsqueeze(2).logical_and(col_valid.unsqueeze(1));
  grad_cost.masked_fill_(valid.logical_not(), 0);
  return std::make_tuple(grad_cost, gla * rvf, glb * cvf);
}

}  // namespace defect_det
