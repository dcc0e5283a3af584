// One layer, one direction of nn.GRU and of nn.RNN(nonlinearity='tanh') on the CPU in float32: forward and
// backward over all time steps in one call each.
//
// Everything that does not depend on the previous step is batched over all T*B rows (the input projection,
// the weight, bias and input gradients): one large matrix product each instead of T small ones. What is
// left per step is the recurrent product (into a slice of a buffer allocated once per call) and the gate
// arithmetic, done in one pass over plain float arrays with loops the compiler vectorises. The per-step
// product calls the BLAS directly on raw pointers (see gemm_rm below): no Tensor, dispatcher or checks per step.
//
// Layouts (all contiguous, time-major):
//   x (T, B, I), h0 (B, H), w_ih (G*H, I), w_hh (G*H, H), biases (G*H), G = 3 (GRU: r, z, n) or 1 (RNN).
//   GRU forward keeps `gates` (T, B, 3H) = r, z, n after the nonlinearities and `hproj` (T, B, 3H) =
//   W_hh h_prev (+ b_hh in its n-block, which the backward needs: b_hn sits inside r * (...)).
// Step order: step i (0-based, in processing order) reads time index s = reverse ? T-1-i : i; its previous
// state is h0 for i = 0, else the output at the time index processed just before.

// Per-operator ATen headers and torch's pybind11 glue rather than <torch/extension.h>: the same code,
// compiled in about a third of the time.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>

// The Fortran BLAS entry point that at::mm / addmm call for float32 on the CPU (at::native::cpublas::gemm ->
// sgemm_, MKL's in the x86 wheels, exported by libtorch_cpu; cpublas::gemm itself is not exported). Weak, so
// that a torch build without it still loads and takes gemm_rm's ATen fallback.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));

namespace {

using at::Tensor;
using std::optional;

// Row-major C (m, n; row stride ldc) = A (m, k; row stride lda) @ op(B) + beta * C, where op(B) is B (k, n;
// row stride ldb) or, with trans_b, the transpose of B stored as (n, k). beta is 0 (C is not read) or 1.
// The same BLAS call, with the same arguments, as at::mm_out / addmm_ make for these operands (column-major
// BLAS computes C^T = op(B)^T A^T), so the results are the same bit for bit, without the per-call cost of
// Tensor views, the dispatcher and ATen's checks: for the tanh RNN's small per-step product that is a
// noticeable share of the step.
void gemm_rm(bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float beta, float* c, int64_t ldc) {
  if (sgemm_ != nullptr) {
    const char ta = trans_b ? 't' : 'n', tb = 'n';
    const int m_ = static_cast<int>(n), n_ = static_cast<int>(m), k_ = static_cast<int>(k);
    const int lda_ = static_cast<int>(ldb), ldb_ = static_cast<int>(lda), ldc_ = static_cast<int>(ldc);
    const float alpha = 1.0f;
    sgemm_(&ta, &tb, &m_, &n_, &k_, &alpha, b, &lda_, a, &ldb_, &beta, c, &ldc_);
    return;
  }
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  const Tensor A = at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, opts);
  const Tensor B = trans_b ? at::from_blob(const_cast<float*>(b), {n, k}, {ldb, 1}, opts).t()
                           : at::from_blob(const_cast<float*>(b), {k, n}, {ldb, 1}, opts);
  Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  if (beta == 0.0f) {
    at::mm_out(C, A, B);
  } else {
    C.addmm_(A, B);
  }
}

// exp, sigmoid and tanh from arithmetic, comparisons and a bit cast only, so that the loops over them
// vectorise (libm's calls would not, short of -ffast-math; -fno-trapping-math lets the compiler turn the
// selects into blends). Cephes' single-precision approximations: within 2 ulp of the exact function over
// the float range; NaN propagates.
inline float exp_approx(float x) {
  x = x < -87.3f ? -87.3f : x;  // keeps 2^n a normal float
  x = x > 88.3f ? 88.3f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693359375f;  // x - n ln 2, with ln 2 split in two for precision
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

inline float tanh_approx(float x) {
  // Small |x|: an odd polynomial (no cancellation near 0). Otherwise 1 - 2 / (e^{2|x|} + 1), sign restored.
  const float a = std::fabs(x);
  const float x2 = x * x;
  float p = -5.70498872745e-3f;
  p = p * x2 + 2.06390887954e-2f;
  p = p * x2 - 5.37397155531e-2f;
  p = p * x2 + 1.33314422036e-1f;
  p = p * x2 - 3.33332819422e-1f;
  const float small = p * x2 * x + x;
  const float big = std::copysign(1.0f - 2.0f / (exp_approx(2.0f * a) + 1.0f), x);
  return a < 0.625f ? small : big;
}

// Rows per parallel chunk: a chunk of gate arithmetic should be a few thousand elements, or the threads
// cost more than they save.
inline int64_t grain_rows(int64_t hidden) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, hidden)); }

