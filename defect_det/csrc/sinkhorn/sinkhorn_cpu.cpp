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

constexpr int64_t kChunk = 256;  // elements per online-LSE chunk (stays in L1)
constexpr int kLanes = 8;

// sum of x[0..n) with kLanes independent accumulators (vectorisable without reassociation flags).
template <typename T>
inline T lane_sum(const T* __restrict x, int64_t n) {
  T ls[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    for (int l = 0; l < kLanes; ++l) ls[l] += x[k + l];
  }
  T s = 0;
  for (; k < n; ++k) s += x[k];
  for (int l = 0; l < kLanes; ++l) s += ls[l];
  return s;
}

// log sum_c exp(x[c] + beta[c]) over c < C, in one pass over memory: chunks of kChunk elements are
// shifted by the running maximum (online / streaming LSE), the partial sum rescaled when it grows.
// Returns -inf when every term is -inf.
template <typename T>
T row_lse(const T* __restrict x, const T* __restrict beta, int64_t C, T* __restrict buf) {
  const T ninf = -std::numeric_limits<T>::infinity();
  T m = ninf, s = 0;
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t len = std::min(kChunk, C - c0);
    const T* xc = x + c0;
    const T* bc = beta + c0;
    T lm[kLanes];
    for (int l = 0; l < kLanes; ++l) lm[l] = ninf;
    int64_t k = 0;
    for (; k + kLanes <= len; k += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        T y = xc[k + l] + bc[k + l];
        buf[k + l] = y;
        lm[l] = lm[l] > y ? lm[l] : y;
      }
    }
    T cm = ninf;
    for (int l = 0; l < kLanes; ++l) cm = cm > lm[l] ? cm : lm[l];
    for (; k < len; ++k) {
      T y = xc[k] + bc[k];
      buf[k] = y;
      cm = cm > y ? cm : y;
    }
    if (cm == ninf) continue;
    if (cm > m) {
      s = (m == ninf) ? T(0) : s * std::exp(m - cm);
      m = cm;
    }
    for (k = 0; k < len; ++k) buf[k] = fexp<T>(buf[k] - m);  // element-wise: vectorised
    s += lane_sum<T>(buf, len);
  }
  return m == ninf ? ninf : m + std::log(s);
}

// Row update on one batch element: for valid rows r of X (R, C)
//   out[r] = logm[r] - LSE_c(X[r, c] + beta[c]);   err[r] = w[r] * |exp(old[r] - out[r]) - 1|
// and out[r] = 0, err[r] = 0 at invalid rows. `old` may be null (no error needed).
template <typename T>
void lse_update(const T* X, int64_t B, int64_t R, int64_t C, const T* beta, const T* logm,
                const bool* valid, const T* w, const T* old, T* out, T* err) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
  at::parallel_for(0, B * R, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(kChunk);
    for (int64_t br = begin; br < end; ++br) {
      const int64_t bi = br / R;
      if (!valid[br]) {
        out[br] = 0;
        if (err) err[br] = 0;
        continue;
      }
      T lse = row_lse<T>(X + br * C, beta + bi * C, C, buf.data());
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
    std::vector<T> tbuf(kChunk);
    T* __restrict tb = tbuf.data();
    for (int64_t br = begin; br < end; ++br) {
      if (!valid[br]) {
        acc[br] = 0;
        continue;
      }
      const int64_t bi = br / R;
      const T* __restrict x = X + br * C;
      const T* __restrict bc = beta + bi * C;
      const T* __restrict wc = wcol + bi * C;
      T* __restrict xb = Xbar + br * C;
      const T al = alpha[br];
      T s = 0;
      for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
        const int64_t len = std::min(kChunk, C - c0);
        for (int64_t k = 0; k < len; ++k) {  // element-wise: vectorised
          const int64_t c = c0 + k;
          const T t = wc[c] * fexp<T>(x[c] + al + bc[c]);
          xb[c] -= t;
          tb[k] = t;
        }
        s += lane_sum<T>(tb, len);
      }
      acc[br] = s;
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

// L = -C / eps, -inf where the row or column is invalid. (B, N, M).
at::Tensor masked_logits(const at::Tensor& cost, double eps, const at::Tensor& row_valid,
                         const at::Tensor& col_valid) {
  auto valid = row_valid.unsqueeze(2).logical_and(col_valid.unsqueeze(1));
  return (cost / (-eps)).masked_fill(valid.logical_not(), -std::numeric_limits<double>::infinity())
      .contiguous();
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
