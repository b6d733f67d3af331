/* CPU reference ops (scoresde/nn.h): GroupNorm (with the fused SiLU) and SiLU.
 * Determinism as in ops_conv.c: parallel loops over independent outputs, reductions
 * in a fixed order by one thread. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../parallel.h"
#include "ops_internal.h"
#include "scoresde/error.h"
#include "scoresde/nn.h"

/* ======================================================================================
 * GroupNorm and SiLU */

int sde_nn_groupnorm_groups(int C) {
  int g = C / 4 < 32 ? C / 4 : 32;
  return g < 1 ? 1 : g;
}

static int groupnorm_check(int B, int C, int HW, int G) {
  if (B < 1 || C < 1 || HW < 1 || G < 1 || C % G)
    return sde_fail(SDE_EINVAL, "groupnorm: bad shape B=%d C=%d HW=%d groups=%d", B, C, HW, G);
  return SDE_OK;
}

static float silu1(float x) { return x / (1.0f + expf(-x)); }

/* Normalises one (b, g) group of n = (C/G)·HW contiguous values; optionally applies SiLU. */
static void groupnorm_group(float *y, const float *x, const float *gamma, const float *beta,
                            int cpg, int HW, float eps, int with_silu, float *mean_out,
                            float *rstd_out) {
  size_t n = (size_t)cpg * HW;
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) sum += x[i];
  double mean = sum / (double)n, ss = 0.0;
  for (size_t i = 0; i < n; i++) {
    double d = x[i] - mean;
    ss += d * d;
  }
  float meanf = (float)mean, rstd = (float)(1.0 / sqrt(ss / (double)n + eps));
  for (int c = 0; c < cpg; c++) {
    float scale = rstd * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
    const float *xc = x + (size_t)c * HW;
    float *yc = y + (size_t)c * HW;
    if (with_silu) {
      for (int p = 0; p < HW; p++) yc[p] = silu1((xc[p] - meanf) * scale + shift);
    } else {
      for (int p = 0; p < HW; p++) yc[p] = (xc[p] - meanf) * scale + shift;
    }
  }
  if (mean_out) *mean_out = meanf;
  if (rstd_out) *rstd_out = rstd;
}

#ifdef HAVE_DCONV
/* AVX-512 GroupNorm(+SiLU) of one group, same arithmetic as groupnorm_group up to the
 * order of the double-precision sums (16 fixed lanes, reduced in a fixed order) and the
 * exponential (exp512: Cody-Waite reduction + degree-6 polynomial, max error ~2 ulp on
 * the float range). Deterministic: one group is one thread's sequential work. */
__attribute__((target("avx512f"))) static inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

/* silu(y) = y / (1 + exp(−y)) */
__attribute__((target("avx512f"))) static inline __m512 silu512(__m512 y) {
  __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), y));
  return _mm512_div_ps(y, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

__attribute__((target("avx512f"))) static double hsum_pd2(__m512d a, __m512d b) {
  double t[16];
  _mm512_storeu_pd(t, a);
  _mm512_storeu_pd(t + 8, b);
  double s = 0.0;
  for (int i = 0; i < 16; i++) s += t[i];
  return s;
}

__attribute__((target("avx512f"))) static void
groupnorm_group_avx512(float *y, const float *x, const float *gamma, const float *beta, int cpg,
                       int HW, float eps, int with_silu, float *mean_out, float *rstd_out) {
  size_t n = (size_t)cpg * HW, n16 = n & ~(size_t)15;
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (size_t i = 0; i < n16; i += 16) {
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)));
  }
  double sum = hsum_pd2(s0, s1);
  for (size_t i = n16; i < n; i++) sum += x[i];
  double mean = sum / (double)n;
  __m512d m = _mm512_set1_pd(mean);
  s0 = _mm512_setzero_pd();
  s1 = _mm512_setzero_pd();
  for (size_t i = 0; i < n16; i += 16) {
    __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), m);
    __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)), m);
    s0 = _mm512_fmadd_pd(d0, d0, s0);
    s1 = _mm512_fmadd_pd(d1, d1, s1);
  }
  double ss = hsum_pd2(s0, s1);
  for (size_t i = n16; i < n; i++) {
    double d = x[i] - mean;
    ss += d * d;
  }
  float meanf = (float)mean, rstd = (float)(1.0 / sqrt(ss / (double)n + eps));
  __m512 mv = _mm512_set1_ps(meanf);
  for (int c = 0; c < cpg; c++) {
    float scale = rstd * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
    __m512 sv = _mm512_set1_ps(scale), bv = _mm512_set1_ps(shift);
    const float *xc = x + (size_t)c * HW;
    float *yc = y + (size_t)c * HW;
    int p = 0;
    for (; p + 16 <= HW; p += 16) {
      __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xc + p), mv), sv), bv);
      _mm512_storeu_ps(yc + p, with_silu ? silu512(v) : v);
    }
    if (p < HW) {
      __mmask16 k = (__mmask16)((1u << (HW - p)) - 1);
      __m512 v = _mm512_add_ps(
          _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xc + p), mv), sv), bv);
      _mm512_mask_storeu_ps(yc + p, k, with_silu ? silu512(v) : v);
    }
  }
  if (mean_out) *mean_out = meanf;
  if (rstd_out) *rstd_out = rstd;
}

__attribute__((target("avx512f"))) static void silu_avx512(float *out, const float *inp,
                                                           size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, silu512(_mm512_loadu_ps(inp + i)));
  if (i < n) {
    __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(out + i, k, silu512(_mm512_maskz_loadu_ps(k, inp + i)));
  }
}