void check_inputs(const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, int64_t gates) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "fused_rnn: x must be a float32 CPU tensor");
  TORCH_CHECK(x.dim() == 3 && x.size(0) > 0, "fused_rnn: x must be (steps > 0, batch, input)");
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == x.size(1), "fused_rnn: h0 must be (batch, hidden)");
  const int64_t H = h0.size(1);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == gates * H && w_ih.size(1) == x.size(2),
              "fused_rnn: w_ih must be (", gates, " * hidden, input)");
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == gates * H && w_hh.size(1) == H,
              "fused_rnn: w_hh must be (", gates, " * hidden, hidden)");
  for (const Tensor* t : {&h0, &w_ih, &w_hh}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, "fused_rnn: all tensors must be float32 CPU");
  }
}

// x @ w_ih^T + b_ih over all T*B rows at once: (T, B, G*H).
Tensor input_projection(const Tensor& x, const Tensor& w_ih, const optional<Tensor>& b_ih) {
  const int64_t T = x.size(0), B = x.size(1);
  const Tensor x2 = x.reshape({T * B, x.size(2)});
  Tensor out = b_ih.has_value() && b_ih->defined() ? at::addmm(*b_ih, x2, w_ih.t()) : at::mm(x2, w_ih.t());
  return out.view({T, B, w_ih.size(0)});
}

// The recurrent bias as a contiguous float array (zeros for bias=False). It is added in the gate loop rather
// than by addmm, which would first copy it, broadcast, into every step's output.
Tensor bias_or_zeros(const optional<Tensor>& b, int64_t size, const Tensor& like) {
  if (!b.has_value() || !b->defined()) return at::zeros({size}, like.options());
  TORCH_CHECK(b->numel() == size && b->scalar_type() == at::kFloat && b->device().is_cpu(),
              "fused_rnn: b_hh must be a float32 CPU tensor of ", size, " elements");
  return b->contiguous();
}

// The gradients that are batched over all steps, from the gate gradients dgi (input side, (T, B, G*H)) and
// dgh (recurrent side): dW_ih, db_ih, dx, dW_hh, db_hh. The previous states are h0 for the first processed
// step and the outputs otherwise, so dW_hh is one product over the T-1 steps that read an output, plus
// one over the step that reads h0 (no (T, B, H) stack of previous states is built).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> batched_gradients(
    const Tensor& dgi, const Tensor& dgh, const Tensor& x, const Tensor& h0, const Tensor& w_ih,
    const Tensor& out, bool reverse, bool need_dx, bool need_w_ih, bool need_b_ih, bool need_w_hh,
    bool need_b_hh) {
  const int64_t T = x.size(0), B = x.size(1), GH = dgi.size(2), H = out.size(2);
  const Tensor dgi2 = dgi.view({T * B, GH});
  const Tensor dgh2 = dgh.view({T * B, GH});
  Tensor dx, dw_ih, db_ih, dw_hh, db_hh;
  if (need_w_ih) dw_ih = at::mm(dgi2.t(), x.reshape({T * B, x.size(2)}));
  if (need_b_ih) db_ih = dgi2.sum(0);
  if (need_dx) dx = at::mm(dgi2, w_ih).view({T, B, x.size(2)});
  if (need_w_hh) {
    const int64_t first = reverse ? T - 1 : 0;  // the time index whose previous state is h0
    const Tensor dg_first = dgh.select(0, first);
    if (T > 1) {
      // Forward: steps 1..T-1 read outputs 0..T-2. Reverse: steps 0..T-2 read outputs 1..T-1.
      const Tensor dg_rest = (reverse ? dgh.narrow(0, 0, T - 1) : dgh.narrow(0, 1, T - 1)).reshape({(T - 1) * B, GH});
      const Tensor h_rest = (reverse ? out.narrow(0, 1, T - 1) : out.narrow(0, 0, T - 1)).reshape({(T - 1) * B, H});
      dw_hh = at::mm(dg_rest.t(), h_rest);
      dw_hh.addmm_(dg_first.t(), h0);
    } else {
      dw_hh = at::mm(dg_first.t(), h0);
    }
  }
  if (need_b_hh) db_hh = dgh2.sum(0);
  return {dx, dw_ih, db_ih, dw_hh, db_hh};
}

Tensor grad_or_empty(const optional<Tensor>& g) {
  return g.has_value() && g->defined() ? g->contiguous() : Tensor();
}

// ---------------------------------------------------------------------------------------------------- GRU

// Returns (output (T, B, H), h_n (B, H), gates (T, B, 3H), hproj (T, B, 3H)).
std::vector<Tensor> gru_forward(const Tensor& x_in, const Tensor& h0_in, const Tensor& w_ih, const Tensor& w_hh,
                                const optional<Tensor>& b_ih, const optional<Tensor>& b_hh, bool reverse) {
  const Tensor x = x_in.contiguous(), h0 = h0_in.contiguous();
  check_inputs(x, h0, w_ih, w_hh, 3);
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1);
  Tensor gates = input_projection(x, w_ih, b_ih);  // becomes r, z, n in place, step by step
  Tensor hproj = at::empty({T, B, 3 * H}, x.options());
  Tensor out = at::empty({T, B, H}, x.options());
  const Tensor w_hh_c = w_hh.contiguous();
  const float* w_hh_p = w_hh_c.data_ptr<float>();
  const Tensor bias_hh = bias_or_zeros(b_hh, 3 * H, x);
  const float* bh_p = bias_hh.data_ptr<float>();
  float* gates_p = gates.data_ptr<float>();
  float* hproj_p = hproj.data_ptr<float>();
  float* out_p = out.data_ptr<float>();
  const float* h0_p = h0.data_ptr<float>();
  const int64_t step_gates = B * 3 * H, step_out = B * H;

  for (int64_t i = 0; i < T; ++i) {
    const int64_t s = reverse ? T - 1 - i : i;
    const int64_t prev = reverse ? s + 1 : s - 1;
    const float* hprev_p = i == 0 ? h0_p : out_p + prev * step_out;
    float* g_s = gates_p + s * step_gates;
    float* hp = hproj_p + s * step_gates;
    gemm_rm(true, B, 3 * H, H, hprev_p, H, w_hh_p, H, 0.0f, hp, 3 * H);  // hproj[s] = h_prev @ w_hh^T
    float* o_s = out_p + s * step_out;
    at::parallel_for(0, B, grain_rows(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* gr = g_s + b * 3 * H;
        float* gz = gr + H;
        float* gn = gz + H;
        const float* hr = hp + b * 3 * H;
        const float* hz = hr + H;
        float* hn = hp + b * 3 * H + 2 * H;
        const float* bhr = bh_p;
        const float* bhz = bh_p + H;
        const float* bhn = bh_p + 2 * H;
        const float* hprev = hprev_p + b * H;
        float* o = o_s + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float r = sigmoid_approx((hr[j] + bhr[j]) + gr[j]);
          const float z = sigmoid_approx((hz[j] + bhz[j]) + gz[j]);
          const float hn_j = hn[j] + bhn[j];
          const float n = tanh_approx(gn[j] + hn_j * r);
          hn[j] = hn_j;  // the backward reads W_hn h + b_hn
          gr[j] = r;
          gz[j] = z;
          gn[j] = n;
          o[j] = (hprev[j] - n) * z + n;  // = (1 - z) n + z h, as PyTorch's GRU cell writes it
        }
      }
    });
  }
  Tensor h_n = out.select(0, reverse ? 0 : T - 1).clone();
  return {out, h_n, gates, hproj};
}