/* 16 floats as two double vectors (low, high 8) */
__attribute__((target("avx512f"))) static inline __m512d lo_pd(__m512 v) {
  return _mm512_cvtps_pd(_mm512_castps512_ps256(v));
}
__attribute__((target("avx512f"))) static inline __m512d hi_pd(__m512 v) {
  return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* GroupNorm backward of one (b, g) group, the scalar loops' arithmetic with the double sums
 * in 16 fixed lanes (reduced in a fixed order): one thread's sequential work */
__attribute__((target("avx512f"))) static void
groupnorm_dinp_group_avx512(float *dinp, const float *inp, const float *dout, const float *gamma,
                            int cpg, int HW, float mu, float rs) {
  const size_t n = (size_t)cpg * HW;
  const int HW16 = HW & ~15;
  const __m512 vmu = _mm512_set1_ps(mu), vrs = _mm512_set1_ps(rs);
  __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd(), b0 = _mm512_setzero_pd(),
          b1 = _mm512_setzero_pd();
  double s1 = 0.0, s2 = 0.0;
  for (int c = 0; c < cpg; c++) {
    const float gm = gamma ? gamma[c] : 1.0f;
    const __m512 vg = _mm512_set1_ps(gm);
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    for (int p = 0; p < HW16; p += 16) {
      __m512 dxhat = _mm512_mul_ps(_mm512_loadu_ps(dy + p), vg);
      __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + p), vmu), vrs);
      __m512d dl = lo_pd(dxhat), dh = hi_pd(dxhat);
      a0 = _mm512_add_pd(a0, dl);
      a1 = _mm512_add_pd(a1, dh);
      b0 = _mm512_fmadd_pd(dl, lo_pd(xhat), b0);
      b1 = _mm512_fmadd_pd(dh, hi_pd(xhat), b1);
    }
    for (int p = HW16; p < HW; p++) {
      float dxhat = dy[p] * gm, xhat = (x[p] - mu) * rs;
      s1 += dxhat;
      s2 += (double)dxhat * xhat;
    }
  }
  s1 += hsum_pd2(a0, a1);
  s2 += hsum_pd2(b0, b1);
  const float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
  const __m512 vm1 = _mm512_set1_ps(m1), vm2 = _mm512_set1_ps(m2);
  for (int c = 0; c < cpg; c++) {
    const float gm = gamma ? gamma[c] : 1.0f;
    const __m512 vg = _mm512_set1_ps(gm);
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    float *dx = dinp + (size_t)c * HW;
    for (int p = 0; p < HW16; p += 16) {
      __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + p), vmu), vrs);
      __m512 t = _mm512_sub_ps(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(dy + p), vg), vm1),
                               _mm512_mul_ps(xhat, vm2));
      _mm512_storeu_ps(dx + p, _mm512_add_ps(_mm512_loadu_ps(dx + p), _mm512_mul_ps(vrs, t)));
    }
    for (int p = HW16; p < HW; p++) {
      float xhat = (x[p] - mu) * rs;
      dx[p] += rs * (dy[p] * gm - m1 - xhat * m2);
    }
  }
}

/* channel c: *sg = Σ_b Σ_p dout·xhat, *sb = Σ_b Σ_p dout, the batch in order */
__attribute__((target("avx512f"))) static void
groupnorm_dparam_channel_avx512(const float *dout, const float *inp, const float *cmean,
                                const float *crstd, int B, int C, int HW, int G, int cpg, int c,
                                double *sg, double *sb) {
  const int HW16 = HW & ~15;
  __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd(), b0 = _mm512_setzero_pd(),
          b1 = _mm512_setzero_pd();
  double tg = 0.0, tb = 0.0;
  for (int b = 0; b < B; b++) {
    const int bg = b * G + c / cpg;
    const float mu = cmean[bg], rs = crstd[bg];
    const size_t off = ((size_t)b * C + c) * HW;
    const float *dy = dout + off, *x = inp + off;
    const __m512 vmu = _mm512_set1_ps(mu), vrs = _mm512_set1_ps(rs);
    for (int p = 0; p < HW16; p += 16) {
      __m512 d = _mm512_loadu_ps(dy + p);
      __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + p), vmu), vrs);
      __m512d dl = lo_pd(d), dh = hi_pd(d);
      a0 = _mm512_fmadd_pd(dl, lo_pd(xhat), a0);
      a1 = _mm512_fmadd_pd(dh, hi_pd(xhat), a1);
      b0 = _mm512_add_pd(b0, dl);
      b1 = _mm512_add_pd(b1, dh);
    }
    for (int p = HW16; p < HW; p++) {
      tg += (double)dy[p] * ((x[p] - mu) * rs);
      tb += dy[p];
    }
  }
  *sg = hsum_pd2(a0, a1) + tg;
  *sb = hsum_pd2(b0, b1) + tb;
}

/* dinp += dout·silu'(x), silu'(x) = s·(1 + x·(1 − s)), s = 1/(1 + exp(−x)) */
__attribute__((target("avx512f"))) static void silu_backward_avx512(float *dinp, const float *dout,
                                                                    const float *inp, size_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  size_t i = 0;
  for (; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
    __m512 x = _mm512_maskz_loadu_ps(k, inp + i);
    __m512 sg = _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    __m512 d = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, dout + i), sg),
                             _mm512_fmadd_ps(x, _mm512_sub_ps(one, sg), one));
    _mm512_mask_storeu_ps(dinp + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, dinp + i), d));
  }
}

/* dy = dout·silu'(y) with y = (x − mu)·scale + shift recomputed exactly as the forward
 * (groupnorm_group_avx512) and silu' as silu_backward_avx512 but for the sigmoid's
 * reciprocal (rcp14 + one Newton step, <= 2 ulp, a fraction of a division's cost);
 * *xhat = (x − mu)·rstd */
__attribute__((target("avx512f"))) static inline __m512
gnsilu_dy512(__m512 x, __m512 dout, __m512 vmu, __m512 vrs, __m512 vsc, __m512 vsh, __m512 *xhat) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 xm = _mm512_sub_ps(x, vmu);
  *xhat = _mm512_mul_ps(xm, vrs);
  const __m512 y = _mm512_add_ps(_mm512_mul_ps(xm, vsc), vsh);
  const __m512 den = _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), y)));
  __m512 sg = _mm512_rcp14_ps(den);
  sg = _mm512_mul_ps(sg, _mm512_fnmadd_ps(den, sg, _mm512_set1_ps(2.0f)));
  return _mm512_mul_ps(_mm512_mul_ps(dout, sg), _mm512_fmadd_ps(y, _mm512_sub_ps(one, sg), one));
}

/* Fused GroupNorm+SiLU backward of one (b, g) group [cpg, HW], gnsilu_bwd_group's structure.
 * The row sums Σ dy·xhat, Σ dy run in float over blocks of 16 vectors (16 terms a lane, error
 * <= 16 ulp of the block's Σ|term|), each block then added to double lanes: converting every
 * vector to double (as groupnorm_dinp_group_avx512 does) made this op compute-bound. A
 * partial vector's masked lanes load 0 and add exactly 0. part [cpg] (Σ dy·xhat, Σ dy) pairs; dinp NULL:
 * pass 1 only; dyb [cpg·HW] or NULL: see gnsilu_bwd_group. One thread's sequential work. */
__attribute__((target("avx512f"))) static void
gnsilu_bwd_group_avx512(float *dinp, double *part, float *dyb, const float *inp,
                        const float *dout, const float *gamma, const float *beta, int cpg, int HW,
                        float mu, float rs) {
  const size_t n = (size_t)cpg * HW;
  const __m512 vmu = _mm512_set1_ps(mu), vrs = _mm512_set1_ps(rs);
  double s1 = 0.0, s2 = 0.0;
  for (int c = 0; c < cpg; c++) { /* pass 1: the rows' sums, from them the group's */
    const float gm = gamma ? gamma[c] : 1.0f, sh = beta ? beta[c] : 0.0f;
    const __m512 vsc = _mm512_set1_ps(rs * gm), vsh = _mm512_set1_ps(sh);
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    __m512d g0 = _mm512_setzero_pd(), g1 = _mm512_setzero_pd(), e0 = _mm512_setzero_pd(),
            e1 = _mm512_setzero_pd();
    for (int p0 = 0; p0 < HW; p0 += 256) {
      const int pe = HW - p0 < 256 ? HW : p0 + 256;
      __m512 gf = _mm512_setzero_ps(), ef = _mm512_setzero_ps();
      for (int p = p0; p < pe; p += 16) {
        const __mmask16 k = HW - p >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (HW - p)) - 1);
        __m512 xhat;
        const __m512 d = gnsilu_dy512(_mm512_maskz_loadu_ps(k, x + p),
                                      _mm512_maskz_loadu_ps(k, dy + p), vmu, vrs, vsc, vsh, &xhat);
        if (dyb) _mm512_mask_storeu_ps(dyb + (size_t)c * HW + p, k, d);
        gf = _mm512_fmadd_ps(d, xhat, gf);
        ef = _mm512_add_ps(ef, d);
      }
      g0 = _mm512_add_pd(g0, lo_pd(gf));
      g1 = _mm512_add_pd(g1, hi_pd(gf));
      e0 = _mm512_add_pd(e0, lo_pd(ef));
      e1 = _mm512_add_pd(e1, hi_pd(ef));
    }
    /* a fixed shuffle tree, cheaper than hsum_pd2's 16 dependent adds on short rows */
    const double rg = _mm512_reduce_add_pd(_mm512_add_pd(g0, g1)),
                 rb = _mm512_reduce_add_pd(_mm512_add_pd(e0, e1));
    part[2 * c] = rg;
    part[2 * c + 1] = rb;
    s1 += (double)gm * rb;
    s2 += (double)gm * rg;
  }
  if (!dinp) return;
  const float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
  const __m512 vm1 = _mm512_set1_ps(m1), vm2 = _mm512_set1_ps(m2);
  for (int c = 0; c < cpg; c++) { /* pass 2: dy from dyb, else recomputed */
    const float gm = gamma ? gamma[c] : 1.0f, sh = beta ? beta[c] : 0.0f;
    const __m512 vg = _mm512_set1_ps(gm), vsc = _mm512_set1_ps(rs * gm), vsh = _mm512_set1_ps(sh);
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    const float *db = dyb ? dyb + (size_t)c * HW : NULL;
    float *dx = dinp + (size_t)c * HW;
    for (int p = 0; p < HW; p += 16) {
      const __mmask16 k = HW - p >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (HW - p)) - 1);
      const __m512 xv = _mm512_maskz_loadu_ps(k, x + p);
      __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(xv, vmu), vrs), d;
      if (db)
        d = _mm512_maskz_loadu_ps(k, db + p);
      else
        d = gnsilu_dy512(xv, _mm512_maskz_loadu_ps(k, dy + p), vmu, vrs, vsc, vsh, &xhat);
      const __m512 t = _mm512_sub_ps(_mm512_sub_ps(_mm512_mul_ps(d, vg), vm1),
                                     _mm512_mul_ps(xhat, vm2));
      _mm512_mask_storeu_ps(dx + p, k,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(k, dx + p), _mm512_mul_ps(vrs, t)));
    }
  }
}

/* ---- AVX2 + FMA versions of the paths above (avx2_cpu_ok: CPUs without AVX-512F, or any
 * AVX2 CPU under SDE_NN_ISA=avx2) ----------------------------------------------------------
 * The AVX-512 functions' operations in the same order, 8 floats a vector: the double sums
 * keep the AVX-512 layout of 16 lanes (pd16: lane i takes a row's terms i mod 16, as the two
 * __m512d did) and its reduction orders, and exp256 gives exp512's bits (checked against a
 * scalar emulation of exp512), so all but the fused GroupNorm+SiLU backward should match the
 * AVX-512 paths bit for bit (not checked on an AVX-512 CPU). That one's sigmoid is a true
 * division here (rcp_ps, unlike rcp14, differs between CPU vendors). Partial vectors:
 * maskload (the masked lanes read 0) and maskstore. */
__attribute__((target("avx2,fma"))) static inline __m256i mask8(int k) { /* lanes < k, k <= 8 */
  static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256((const __m256i *)(m + 8 - k));
}
/* the first min(k, 8) floats at p (k >= 1), the other lanes 0 */
__attribute__((target("avx2,fma"))) static inline __m256 load8(const float *p, int k) {
  return k >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask8(k));
}
__attribute__((target("avx2,fma"))) static inline void store8(float *p, int k, __m256 v) {
  if (k >= 8)
    _mm256_storeu_ps(p, v);
  else
    _mm256_maskstore_ps(p, mask8(k), v);
}

/* exp512's clamp, reduction and polynomial; p·2^n by adding n to p's exponent field (AVX2
 * has no scalef). After the clamp n is in [−126, 128] and p = e^r in [0.70, 1.42], with
 * r > 0.03 (p > 1) when n = −126 and r < −0.02 (p < 1) when n = 128: the biased exponent
 * stays in [1, 254], a normal float equal to scalef's result (never inf, NaN or denormal). */
__attribute__((target("avx2,fma"))) static inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