// Returns (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); those not asked for are undefined (None in Python).
std::vector<Tensor> gru_backward(const optional<Tensor>& grad_out_in, const optional<Tensor>& grad_hn_in,
                                 const Tensor& x_in, const Tensor& h0_in, const Tensor& w_ih, const Tensor& w_hh,
                                 const Tensor& out, const Tensor& gates, const Tensor& hproj, bool reverse,
                                 bool need_dx, bool need_dh0, bool need_w_ih, bool need_w_hh, bool need_b_ih,
                                 bool need_b_hh) {
  const Tensor x = x_in.contiguous(), h0 = h0_in.contiguous();
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1);
  const Tensor grad_out = grad_or_empty(grad_out_in);
  const Tensor grad_hn = grad_or_empty(grad_hn_in);
  const Tensor w_hh_c = w_hh.contiguous();
  const float* w_hh_p = w_hh_c.data_ptr<float>();
  // dh: the gradient reaching the state that the step being processed produced; at the end, h0's.
  Tensor dh = grad_hn.defined() ? grad_hn.clone() : at::zeros({B, H}, x.options());
  Tensor dgi = at::empty({T, B, 3 * H}, x.options());  // gradient of the input-side gate pre-activations
  Tensor dgh = at::empty({T, B, 3 * H}, x.options());  // ... of the recurrent side: n-block scaled by r
  float* dh_p = dh.data_ptr<float>();
  float* dgi_p = dgi.data_ptr<float>();
  float* dgh_p = dgh.data_ptr<float>();
  const float* go_p = grad_out.defined() ? grad_out.data_ptr<float>() : nullptr;
  const float* gates_p = gates.data_ptr<float>();
  const float* hproj_p = hproj.data_ptr<float>();
  const float* out_p = out.data_ptr<float>();
  const float* h0_p = h0.data_ptr<float>();
  const int64_t step_gates = B * 3 * H, step_out = B * H;

  for (int64_t i = T - 1; i >= 0; --i) {
    const int64_t s = reverse ? T - 1 - i : i;
    const int64_t prev = reverse ? s + 1 : s - 1;
    const float* hprev_p = i == 0 ? h0_p : out_p + prev * step_out;
    const float* g_s = gates_p + s * step_gates;
    const float* hp_s = hproj_p + s * step_gates;
    const float* go_s = go_p ? go_p + s * step_out : nullptr;
    float* dgi_s = dgi_p + s * step_gates;
    float* dgh_s = dgh_p + s * step_gates;
    at::parallel_for(0, B, grain_rows(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const float* r = g_s + b * 3 * H;
        const float* z = r + H;
        const float* n = z + H;
        const float* hn = hp_s + b * 3 * H + 2 * H;
        const float* hprev = hprev_p + b * H;
        const float* go = go_s ? go_s + b * H : nullptr;
        float* d = dh_p + b * H;
        float* di = dgi_s + b * 3 * H;
        float* dhh = dgh_s + b * 3 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float g = go ? d[j] + go[j] : d[j];
          const float dn_pre = g * (1.0f - z[j]) * (1.0f - n[j] * n[j]);
          const float dz_pre = g * (hprev[j] - n[j]) * z[j] * (1.0f - z[j]);
          const float dr_pre = dn_pre * hn[j] * r[j] * (1.0f - r[j]);
          di[j] = dr_pre;
          di[H + j] = dz_pre;
          di[2 * H + j] = dn_pre;
          dhh[j] = dr_pre;
          dhh[H + j] = dz_pre;
          dhh[2 * H + j] = dn_pre * r[j];
          d[j] = g * z[j];  // the direct path h' = ... + z h; the gates' path is added below
        }
      }
    });
    if (i > 0 || need_dh0) {
      gemm_rm(false, B, H, 3 * H, dgh_s, 3 * H, w_hh_p, H, 1.0f, dh_p, H);  // dh += dgh[s] @ w_hh
    }
  }
  auto [dx, dw_ih, db_ih, dw_hh, db_hh] =
      batched_gradients(dgi, dgh, x, h0, w_ih, out, reverse, need_dx, need_w_ih, need_b_ih, need_w_hh, need_b_hh);
  return {dx, need_dh0 ? dh : Tensor(), dw_ih, dw_hh, db_ih, db_hh};
}

// ------------------------------------------------------------------------------------------- RNN (tanh)

// Returns (output (T, B, H), h_n (B, H)); the backward needs only the outputs.
std::vector<Tensor> rnn_tanh_forward(const Tensor& x_in, const Tensor& h0_in, const Tensor& w_ih,
                                     const Tensor& w_hh, const optional<Tensor>& b_ih,
                                     const optional<Tensor>& b_hh, bool reverse) {
  const Tensor x = x_in.contiguous(), h0 = h0_in.contiguous();
  check_inputs(x, h0, w_ih, w_hh, 1);
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1);
  const Tensor xproj = input_projection(x, w_ih, b_ih);
  Tensor out = at::empty({T, B, H}, x.options());
  const Tensor w_hh_c = w_hh.contiguous();
  const float* w_hh_p = w_hh_c.data_ptr<float>();
  const Tensor bias_hh = bias_or_zeros(b_hh, H, x);
  const float* bh = bias_hh.data_ptr<float>();
  const float* xproj_p = xproj.data_ptr<float>();
  float* out_p = out.data_ptr<float>();
  const float* h0_p = h0.data_ptr<float>();
  const int64_t step = B * H;
  for (int64_t i = 0; i < T; ++i) {
    const int64_t s = reverse ? T - 1 - i : i;
    const float* hprev_p = i == 0 ? h0_p : out_p + (reverse ? s + 1 : s - 1) * step;
    float* o_s = out_p + s * step;
    gemm_rm(true, B, H, H, hprev_p, H, w_hh_p, H, 0.0f, o_s, H);  // out[s] = h_prev @ w_hh^T
    const float* xp_s = xproj_p + s * step;
    at::parallel_for(0, B, grain_rows(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* o = o_s + b * H;
        const float* xp = xp_s + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) o[j] = tanh_approx(xp[j] + (o[j] + bh[j]));
      }
    });
  }
  Tensor h_n = out.select(0, reverse ? 0 : T - 1).clone();
  return {out, h_n};
}