/* silu(y) = y / (1 + exp(−y)) */
__attribute__((target("avx2,fma"))) static inline __m256 silu256(__m256 y) {
  __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), y));
  return _mm256_div_ps(y, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* 16 double lanes, v[0] lanes 0..3, ..., v[3] lanes 12..15 */
typedef struct {
  __m256d v[4];
} pd16;
/* floats 0..3, 4..7 of a as doubles */
__attribute__((target("avx2,fma"))) static inline __m256d lo4_pd(__m256 a) {
  return _mm256_cvtps_pd(_mm256_castps256_ps128(a));
}
__attribute__((target("avx2,fma"))) static inline __m256d hi4_pd(__m256 a) {
  return _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
}
/* lanes 0..7 += a, lanes 8..15 += b */
__attribute__((target("avx2,fma"))) static inline void pd16_add(pd16 *s, __m256 a, __m256 b) {
  s->v[0] = _mm256_add_pd(s->v[0], lo4_pd(a));
  s->v[1] = _mm256_add_pd(s->v[1], hi4_pd(a));
  s->v[2] = _mm256_add_pd(s->v[2], lo4_pd(b));
  s->v[3] = _mm256_add_pd(s->v[3], hi4_pd(b));
}
/* lanes 0..7 += a·x, lanes 8..15 += b·y, in double */
__attribute__((target("avx2,fma"))) static inline void pd16_fma(pd16 *s, __m256 a, __m256 x,
                                                                __m256 b, __m256 y) {
  s->v[0] = _mm256_fmadd_pd(lo4_pd(a), lo4_pd(x), s->v[0]);
  s->v[1] = _mm256_fmadd_pd(hi4_pd(a), hi4_pd(x), s->v[1]);
  s->v[2] = _mm256_fmadd_pd(lo4_pd(b), lo4_pd(y), s->v[2]);
  s->v[3] = _mm256_fmadd_pd(hi4_pd(b), hi4_pd(y), s->v[3]);
}
/* the 16 lanes in order, as hsum_pd2 */
__attribute__((target("avx2,fma"))) static double pd16_sum(const pd16 *s) {
  double t[16];
  for (int q = 0; q < 4; q++) _mm256_storeu_pd(t + 4 * q, s->v[q]);
  double r = 0.0;
  for (int i = 0; i < 16; i++) r += t[i];
  return r;
}
/* _mm512_reduce_add_pd(lanes 0..7 + lanes 8..15): the same tree */
__attribute__((target("avx2,fma"))) static inline double pd16_tree(const pd16 *s) {
  const __m256d t = _mm256_add_pd(_mm256_add_pd(s->v[1], s->v[3]), _mm256_add_pd(s->v[0], s->v[2]));
  const __m128d u = _mm_add_pd(_mm256_extractf128_pd(t, 1), _mm256_castpd256_pd128(t));
  return _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
}

/* groupnorm_group_avx512 */
__attribute__((target("avx2,fma"))) static void
groupnorm_group_avx2(float *y, const float *x, const float *gamma, const float *beta, int cpg,
                     int HW, float eps, int with_silu, float *mean_out, float *rstd_out) {
  size_t n = (size_t)cpg * HW, n16 = n & ~(size_t)15;
  pd16 s = {{_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()}};
  for (size_t i = 0; i < n16; i += 16)
    pd16_add(&s, _mm256_loadu_ps(x + i), _mm256_loadu_ps(x + i + 8));
  double sum = pd16_sum(&s);
  for (size_t i = n16; i < n; i++) sum += x[i];
  double mean = sum / (double)n;
  const __m256d m = _mm256_set1_pd(mean);
  for (int q = 0; q < 4; q++) s.v[q] = _mm256_setzero_pd();
  for (size_t i = 0; i < n16; i += 16) {
    for (int q = 0; q < 4; q++) {
      __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * q)), m);
      s.v[q] = _mm256_fmadd_pd(d, d, s.v[q]);
    }
  }
  double ss = pd16_sum(&s);
  for (size_t i = n16; i < n; i++) {
    double d = x[i] - mean;
    ss += d * d;
  }
  float meanf = (float)mean, rstd = (float)(1.0 / sqrt(ss / (double)n + eps));
  const __m256 mv = _mm256_set1_ps(meanf);
  for (int c = 0; c < cpg; c++) {
    float scale = rstd * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
    const __m256 sv = _mm256_set1_ps(scale), bv = _mm256_set1_ps(shift);
    const float *xc = x + (size_t)c * HW;
    float *yc = y + (size_t)c * HW;
    for (int p = 0; p < HW; p += 8) {
      const int k = HW - p;
      __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(load8(xc + p, k), mv), sv), bv);
      store8(yc + p, k, with_silu ? silu256(v) : v);
    }
  }
  if (mean_out) *mean_out = meanf;
  if (rstd_out) *rstd_out = rstd;
}

__attribute__((target("avx2,fma"))) static void silu_avx2(float *out, const float *inp,
                                                         size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    const int k = n - i >= 8 ? 8 : (int)(n - i);
    store8(out + i, k, silu256(load8(inp + i, k)));
  }
}

/* groupnorm_dinp_group_avx512 */
__attribute__((target("avx2,fma"))) static void
groupnorm_dinp_group_avx2(float *dinp, const float *inp, const float *dout, const float *gamma,
                          int cpg, int HW, float mu, float rs) {
  const size_t n = (size_t)cpg * HW;
  const int HW16 = HW & ~15;
  const __m256 vmu = _mm256_set1_ps(mu), vrs = _mm256_set1_ps(rs);
  const __m256d z = _mm256_setzero_pd();
  pd16 a = {{z, z, z, z}}, b = {{z, z, z, z}};
  double s1 = 0.0, s2 = 0.0;
  for (int c = 0; c < cpg; c++) {
    const float gm = gamma ? gamma[c] : 1.0f;
    const __m256 vg = _mm256_set1_ps(gm);
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    for (int p = 0; p < HW16; p += 16) {
      __m256 dxhat0 = _mm256_mul_ps(_mm256_loadu_ps(dy + p), vg),
             dxhat1 = _mm256_mul_ps(_mm256_loadu_ps(dy + p + 8), vg);
      __m256 xhat0 = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + p), vmu), vrs),
             xhat1 = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + p + 8), vmu), vrs);
      pd16_add(&a, dxhat0, dxhat1);
      pd16_fma(&b, dxhat0, xhat0, dxhat1, xhat1);
    }
    for (int p = HW16; p < HW; p++) {
      float dxhat = dy[p] * gm, xhat = (x[p] - mu) * rs;
      s1 += dxhat;
      s2 += (double)dxhat * xhat;
    }
  }
  s1 += pd16_sum(&a);
  s2 += pd16_sum(&b);
  const float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
  const __m256 vm1 = _mm256_set1_ps(m1), vm2 = _mm256_set1_ps(m2);
  for (int c = 0; c < cpg; c++) {
    const float gm = gamma ? gamma[c] : 1.0f;
    const __m256 vg = _mm256_set1_ps(gm);
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    float *dx = dinp + (size_t)c * HW;
    int p = 0;
    for (; p + 8 <= HW16; p += 8) {
      __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + p), vmu), vrs);
      __m256 t = _mm256_sub_ps(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(dy + p), vg), vm1),
                               _mm256_mul_ps(xhat, vm2));
      _mm256_storeu_ps(dx + p, _mm256_add_ps(_mm256_loadu_ps(dx + p), _mm256_mul_ps(vrs, t)));
    }
    for (; p < HW; p++) {
      float xhat = (x[p] - mu) * rs;
      dx[p] += rs * (dy[p] * gm - m1 - xhat * m2);
    }
  }
}

/* groupnorm_dparam_channel_avx512 */
__attribute__((target("avx2,fma"))) static void
groupnorm_dparam_channel_avx2(const float *dout, const float *inp, const float *cmean,
                              const float *crstd, int B, int C, int HW, int G, int cpg, int c,
                              double *sg, double *sb) {
  const int HW16 = HW & ~15;
  const __m256d z = _mm256_setzero_pd();
  pd16 a = {{z, z, z, z}}, e = {{z, z, z, z}};
  double tg = 0.0, tb = 0.0;
  for (int b = 0; b < B; b++) {
    const int bg = b * G + c / cpg;
    const float mu = cmean[bg], rs = crstd[bg];
    const size_t off = ((size_t)b * C + c) * HW;
    const float *dy = dout + off, *x = inp + off;
    const __m256 vmu = _mm256_set1_ps(mu), vrs = _mm256_set1_ps(rs);
    for (int p = 0; p < HW16; p += 16) {
      __m256 d0 = _mm256_loadu_ps(dy + p), d1 = _mm256_loadu_ps(dy + p + 8);
      __m256 xhat0 = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + p), vmu), vrs),
             xhat1 = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + p + 8), vmu), vrs);
      pd16_fma(&a, d0, xhat0, d1, xhat1);
      pd16_add(&e, d0, d1);
    }
    for (int p = HW16; p < HW; p++) {
      tg += (double)dy[p] * ((x[p] - mu) * rs);
      tb += dy[p];
    }
  }
  *sg = pd16_sum(&a) + tg;
  *sb = pd16_sum(&e) + tb;
}

/* silu_backward_avx512 */
__attribute__((target("avx2,fma"))) static void silu_backward_avx2(float *dinp, const float *dout,
                                                                  const float *inp, size_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (size_t i = 0; i < n; i += 8) {
    const int k = n - i >= 8 ? 8 : (int)(n - i);
    __m256 x = load8(inp + i, k);
    __m256 sg =
        _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
    __m256 d = _mm256_mul_ps(_mm256_mul_ps(load8(dout + i, k), sg),
                             _mm256_fmadd_ps(x, _mm256_sub_ps(one, sg), one));
    store8(dinp + i, k, _mm256_add_ps(load8(dinp + i, k), d));
  }
}

/* gnsilu_dy512 with the sigmoid by division */
__attribute__((target("avx2,fma"))) static inline __m256
gnsilu_dy256(__m256 x, __m256 dout, __m256 vmu, __m256 vrs, __m256 vsc, __m256 vsh, __m256 *xhat) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 xm = _mm256_sub_ps(x, vmu);
  *xhat = _mm256_mul_ps(xm, vrs);
  const __m256 y = _mm256_add_ps(_mm256_mul_ps(xm, vsc), vsh);
  const __m256 sg =
      _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), y))));
  return _mm256_mul_ps(_mm256_mul_ps(dout, sg), _mm256_fmadd_ps(y, _mm256_sub_ps(one, sg), one));
}

/* gf += dy·xhat, ef += dy over min(k, 8) values at x, dout (the other lanes add 0); dy also
 * to db (NULL: not kept) */
__attribute__((target("avx2,fma"))) static inline void
gnsilu_sums8(__m256 *gf, __m256 *ef, float *db, const float *x, const float *dout, int k,
             __m256 vmu, __m256 vrs, __m256 vsc, __m256 vsh) {
  __m256 xhat;
  const __m256 d = gnsilu_dy256(load8(x, k), load8(dout, k), vmu, vrs, vsc, vsh, &xhat);
  if (db) store8(db, k, d);
  *gf = _mm256_fmadd_ps(d, xhat, *gf);
  *ef = _mm256_add_ps(*ef, d);
}

/* gnsilu_bwd_group_avx512: the row sums in float over blocks of 256 values (lane i of the
 * pair gf0, gf1 takes the values i mod 16, 16 terms a lane), each block then added to the 16
 * double lanes */
__attribute__((target("avx2,fma"))) static void
gnsilu_bwd_group_avx2(float *dinp, double *part, float *dyb, const float *inp, const float *dout,
                      const float *gamma, const float *beta, int cpg, int HW, float mu, float rs) {
  const size_t n = (size_t)cpg * HW;
  const __m256 vmu = _mm256_set1_ps(mu), vrs = _mm256_set1_ps(rs);
  const __m256d z = _mm256_setzero_pd();
  double s1 = 0.0, s2 = 0.0;
  for (int c = 0; c < cpg; c++) { /* pass 1: the rows' sums, from them the group's */
    const float gm = gamma ? gamma[c] : 1.0f, sh = beta ? beta[c] : 0.0f;
    const __m256 vsc = _mm256_set1_ps(rs * gm), vsh = _mm256_set1_ps(sh);
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    float *db = dyb ? dyb + (size_t)c * HW : NULL;
    pd16 g = {{z, z, z, z}}, e = {{z, z, z, z}};
    for (int p0 = 0; p0 < HW; p0 += 256) {
      const int pe = HW - p0 < 256 ? HW : p0 + 256;
      __m256 gf0 = _mm256_setzero_ps(), gf1 = gf0, ef0 = gf0, ef1 = gf0;
      for (int p = p0; p < pe; p += 16) {
        gnsilu_sums8(&gf0, &ef0, db ? db + p : NULL, x + p, dy + p, HW - p, vmu, vrs, vsc, vsh);
        if (HW - p > 8)
          gnsilu_sums8(&gf1, &ef1, db ? db + p + 8 : NULL, x + p + 8, dy + p + 8, HW - p - 8, vmu,
                       vrs, vsc, vsh);
      }
      pd16_add(&g, gf0, gf1);
      pd16_add(&e, ef0, ef1);
    }
    const double rg = pd16_tree(&g), rb = pd16_tree(&e);
    part[2 * c] = rg;
    part[2 * c + 1] = rb;
    s1 += (double)gm * rb;
    s2 += (double)gm * rg;
  }
  if (!dinp) return;
  const float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
  const __m256 vm1 = _mm256_set1_ps(m1), vm2 = _mm256_set1_ps(m2);
  for (int c = 0; c < cpg; c++) { /* pass 2: dy from dyb, else recomputed */
    const float gm = gamma ? gamma[c] : 1.0f, sh = beta ? beta[c] : 0.0f;
    const __m256 vg = _mm256_set1_ps(gm), vsc = _mm256_set1_ps(rs * gm), vsh = _mm256_set1_ps(sh);
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    const float *db = dyb ? dyb + (size_t)c * HW : NULL;
    float *dx = dinp + (size_t)c * HW;
    for (int p = 0; p < HW; p += 8) {
      const int k = HW - p;
      const __m256 xv = load8(x + p, k);
      __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(xv, vmu), vrs), d;
      if (db)
        d = load8(db + p, k);
      else
        d = gnsilu_dy256(xv, load8(dy + p, k), vmu, vrs, vsc, vsh, &xhat);
      const __m256 t = _mm256_sub_ps(_mm256_sub_ps(_mm256_mul_ps(d, vg), vm1),
                                     _mm256_mul_ps(xhat, vm2));
      store8(dx + p, k, _mm256_add_ps(load8(dx + p, k), _mm256_mul_ps(vrs, t)));
    }
  }
}
#endif