std::vector<Tensor> rnn_tanh_backward(const optional<Tensor>& grad_out_in, const optional<Tensor>& grad_hn_in,
                                      const Tensor& x_in, const Tensor& h0_in, const Tensor& w_ih,
                                      const Tensor& w_hh, const Tensor& out, bool reverse, bool need_dx,
                                      bool need_dh0, bool need_w_ih, bool need_w_hh, bool need_b_ih,
                                      bool need_b_hh) {
  const Tensor x = x_in.contiguous(), h0 = h0_in.contiguous();
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1);
  const Tensor grad_out = grad_or_empty(grad_out_in);
  const Tensor grad_hn = grad_or_empty(grad_hn_in);
  const Tensor w_hh_c = w_hh.contiguous();
  const float* w_hh_p = w_hh_c.data_ptr<float>();
  Tensor dh = grad_hn.defined() ? grad_hn.clone() : at::zeros({B, H}, x.options());
  Tensor dg = at::empty({T, B, H}, x.options());  // gradient of the pre-activation, both sides alike
  float* dh_p = dh.data_ptr<float>();
  float* dg_p = dg.data_ptr<float>();
  const float* go_p = grad_out.defined() ? grad_out.data_ptr<float>() : nullptr;
  const float* out_p = out.data_ptr<float>();
  const int64_t step = B * H;
  for (int64_t i = T - 1; i >= 0; --i) {
    const int64_t s = reverse ? T - 1 - i : i;
    const float* h = out_p + s * step;
    const float* go = go_p ? go_p + s * step : nullptr;
    float* d = dg_p + s * step;
    at::parallel_for(0, B, grain_rows(H), [&](int64_t b0, int64_t b1) {
      if (go) {
#pragma omp simd
        for (int64_t k = b0 * H; k < b1 * H; ++k) d[k] = (dh_p[k] + go[k]) * (1.0f - h[k] * h[k]);
      } else {
#pragma omp simd
        for (int64_t k = b0 * H; k < b1 * H; ++k) d[k] = dh_p[k] * (1.0f - h[k] * h[k]);
      }
    });
    if (i > 0 || need_dh0) {
      gemm_rm(false, B, H, H, d, H, w_hh_p, H, 0.0f, dh_p, H);  // dh = dg[s] @ w_hh
    }
  }
  auto [dx, dw_ih, db_ih, dw_hh, db_hh] =
      batched_gradients(dg, dg, x, h0, w_ih, out, reverse, need_dx, need_w_ih, need_b_ih, need_w_hh, need_b_hh);
  return {dx, need_dh0 ? dh : Tensor(), dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused one-layer, one-direction GRU and tanh RNN (CPU, float32): forward and backward over all steps";
  m.def("gru_forward", &gru_forward, "GRU forward: (output, h_n, gates, hproj)", py::arg("x"), py::arg("h0"),
        py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("reverse"));
  m.def("gru_backward", &gru_backward, "GRU backward: (dx, dh0, dw_ih, dw_hh, db_ih, db_hh)",
        py::arg("grad_out"), py::arg("grad_hn"), py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("out"), py::arg("gates"), py::arg("hproj"), py::arg("reverse"), py::arg("need_dx"),
        py::arg("need_dh0"), py::arg("need_w_ih"), py::arg("need_w_hh"), py::arg("need_b_ih"), py::arg("need_b_hh"));
  m.def("rnn_tanh_forward", &rnn_tanh_forward, "tanh RNN forward: (output, h_n)", py::arg("x"), py::arg("h0"),
        py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("reverse"));
  m.def("rnn_tanh_backward", &rnn_tanh_backward, "tanh RNN backward: (dx, dh0, dw_ih, dw_hh, db_ih, db_hh)",
        py::arg("grad_out"), py::arg("grad_hn"), py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("out"), py::arg("reverse"), py::arg("need_dx"), py::arg("need_dh0"), py::arg("need_w_ih"),
        py::arg("need_w_hh"), py::arg("need_b_ih"), py::arg("need_b_hh"));
}