/* The vector paths of this file: simd_level(), except that SDE_NN_NO_DIRECT_CONV is read
 * again on each call (simd_level keeps its first answer), so that a test can compare a vector
 * path with the scalar loops in one process. Only here: these ops size no scratch, whereas a
 * conv's workspace, planned once, must match the path it later runs. */
static int norm_simd(void) {
  const char *e = getenv("SDE_NN_NO_DIRECT_CONV");
  return e && *e && *e != '0' ? 0 : simd_level();
}

/* GroupNorm forward and backward, one (sample, group) or one channel per index */
typedef struct {
  float *out, *mean, *rstd, *dgamma, *dbeta;
  double *part; /* fused backward: [B, C] (Σ dy·xhat, Σ dy) pairs, rows of one thread */
  float *dsum;  /* fused backward, store: [B, C] Σ_p dinp, or NULL */
  int store;    /* fused backward: dinp overwritten, not added to */
  const float *inp, *dout, *gamma, *beta, *cmean, *crstd;
  int B, C, HW, G, cpg, with_silu, simd; /* simd: norm_simd() */
  float eps;
} gn_job;

static void groupnorm_groups(void *ctx, int64_t bg0, int64_t bg1) {
  const gn_job *j = ctx;
  const int cpg = j->cpg, HW = j->HW;
  for (int bg = (int)bg0; bg < bg1; bg++) {
    int g = bg % j->G;
    size_t off = (size_t)bg * cpg * HW;
    const float *gamma = j->gamma ? j->gamma + g * cpg : NULL;
    const float *beta = j->beta ? j->beta + g * cpg : NULL;
    float *mean = j->mean ? j->mean + bg : NULL, *rstd = j->rstd ? j->rstd + bg : NULL;
#ifdef HAVE_DCONV
    if (j->simd == 2)
      groupnorm_group_avx512(j->out + off, j->inp + off, gamma, beta, cpg, HW, j->eps,
                             j->with_silu, mean, rstd);
    else if (j->simd == 1)
      groupnorm_group_avx2(j->out + off, j->inp + off, gamma, beta, cpg, HW, j->eps,
                           j->with_silu, mean, rstd);
    else
#endif
      groupnorm_group(j->out + off, j->inp + off, gamma, beta, cpg, HW, j->eps, j->with_silu,
                      mean, rstd);
  }
}

static int groupnorm_forward_impl(float *out, float *mean, float *rstd, const float *inp,
                                  const float *gamma, const float *beta, int B, int C, int HW,
                                  int G, float eps, int with_silu) {
  int rc = groupnorm_check(B, C, HW, G);
  if (rc) return rc;
  gn_job j = {.out = out, .mean = mean, .rstd = rstd, .inp = inp, .gamma = gamma, .beta = beta,
              .B = B, .C = C, .HW = HW, .G = G, .cpg = C / G, .with_silu = with_silu,
              .simd = norm_simd(), .eps = eps};
  sde_parallel_for(B * G, grain(B * G, (size_t)B * C * HW), groupnorm_groups, &j);
  return SDE_OK;
}

int sde_nn_groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                             const float *gamma, const float *beta, int B, int C, int HW, int G,
                             float eps) {
  return groupnorm_forward_impl(out, mean, rstd, inp, gamma, beta, B, C, HW, G, eps, 0);
}

int sde_nn_groupnorm_silu_forward(float *out, const float *inp, const float *gamma,
                                  const float *beta, int B, int C, int HW, int G, float eps) {
  return groupnorm_forward_impl(out, NULL, NULL, inp, gamma, beta, B, C, HW, G, eps, 1);
}

int sde_nn_groupnorm_silu_forward_train(float *out, float *mean, float *rstd, const float *inp,
                                        const float *gamma, const float *beta, int B, int C,
                                        int HW, int G, float eps) {
  return groupnorm_forward_impl(out, mean, rstd, inp, gamma, beta, B, C, HW, G, eps, 1);
}

/* per group: dx = rstd·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat)), dxhat = dout·gamma */
static void groupnorm_dinp_groups(void *ctx, int64_t bg0, int64_t bg1) {
  const gn_job *j = ctx;
  const int cpg = j->cpg, HW = j->HW;
  const float *gamma = j->gamma, *inp = j->inp, *dout = j->dout;
  float *dinp = j->out;
  for (int bg = (int)bg0; bg < bg1; bg++) {
    int g = bg % j->G;
    size_t off = (size_t)bg * cpg * HW, n = (size_t)cpg * HW;
    float mu = j->cmean[bg], rs = j->crstd[bg];
#ifdef HAVE_DCONV
    if (j->simd == 2) {
      groupnorm_dinp_group_avx512(dinp + off, inp + off, dout + off, gamma ? gamma + g * cpg : NULL,
                                  cpg, HW, mu, rs);
      continue;
    }
    if (j->simd == 1) {
      groupnorm_dinp_group_avx2(dinp + off, inp + off, dout + off, gamma ? gamma + g * cpg : NULL,
                                cpg, HW, mu, rs);
      continue;
    }
#endif
    double s1 = 0.0, s2 = 0.0;
    for (int c = 0; c < cpg; c++) {
      float gm = gamma ? gamma[g * cpg + c] : 1.0f;
      const float *x = inp + off + (size_t)c * HW, *dy = dout + off + (size_t)c * HW;
      for (int p = 0; p < HW; p++) {
        float dxhat = dy[p] * gm, xhat = (x[p] - mu) * rs;
        s1 += dxhat;
        s2 += (double)dxhat * xhat;
      }
    }
    float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
    for (int c = 0; c < cpg; c++) {
      float gm = gamma ? gamma[g * cpg + c] : 1.0f;
      const float *x = inp + off + (size_t)c * HW, *dy = dout + off + (size_t)c * HW;
      float *dx = dinp + off + (size_t)c * HW;
      for (int p = 0; p < HW; p++) {
        float xhat = (x[p] - mu) * rs;
        dx[p] += rs * (dy[p] * gm - m1 - xhat * m2);
      }
    }
  }
}

/* dgamma[c] += Σ_b Σ_p dout·xhat, dbeta[c] += Σ_b Σ_p dout, one channel per thread */
static void groupnorm_dparam_channels(void *ctx, int64_t c0, int64_t c1) {
  const gn_job *j = ctx;
  const int HW = j->HW;
  for (int c = (int)c0; c < c1; c++) {
    double sg = 0.0, sb = 0.0;
#ifdef HAVE_DCONV
    if (j->simd) {
      if (j->simd == 2)
        groupnorm_dparam_channel_avx512(j->dout, j->inp, j->cmean, j->crstd, j->B, j->C, HW, j->G,
                                        j->cpg, c, &sg, &sb);
      else
        groupnorm_dparam_channel_avx2(j->dout, j->inp, j->cmean, j->crstd, j->B, j->C, HW, j->G,
                                      j->cpg, c, &sg, &sb);
      if (j->dgamma) j->dgamma[c] += (float)sg;
      if (j->dbeta) j->dbeta[c] += (float)sb;
      continue;
    }
#endif
    for (int b = 0; b < j->B; b++) {
      int bg = b * j->G + c / j->cpg;
      float mu = j->cmean[bg], rs = j->crstd[bg];
      size_t off = ((size_t)b * j->C + c) * HW;
      for (int p = 0; p < HW; p++) {
        sg += (double)j->dout[off + p] * ((j->inp[off + p] - mu) * rs);
        sb += j->dout[off + p];
      }
    }
    if (j->dgamma) j->dgamma[c] += (float)sg;
    if (j->dbeta) j->dbeta[c] += (float)sb;
  }
}

int sde_nn_groupnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                              const float *inp, const float *mean, const float *rstd,
                              const float *gamma, int B, int C, int HW, int G) {
  int rc = groupnorm_check(B, C, HW, G);
  if (rc) return rc;
  gn_job j = {.out = dinp, .dgamma = dgamma, .dbeta = dbeta, .inp = inp, .dout = dout,
              .gamma = gamma, .cmean = mean, .crstd = rstd, .B = B, .C = C, .HW = HW, .G = G,
              .cpg = C / G, .simd = norm_simd()};
  size_t total = (size_t)B * C * HW;
  if (dinp) sde_parallel_for(B * G, grain(B * G, total), groupnorm_dinp_groups, &j);
  if (dgamma || dbeta) sde_parallel_for(C, grain(C, total), groupnorm_dparam_channels, &j);
  return SDE_OK;
}

/* ---- fused GroupNorm+SiLU backward ------------------------------------------------------
 * out = silu(y), y = xhat·gamma + beta, xhat = (x − mean)·rstd. Per (b, g) group two passes
 * over x and dout that recompute y and dy = dout·silu'(y) (no y or dy plane is written or
 * read again):
 *   pass 1: per row (b, c) Σ dy·xhat, Σ dy; from them Σ dy·gamma, Σ dy·gamma·xhat over
 *           the group
 *   pass 2: dx += rstd·(dy·gamma − mean(dy·gamma) − xhat·mean(dy·gamma·xhat))
 * then dgamma, dbeta += the rows' sums over b in order: fixed order for any thread count.
 * dyb: one group's dy [cpg·HW] kept by pass 1 for pass 2 (a cache-sized buffer per thread
 * that spares the second exp and division; the same bits as recomputing), NULL: recompute. */
static void gnsilu_bwd_group(float *dinp, double *part, float *dyb, const float *inp,
                             const float *dout, const float *gamma, const float *beta, int cpg,
                             int HW, float mu, float rs) {
  const size_t n = (size_t)cpg * HW;
  double s1 = 0.0, s2 = 0.0;
  for (int c = 0; c < cpg; c++) {
    const float gm = gamma ? gamma[c] : 1.0f, scale = rs * gm, sh = beta ? beta[c] : 0.0f;
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    double rg = 0.0, rb = 0.0;
    for (int p = 0; p < HW; p++) {
      /* y exactly as groupnorm_group computed it, silu' as sde_nn_silu_backward */
      float xhat = (x[p] - mu) * rs, y = (x[p] - mu) * scale + sh;
      float sg = 1.0f / (1.0f + expf(-y)), d = dy[p] * sg * (1.0f + y * (1.0f - sg));
      if (dyb) dyb[(size_t)c * HW + p] = d;
      rg += (double)d * xhat;
      rb += d;
    }
    part[2 * c] = rg;
    part[2 * c + 1] = rb;
    s1 += (double)gm * rb; /* Σ dy·gamma, Σ dy·gamma·xhat over the group */
    s2 += (double)gm * rg;
  }
  if (!dinp) return;
  const float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
  for (int c = 0; c < cpg; c++) {
    const float gm = gamma ? gamma[c] : 1.0f, scale = rs * gm, sh = beta ? beta[c] : 0.0f;
    const float *x = inp + (size_t)c * HW, *dy = dout + (size_t)c * HW;
    const float *db = dyb ? dyb + (size_t)c * HW : NULL;
    float *dx = dinp + (size_t)c * HW;
    for (int p = 0; p < HW; p++) {
      float xhat = (x[p] - mu) * rs, d;
      if (db) {
        d = db[p];
      } else {
        float y = (x[p] - mu) * scale + sh, sg = 1.0f / (1.0f + expf(-y));
        d = dy[p] * sg * (1.0f + y * (1.0f - sg));
      }
      dx[p] += rs * (d * gm - m1 - xhat * m2);
    }
  }
}

/* One group of the fused backward: in store mode its dinp block is cleared first (it then
 * sits in L1/L2 for the kernel's add, rather than a whole-tensor zeroing pass beforehand),
 * and the rows' sums of what was stored are taken while it is still there. */
static void gnsilu_bwd_groups(void *ctx, int64_t bg0, int64_t bg1) {
  const gn_job *j = ctx;
  const int cpg = j->cpg, HW = j->HW;
  float *dyb = j->out ? malloc((size_t)cpg * HW * sizeof(float)) : NULL; /* NULL: recompute */
  for (int bg = (int)bg0; bg < bg1; bg++) {
    const int g = bg % j->G;
    const size_t off = (size_t)bg * cpg * HW;
    const float *gamma = j->gamma ? j->gamma + g * cpg : NULL;
    const float *beta = j->beta ? j->beta + g * cpg : NULL;
    double *part = j->part + 2 * (size_t)bg * cpg; /* rows (b, g·cpg + c) */
    float *dx = j->out ? j->out + off : NULL;
    if (dx && j->store) memset(dx, 0, (size_t)cpg * HW * sizeof(float));
#ifdef HAVE_DCONV
    if (j->simd == 2)
      gnsilu_bwd_group_avx512(dx, part, dyb, j->inp + off, j->dout + off, gamma, beta, cpg, HW,
                              j->cmean[bg], j->crstd[bg]);
    else if (j->simd == 1)
      gnsilu_bwd_group_avx2(dx, part, dyb, j->inp + off, j->dout + off, gamma, beta, cpg, HW,
                            j->cmean[bg], j->crstd[bg]);
    else
#endif
      gnsilu_bwd_group(dx, part, dyb, j->inp + off, j->dout + off, gamma, beta, cpg, HW,
                       j->cmean[bg], j->crstd[bg]);
    if (dx && j->dsum) /* rows (b, g·cpg + c), as add_channel_bias_backward sums them */
      for (int c = 0; c < cpg; c++)
        j->dsum[(size_t)bg * cpg + c] = (float)sde_ops_sum_row(dx + (size_t)c * HW, HW);
  }
  free(dyb);
}

static int gnsilu_backward(float *dinp, float *dgamma, float *dbeta, float *dsum, int store,
                           const float *dout, const float *inp, const float *mean,
                           const float *rstd, const float *gamma, const float *beta, int B, int C,
                           int HW, int G) {
  int rc = groupnorm_check(B, C, HW, G);
  if (rc) return rc;
  if (!dinp && !dgamma && !dbeta) return SDE_OK;
  double *part = sde_malloc(2 * (size_t)B * C * sizeof(double));
  if (!part) return SDE_ENOMEM;
  gn_job j = {.out = dinp, .part = part, .dsum = dinp ? dsum : NULL, .store = store,
              .inp = inp, .dout = dout, .gamma = gamma, .beta = beta, .cmean = mean,
              .crstd = rstd, .B = B, .C = C, .HW = HW, .G = G, .cpg = C / G,
              .simd = norm_simd()};
  sde_parallel_for(B * G, grain(B * G, (size_t)B * C * HW), gnsilu_bwd_groups, &j);
  for (int c = 0; (dgamma || dbeta) && c < C; c++) { /* the batch in order */
    double sg = 0.0, sb = 0.0;
    for (int b = 0; b < B; b++) {
      sg += part[2 * ((size_t)b * C + c)];
      sb += part[2 * ((size_t)b * C + c) + 1];
    }
    if (dgamma) dgamma[c] += (float)sg;
    if (dbeta) dbeta[c] += (float)sb;
  }
  free(part);
  return SDE_OK;
}

int sde_nn_groupnorm_silu_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                                   const float *inp, const float *mean, const float *rstd,
                                   const float *gamma, const float *beta, int B, int C, int HW,
                                   int G) {
  return gnsilu_backward(dinp, dgamma, dbeta, NULL, 0, dout, inp, mean, rstd, gamma, beta, B, C,
                         HW, G);
}

int sde_nn_groupnorm_silu_backward_store(float *dinp, float *dgamma, float *dbeta, float *dsum,
                                         const float *dout, const float *inp, const float *mean,
                                         const float *rstd, const float *gamma,
                                         const float *beta, int B, int C, int HW, int G) {
  return gnsilu_backward(dinp, dgamma, dbeta, dsum, 1, dout, inp, mean, rstd, gamma, beta, B, C,
                         HW, G);
}

/* Each element's result depends only on its value, not on where a range starts. */
static void silu_range(void *ctx, int64_t i0, int64_t i1) {
  const ew_job *j = ctx;
#ifdef HAVE_DCONV
  if (j->simd == 2) {
    silu_avx512(j->out + i0, j->a + i0, (size_t)(i1 - i0));
    return;
  }
  if (j->simd == 1) {
    silu_avx2(j->out + i0, j->a + i0, (size_t)(i1 - i0));
    return;
  }
#endif
  for (int64_t i = i0; i < i1; i++) j->out[i] = silu1(j->a[i]);
}

void sde_nn_silu_forward(float *out, const float *inp, size_t n) {
  ew_job j = {.out = out, .a = inp, .simd = norm_simd()};
  sde_parallel_for((int64_t)n, grain((int64_t)n, n), silu_range, &j);
}

static void silu_backward_range(void *ctx, int64_t i0, int64_t i1) {
  const ew_job *j = ctx;
#ifdef HAVE_DCONV
  if (j->simd == 2) {
    silu_backward_avx512(j->out + i0, j->a + i0, j->b + i0, (size_t)(i1 - i0));
    return;
  }
  if (j->simd == 1) {
    silu_backward_avx2(j->out + i0, j->a + i0, j->b + i0, (size_t)(i1 - i0));
    return;
  }
#endif
  for (int64_t i = i0; i < i1; i++) {
    float x = j->b[i], sg = 1.0f / (1.0f + expf(-x));
    j->out[i] += j->a[i] * sg * (1.0f + x * (1.0f - sg));
  }
}

void sde_nn_silu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
  ew_job j = {.out = dinp, .a = dout, .b = inp, .simd = norm_simd()};
  sde_parallel_for((int64_t)n, grain((int64_t)n, n), silu_backward_range, &j);
}

