// The int8 part of every compiled CPU library: a u8 x s8 GEMM with int32 accumulation for quantized layers, its
// packing, and the requantizing epilogue. With AVX-512 VNNI the microkernel is vpdpbusd (four u8 x s8 products summed
// into each int32 lane); without it, portable C over the same packed layouts. The choice is made at run time (cpuid),
// so a library built on a VNNI machine still runs, more slowly, on one without.
//
// Layouts. C[M][N] = A[M][K] x B[K][N], K rounded up to a multiple of 4 (K4). A is broadcast four bytes at a time,
// packed [M/MR][K4/4][MR][4]; B is read as vectors, packed [N/NR][K4/4][NR][4]. vpdpbusd multiplies unsigned bytes by
// signed ones, so the activation operand is unsigned: int8 activations are stored xor 0x80 (x + 128), and the layer
// subtracts comp[ch] = (128 + x_zero_point) * sum_k W[ch][k] (x_zero_point alone for uint8). A convolution (NCHW) has
// the weights as A (output channels = rows) and the activations as B (im2col, packed per column panel; in grid form
// from stride-phase planes, kiln_qconv_grid), or for small images the pixels as rows (kiln_qconv_px); a MatMul has
// the activations as A and the weights as B (output channels = columns).

import { INT8_ELEM_C } from './int8-elem.c.js';

/** Declarations shared by every translation unit. */
export const INT8_H = String.raw`
typedef struct qgemm_s {
  int M, N, K;
  int conv;                        /* 1: A = s8 weights, B = u8 activations; 0: A = u8 activations, B = s8 weights */
  const int8_t *ap;                /* A packed [M/MR][K4/4][MR][4] */
  const int8_t *bp;                /* B packed [N/NR][K4/4][NR][4], or NULL: packb fills a panel per column block */
  void (*packb)(const void *ctx, int j0, int nj, uint8_t *panel);
  const void *ctx;
  const int32_t *comp; const float *scale; const float *bias; /* per output channel (rows for conv, columns else) */
  const float *res;                /* residual [M][N], or NULL */
  int act; float lo, hi;           /* 0 none, 1 relu, 2 clip(lo, hi) */
  int out;                         /* 0 float32, 1 int8, 2 uint8 */
  float y_scale; int y_zp;
  void *c;                         /* [M][N] */
  int vnni;                        /* set by kiln_qgemm: which microkernel runs */
  int gw, ow;                      /* gw > 0: the N columns are a grid gw wide of which the first ow of each row are
                                      outputs (kiln_qconv_grid); c and res are then [M][N / gw * ow] */
} qgemm_t;
void kiln_qgemm(const qgemm_t *g, int tile);
void *kiln_qpack_weights(const int8_t *w, int M, int K, long rs, long cs, int R, int conv, int zsum);
void kiln_qpack_rows(const uint8_t *a, int M, int K, int xr, int MR, uint8_t *out);
void kiln_interleave4(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, const uint8_t *r3, int n, int xr, uint8_t *dst);
typedef struct qconv_s {
  const uint8_t *x; int C, H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw, K; uint8_t pad; int xr; int nr; /* panel width */
  const uint8_t *xp; int hq, wq, nph, npw; size_t cs; /* set by kiln_qconv_grid: phase planes, per channel cs bytes */
} qconv_t;
void kiln_qconv_packb(const void *ctx, int j0, int nj, uint8_t *panel);
int kiln_qconv_grid(qconv_t *g);
void kiln_qconv_packb_grid(const void *ctx, int j0, int nj, uint8_t *panel);
void kiln_qconv_px(qgemm_t *g, qconv_t *cv, int grid);
void kiln_quantize_f32(const float *x, void *y, long n, float scale, int zp, int is_u8);
void kiln_dequantize_q(const void *x, float *y, long n, float scale, int zp, int is_u8);
void kiln_maxpool_q(const void *x, void *y, int planes, int H, int W, int OH, int OW, int kh, int kw, int sh, int sw,
    int dh, int dw, int ph, int pw, int is_s8);
`;

/** Microkernel variants (rows x vectors of 16 columns), shared with the generator's tactic names. */
export const QTILES: [number, number][] = [[6, 4], [12, 2]];

function ukr(mr: number, nv: number): string {
  const id = `${mr}x${nv}`, nr = nv * 16;
  return String.raw`
#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void qukr_vnni_${id}(int kq, const int8_t *restrict a, const int8_t *restrict b, int32_t *restrict c, int conv) {
  __m512i s[${mr}][${nv}];
  _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) s[r][j] = _mm512_setzero_si512();
  if (conv) {
    for (int k = 0; k < kq; k++, a += ${mr * 4}, b += ${nr * 4}) {
      __m512i bv[${nv}];
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) bv[j] = _mm512_loadu_si512(b + j * 64);
      _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) {
        __m512i ar = _mm512_set1_epi32(*(const int32_t *)(a + r * 4));
        _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) s[r][j] = _mm512_dpbusd_epi32(s[r][j], bv[j], ar);
      }
    }
  } else {
    for (int k = 0; k < kq; k++, a += ${mr * 4}, b += ${nr * 4}) {
      __m512i bv[${nv}];
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) bv[j] = _mm512_loadu_si512(b + j * 64);
      _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) {
        __m512i ar = _mm512_set1_epi32(*(const int32_t *)(a + r * 4));
        _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) s[r][j] = _mm512_dpbusd_epi32(s[r][j], ar, bv[j]);
      }
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) _mm512_storeu_si512(c + r * ${nr} + j * 16, s[r][j]);
}
#endif
static void qukr_c_${id}(int kq, const int8_t *restrict a, const int8_t *restrict b, int32_t *restrict c, int conv) {
  for (int i = 0; i < ${mr * nr}; i++) c[i] = 0;
  for (int k = 0; k < kq; k++, a += ${mr * 4}, b += ${nr * 4}) {
    for (int r = 0; r < ${mr}; r++) {
      int a0, a1, a2, a3;
      if (conv) { a0 = a[r * 4]; a1 = a[r * 4 + 1]; a2 = a[r * 4 + 2]; a3 = a[r * 4 + 3]; }
      else { a0 = (uint8_t)a[r * 4]; a1 = (uint8_t)a[r * 4 + 1]; a2 = (uint8_t)a[r * 4 + 2]; a3 = (uint8_t)a[r * 4 + 3]; }
      int32_t *cr = c + r * ${nr};
      if (conv) for (int j = 0; j < ${nr}; j++) {
        const uint8_t *bj = (const uint8_t *)b + j * 4;
        cr[j] += a0 * bj[0] + a1 * bj[1] + a2 * bj[2] + a3 * bj[3];
      } else for (int j = 0; j < ${nr}; j++) {
        const int8_t *bj = b + j * 4;
        cr[j] += a0 * bj[0] + a1 * bj[1] + a2 * bj[2] + a3 * bj[3];
      }
    }
  }
}
static void qtask_${id}(void *p, int t) {
  const qgemm_t *g = p;
  enum { MR = ${mr}, NR = ${nr} };
  int kq = (g->K + 3) / 4, j0 = t * NR, nj = KMIN(NR, g->N - j0);
  const int8_t *panel;
  if (g->bp) panel = g->bp + (size_t)t * kq * NR * 4;
  else {
    uint8_t *buf = (uint8_t *)kiln_scratch(0, (size_t)kq * NR);
    g->packb(g->ctx, j0, nj, buf);
    panel = (const int8_t *)buf;
  }
  int32_t tile[MR * NR] __attribute__((aligned(64)));
  qspan_t sp = qspan(g, j0, nj);
  qprefetch(g, &sp, 0, KMIN(MR, g->M));
  for (int i0 = 0; i0 < g->M; i0 += MR) {
    const int8_t *ap = g->ap + (size_t)(i0 / MR) * kq * MR * 4;
    if (i0 + MR < g->M) qprefetch(g, &sp, i0 + MR, KMIN(MR, g->M - i0 - MR));
#if defined(__x86_64__)
    if (g->vnni) qukr_vnni_${id}(kq, ap, panel, tile, g->conv); else
#endif
    qukr_c_${id}(kq, ap, panel, tile, g->conv);
    qepilogue(g, tile, NR, i0, KMIN(MR, g->M - i0), j0, nj);
  }
}
`;
}

/** The int8 runtime: packing, im2col panels, epilogue, microkernels, driver. */
export const INT8_C = String.raw`
#if defined(__x86_64__)
#include <immintrin.h>
static int qvnni_flag = -1;
/* KILN_INT8_PORTABLE=1 forces the portable microkernel and epilogue (tests compare the two paths); read per call, it is cheap */
static inline int qvnni(void) {
  if (qvnni_flag < 0) { __builtin_cpu_init(); qvnni_flag = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") ? 1 : 0; }
  const char *e = getenv("KILN_INT8_PORTABLE");
  return qvnni_flag && !(e && *e == '1');
}
#endif

/* Weights W (element (i, k) at w[i*rs + k*cs], R rows = output channels) packed for the side they take in the GEMM:
   conv: A panels [R/MR][K4/4][MR][4] (MR = ${QTILES.map(([m]) => m).join(' or ')}, the call packs for one), else B panels [R/NR][K4/4][NR][4].
   The buffer starts with comp[R] (int32), then the panels at offset 64-aligned. */
void *kiln_qpack_weights(const int8_t *w, int R, int K, long rs, long cs, int T, int conv, int zsum) {
  (void)conv;
  int kq = (K + 3) / 4, Rp = (R + T - 1) / T * T;
  size_t head = ((size_t)Rp * 4 + 63) / 64 * 64;
  uint8_t *buf = (uint8_t *)kiln_alloc((head + (size_t)Rp * kq * 4 + 3) / 4);
  int32_t *comp = (int32_t *)buf;
  int8_t *o = (int8_t *)(buf + head);
  for (int i = 0; i < R; i++) {
    int32_t s = 0;
    for (int k = 0; k < K; k++) s += w[i * rs + k * cs];
    comp[i] = s * zsum;
  }
  for (int i0 = 0; i0 < Rp; i0 += T)
    for (int q = 0; q < kq; q++)
      for (int r = 0; r < T; r++)
        for (int t = 0; t < 4; t++, o++) {
          int i = i0 + r, k = q * 4 + t;
          *o = i < R && k < K ? w[i * rs + k * cs] : 0;
        }
  return buf;
}

/* Rows of u8 (xor xr) activations [M][K] -> A panels [M/MR][K4/4][MR][4]. */
void kiln_qpack_rows(const uint8_t *a, int M, int K, int xr, int MR, uint8_t *o) {
  int kq = (K + 3) / 4;
  for (int i0 = 0; i0 < M; i0 += MR)
    for (int q = 0; q < kq; q++)
      for (int r = 0; r < MR; r++)
        for (int t = 0; t < 4; t++, o++) {
          int i = i0 + r, k = q * 4 + t;
          *o = i < M && k < K ? a[(size_t)i * K + k] ^ xr : 0;
        }
}

/* dst[j][t] = row_t[j] ^ xr for j < n (n a multiple of 16). */
void kiln_interleave4(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, const uint8_t *r3, int n, int xr, uint8_t *dst) {
#if defined(__x86_64__)
  __m128i x = _mm_set1_epi8((char)xr);
  for (int j = 0; j < n; j += 16, dst += 64) {
    __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r0 + j)), x), b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r1 + j)), x);
    __m128i c = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r2 + j)), x), d = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r3 + j)), x);
    __m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b), cd0 = _mm_unpacklo_epi8(c, d), cd1 = _mm_unpackhi_epi8(c, d);
    _mm_storeu_si128((__m128i *)dst, _mm_unpacklo_epi16(ab0, cd0));
    _mm_storeu_si128((__m128i *)(dst + 16), _mm_unpackhi_epi16(ab0, cd0));
    _mm_storeu_si128((__m128i *)(dst + 32), _mm_unpacklo_epi16(ab1, cd1));
    _mm_storeu_si128((__m128i *)(dst + 48), _mm_unpackhi_epi16(ab1, cd1));
  }
#else
  for (int j = 0; j < n; j++) {
    dst[j * 4] = r0[j] ^ xr; dst[j * 4 + 1] = r1[j] ^ xr; dst[j * 4 + 2] = r2[j] ^ xr; dst[j * 4 + 3] = r3[j] ^ xr;
  }
#endif
}

/* Row k = (input channel ci, tap fa, fb) of the implicit im2col matrix for output columns [j0, j0 + n), the first of
   them at output (oh0, ow0): the padding reads as the zero point. Returns a pointer into the input when the row is a
   plain slice of it. The caller walks (ci, fa, fb) and passes (oh0, ow0): no integer division per row, which with a
   few short copies per row was most of the packing cost (packing was a quarter of int8 ResNet-50's run). */
static const uint8_t *qconv_row(const qconv_t *g, int k, int ci, int fa, int fb, int oh0, int ow0, int j0, int n, int n16, uint8_t *dst) {
  int N = g->OH * g->OW;
  if (k >= g->K) { memset(dst, g->pad, n16); return dst; }
  const uint8_t *xc = g->x + (size_t)ci * g->H * g->W;
  if (g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && !g->ph && !g->pw && j0 + n16 <= N) return xc + j0;
  int jj = 0, oh = oh0, ow = ow0;
  while (jj < n) {
    int run = KMIN(n - jj, g->OW - ow);
    int h = oh * g->sh - g->ph + fa * g->dh;
    if ((unsigned)h >= (unsigned)g->H) memset(dst + jj, g->pad, run);
    else {
      const uint8_t *xr = xc + (size_t)h * g->W;
      int w0 = ow * g->sw - g->pw + fb * g->dw, lo, hi;
      if (g->sw == 1) {
        lo = w0 >= 0 ? 0 : -w0;
        hi = w0 > g->W - 1 ? 0 : KMIN(run, g->W - w0);
      } else {
        lo = w0 >= 0 ? 0 : (-w0 + g->sw - 1) / g->sw;
        hi = w0 > g->W - 1 ? 0 : KMIN(run, (g->W - 1 - w0) / g->sw + 1);
      }
      if (lo > run) lo = run;
      if (hi < lo) hi = lo;
      if (lo) memset(dst + jj, g->pad, lo);
      if (g->sw == 1) memcpy(dst + jj + lo, xr + w0 + lo, hi - lo);
      else for (int t = lo; t < hi; t++) dst[jj + t] = xr[w0 + t * g->sw];
      if (run > hi) memset(dst + jj + hi, g->pad, run - hi);
    }
    jj += run; ow += run;
    if (ow == g->OW) { ow = 0; oh++; }
  }
  if (n16 > n) memset(dst + n, g->pad, n16 - n);
  return dst;
}

/* B panel [K4/4][NR][4] for columns [j0, j0 + nj) of a convolution; NR is the panel width the caller allocated. */
void kiln_qconv_packb(const void *ctx, int j0, int nj, uint8_t *panel) {
  const qconv_t *g = ctx;
  int kq = (g->K + 3) / 4, n16 = (nj + 15) / 16 * 16;
  int NR = g->nr;
  uint8_t *rows = (uint8_t *)kiln_scratch(1, (size_t)NR);
  int oh0 = j0 / g->OW, ow0 = j0 % g->OW, ci = 0, fa = 0, fb = 0; /* (ci, fa, fb) of row k = q * 4 + t */
  for (int q = 0; q < kq; q++) {
    const uint8_t *r[4];
    for (int t = 0; t < 4; t++) {
      r[t] = qconv_row(g, q * 4 + t, ci, fa, fb, oh0, ow0, j0, nj, n16, rows + t * NR);
      if (++fb == g->kw) { fb = 0; if (++fa == g->kh) { fa = 0; ci++; } }
    }
    kiln_interleave4(r[0], r[1], r[2], r[3], n16, g->xr, panel + (size_t)q * NR * 4);
  }
}

/* The grid form of a convolution (dilation 1): the padded input split by stride phase into planes
   P[ci][a][b][hq][wq], P[..][r][c] = padded x[ci][r * sh + a][c * sw + b] (the zero point outside x), so that tap
   (fa, fb) of output (oh, ow) is plane (fa % sh, fb % sw) at (oh + fa / sh, ow + fb / sw). Numbering the GEMM's
   columns over the plane's grid, j = oh * wq + ow, makes every row of the implicit im2col matrix one contiguous slice
   of a plane, so a panel is packed straight from the planes with no copies per row (the short copies and fills per
   row were most of the im2col packing, itself a fifth of int8 ResNet-50's run). The price: wq - OW columns per output
   row are computed and dropped (the epilogue skips them), and one pass over the input per image to build the planes.
   Returns the GEMM's column count OH * wq; the planes live in the caller's scratch slot 2. */
typedef struct { const qconv_t *g; uint8_t *out; int per; int simd; } qgrid_job;
#if defined(__x86_64__)
/* Lanes [s, e) of 64 (0 <= s, e <= 64). */
static inline uint64_t qlanes(int s, int e) { return s >= e ? 0 : (e - s >= 64 ? ~0ULL : (1ULL << (e - s)) - 1) << s; }
/* One plane row of wq columns: column c is src[c * sw] for lo <= c < hi (src: that row's first column's source, which
   may lie before the input row: only valid columns are read), the zero point elsewhere. Masked byte loads and stores
   (a byte loop and a call per row were this copy's cost); stride 2 takes the even bytes of 64 with vpmovwb. */
__attribute__((target("avx512f,avx512bw")))
static void qgrid_row_avx512(uint8_t *o, const uint8_t *src, int lo, int hi, int wq, int sw, uint8_t pad) {
  const __m512i pv = _mm512_set1_epi8((char)pad);
  if (sw == 1) {
    for (int c0 = 0; c0 < wq; c0 += 64) {
      __m512i v = _mm512_mask_loadu_epi8(pv, qlanes(KMAX(lo, c0) - c0, KMIN(hi, c0 + 64) - c0), src + c0);
      _mm512_mask_storeu_epi8(o + c0, qlanes(0, KMIN(64, wq - c0)), v);
    }
  } else {
    for (int c0 = 0; c0 < wq; c0 += 32) {
      int s = KMAX(lo, c0) - c0, e = KMIN(hi, c0 + 32) - c0;
      __m512i v = _mm512_mask_loadu_epi8(pv, qlanes(2 * s, 2 * e) & 0x5555555555555555ULL, src + 2 * c0);
      _mm512_mask_cvtepi16_storeu_epi8(o + c0, (__mmask32)qlanes(0, KMIN(32, wq - c0)), v);
    }
  }
}
#endif
static void qgrid_task(void *p, int t) {
  const qgrid_job *j = p;
  const qconv_t *g = j->g;
  size_t plane = (size_t)g->hq * g->wq;
  for (int ci = t * j->per; ci < KMIN(g->C, (t + 1) * j->per); ci++) {
    const uint8_t *xc = g->x + (size_t)ci * g->H * g->W;
    for (int a = 0; a < g->nph; a++) for (int b = 0; b < g->npw; b++) {
      uint8_t *o = j->out + (size_t)ci * g->cs + (size_t)(a * g->npw + b) * plane;
      /* columns c whose padded column c * sw + b - pw lies in [0, W) */
      int lo = g->pw > b ? (g->pw - b + g->sw - 1) / g->sw : 0, last = g->W - 1 + g->pw - b, hi = last < 0 ? 0 : last / g->sw + 1;
      if (hi > g->wq) hi = g->wq;
      if (lo > hi) lo = hi;
      for (int r = 0; r < g->hq; r++, o += g->wq) {
        int h = r * g->sh + a - g->ph;
        if ((unsigned)h >= (unsigned)g->H) { memset(o, g->pad, g->wq); continue; }
#if defined(__x86_64__)
        if (j->simd && g->sw <= 2) { qgrid_row_avx512(o, xc + (size_t)h * g->W + b - g->pw, lo, hi, g->wq, g->sw, g->pad); continue; }
#endif
        const uint8_t *xr = xc + (size_t)h * g->W + (lo * g->sw + b - g->pw);
        memset(o, g->pad, lo);
        if (g->sw == 1) memcpy(o + lo, xr, hi - lo);
        else for (int c = lo; c < hi; c++) o[c] = xr[(c - lo) * g->sw];
        memset(o + hi, g->pad, g->wq - hi);
      }
    }
  }
}
int kiln_qconv_grid(qconv_t *g) {
  g->nph = KMIN(g->sh, g->kh); g->npw = KMIN(g->sw, g->kw);
  g->hq = ((g->OH - 1) * g->sh + g->kh + g->sh - 1) / g->sh;
  g->wq = ((g->OW - 1) * g->sw + g->kw + g->sw - 1) / g->sw;
  g->cs = (size_t)g->nph * g->npw * g->hq * g->wq;
  /* a panel's rows read up to 15 columns past the grid and (kw - 1) / sw + (kh - 1) / sh * wq into the next plane */
  size_t bytes = g->cs * g->C + (size_t)g->wq + 128;
  uint8_t *out = (uint8_t *)kiln_scratch(2, (bytes + 3) / 4);
  memset(out + g->cs * g->C, g->pad, bytes - g->cs * g->C);
  g->xp = out;
  /* below ~64 KB a handoff to other threads costs more than the copy */
  int tasks = g->cs * g->C < (1 << 16) ? 1 : KMIN(g->C, 4 * kiln_threads());
  qgrid_job j = { g, out, (g->C + tasks - 1) / tasks, 0 };
#if defined(__x86_64__)
  j.simd = qvnni();
#endif
  if (tasks <= 1) { j.per = g->C; qgrid_task(&j, 0); }
  else kiln_pool_run(qgrid_task, &j, tasks);
  return g->OH * g->wq;
}

/* B panel [K4/4][NR][4] for grid columns [j0, j0 + nj): four plane slices per group of four rows. */
void kiln_qconv_packb_grid(const void *ctx, int j0, int nj, uint8_t *panel) {
  const qconv_t *g = ctx;
  int kq = (g->K + 3) / 4, n16 = (nj + 15) / 16 * 16, T = g->kh * g->kw, NR = g->nr;
  size_t plane = (size_t)g->hq * g->wq, toff[T];
  for (int t = 0; t < T; t++) {
    int fa = t / g->kw, fb = t % g->kw;
    toff[t] = (size_t)((fa % g->sh) * g->npw + fb % g->sw) * plane + (size_t)(fa / g->sh) * g->wq + fb / g->sw;
  }
  const uint8_t *base = g->xp + j0;
  int ci = 0, t = 0;
  for (int q = 0; q < kq; q++) {
    const uint8_t *r[4];
    for (int u = 0; u < 4; u++) {
      /* rows past K meet zero weights: any readable bytes do */
      if (q * 4 + u >= g->K) { r[u] = r[0]; continue; }
      r[u] = base + ci * g->cs + toff[t];
      if (++t == T) { t = 0; ci++; }
    }
    kiln_interleave4(r[0], r[1], r[2], r[3], n16, g->xr, panel + (size_t)q * NR * 4);
  }
}

static inline float qact(const qgemm_t *g, float v) {
  return g->act == 1 ? (v > 0.0f ? v : 0.0f) : g->act == 2 ? (v < g->lo ? g->lo : v > g->hi ? g->hi : v) : v;
}

#if defined(__x86_64__)
/* qstore with AVX-512, masked for the tail: the grid form stores runs of OW values (7 to 56 in ResNet-50), which the
   compiler's vectorization of the C below left mostly to its scalar remainder loop. Same operations in the same order
   as the C (the act and clamps as compare-and-select), so the results are identical bit for bit. */
__attribute__((target("avx512f")))
static void qstore_avx512(const qgemm_t *g, const float *row, int n, size_t off) {
  const float *res = g->res ? g->res + off : NULL;
  const __m512 zero = _mm512_setzero_ps(), lo = _mm512_set1_ps(g->lo), hi = _mm512_set1_ps(g->hi);
  const __m512 ys = _mm512_set1_ps(g->y_scale), zp = _mm512_set1_ps((float)g->y_zp);
  const __m512 qlo = _mm512_set1_ps(g->out == 2 ? 0.0f : -128.0f), qhi = _mm512_set1_ps(g->out == 2 ? 255.0f : 127.0f);
  for (int j = 0; j < n; j += 16) {
    __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
    __m512 v = _mm512_maskz_loadu_ps(m, row + j);
    if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res + j));
    if (g->act == 1) v = _mm512_mask_mov_ps(zero, _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), v);
    else if (g->act == 2) {
      __m512 t = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, hi, _CMP_GT_OQ), hi);
      v = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ), lo);
    }
    if (!g->out) { _mm512_mask_storeu_ps((float *)g->c + off + j, m, v); continue; }
    __m512 q = _mm512_add_ps(_mm512_roundscale_ps(_mm512_div_ps(v, ys), _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC), zp);
    __m512 t = _mm512_mask_mov_ps(q, _mm512_cmp_ps_mask(q, qhi, _CMP_GT_OQ), qhi);
    q = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(q, qlo, _CMP_LT_OQ), qlo);
    _mm512_mask_cvtepi32_storeu_epi8((uint8_t *)g->c + off + j, m, _mm512_cvttps_epi32(q));
  }
}
#endif

/* Residual, activation and store of n finished values of output row i, at element offset off of c and res. */
static void qstore(const qgemm_t *g, float *row, int n, size_t off) {
#if defined(__x86_64__)
  if (g->vnni) { qstore_avx512(g, row, n, off); return; }
#endif
  if (g->res) for (int j = 0; j < n; j++) row[j] += g->res[off + j];
  if (g->act) for (int j = 0; j < n; j++) row[j] = qact(g, row[j]);
  if (!g->out) { memcpy((float *)g->c + off, row, n * sizeof(float)); return; }
  int lo = g->out == 2 ? 0 : -128, hi = g->out == 2 ? 255 : 127;
  uint8_t *y = (uint8_t *)g->c + off;
  for (int j = 0; j < n; j++) {
    float q = nearbyintf(row[j] / g->y_scale) + (float)g->y_zp;
    q = q < lo ? lo : q > hi ? hi : q;
    y[j] = (uint8_t)(int)q;
  }
}

/* The elements [cs, ce) of an output row that a panel's columns [j0, j0 + nj) store, rows ldc apart. */
typedef struct { size_t ldc, cs, ce; } qspan_t;
static inline qspan_t qspan(const qgemm_t *g, int j0, int nj) {
  qspan_t sp;
  if (!g->gw) { sp.ldc = (size_t)g->N; sp.cs = j0; sp.ce = (size_t)j0 + nj; return sp; }
  int j1 = j0 + nj;
  sp.ldc = (size_t)(g->N / g->gw) * g->ow;
  sp.cs = (size_t)(j0 / g->gw) * g->ow + KMIN(j0 % g->gw, g->ow);
  sp.ce = (size_t)(j1 / g->gw) * g->ow + KMIN(j1 % g->gw, g->ow);
  return sp;
}

/* Prefetch the residual (read) and float output (write) of rows [i0, i0 + mi) over a panel's span, one row block
   ahead of the epilogue: the rows lie ldc apart, which the hardware prefetchers do not follow, and the epilogue
   stalled on those loads (the largest part of its time in int8 ResNet-50). */
static inline void qprefetch(const qgemm_t *g, const qspan_t *sp, int i0, int mi) {
  size_t bytes = (sp->ce - sp->cs) * sizeof(float);
  for (int r = 0; r < mi; r++) {
    size_t off = (size_t)(i0 + r) * sp->ldc + sp->cs;
    if (g->res) for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)(g->res + off) + b, 0, 3);
    if (!g->out) for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)((float *)g->c + off) + b, 1, 3);
  }
}

/* y = act((acc - comp) * scale + bias + residual), then float32 out or saturate(round_half_even(y / y_scale) + zp).
   On a grid (gw > 0) each row's columns are stored run by run, the gw - ow columns past each output row dropped. */
static void qepilogue(const qgemm_t *g, const int32_t *tile, int ldt, int i0, int mi, int j0, int nj) {
  int oh0 = g->gw ? j0 / g->gw : 0, c0 = g->gw ? j0 % g->gw : 0;
  size_t ldc = qspan(g, j0, nj).ldc;
  for (int r = 0; r < mi; r++) {
    int i = i0 + r;
    const int32_t *t = tile + r * ldt;
    float row[256];
    if (g->conv) {
      int32_t cp = g->comp[i]; float sc = g->scale[i], b = g->bias ? g->bias[i] : 0.0f;
      for (int j = 0; j < nj; j++) row[j] = (float)(t[j] - cp) * sc + b;
    } else {
      for (int j = 0; j < nj; j++) row[j] = (float)(t[j] - g->comp[j0 + j]) * g->scale[j0 + j] + (g->bias ? g->bias[j0 + j] : 0.0f);
    }
    if (!g->gw) { qstore(g, row, nj, (size_t)i * ldc + j0); continue; }
    for (int j = 0, oh = oh0, c = c0; j < nj; oh++, c = 0) {
      int run = KMIN(nj - j, g->gw - c), v = KMIN(run, g->ow - c);
      if (v > 0) qstore(g, row + j, v, (size_t)i * ldc + (size_t)oh * g->ow + c);
      j += run;
    }
  }
}
${QTILES.map(([m, v]) => ukr(m, v)).join('')}
/* Pixels as the GEMM's rows (kiln_qconv_px), for small images: with output channels as rows, the columns (pixels) go
   by vectors of 16 and 7x7 = 49 pixels take 64 columns, 14x14 = 196 take 224 or 256; rows of 7 pixels (output rows cut
   in sevens) waste none where OW is a multiple of 7. A = the activations' whole im2col, packed once per image
   [K4/4][NP][4] (the B-panel layout, NP pixels wide), read in place 7 pixels at a time; B = the weights, panels of 64
   output channels [M/64][K4/4][64][4]; the tile [7][64] is transposed for the column epilogue. */
enum { QPX_MR = 7, QPX_NR = 64 };
#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void qukr_px_vnni(int kq, const uint8_t *restrict a, long as, const int8_t *restrict b, int32_t *restrict c) {
  __m512i s[QPX_MR][4];
  _Pragma("GCC unroll 8") for (int r = 0; r < QPX_MR; r++) _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) s[r][j] = _mm512_setzero_si512();
  for (int k = 0; k < kq; k++, a += as, b += QPX_NR * 4) {
    __m512i bv[4];
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) bv[j] = _mm512_loadu_si512(b + j * 64);
    _Pragma("GCC unroll 8") for (int r = 0; r < QPX_MR; r++) {
      __m512i ar = _mm512_set1_epi32(*(const int32_t *)(a + r * 4));
      _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) s[r][j] = _mm512_dpbusd_epi32(s[r][j], ar, bv[j]);
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < QPX_MR; r++) _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) _mm512_storeu_si512(c + r * QPX_NR + j * 16, s[r][j]);
}
#endif
static void qukr_px_c(int kq, const uint8_t *restrict a, long as, const int8_t *restrict b, int32_t *restrict c) {
  for (int i = 0; i < QPX_MR * QPX_NR; i++) c[i] = 0;
  for (int k = 0; k < kq; k++, a += as, b += QPX_NR * 4)
    for (int r = 0; r < QPX_MR; r++) {
      const uint8_t *ar = a + r * 4;
      for (int j = 0; j < QPX_NR; j++) c[r * QPX_NR + j] += ar[0] * b[j * 4] + ar[1] * b[j * 4 + 1] + ar[2] * b[j * 4 + 2] + ar[3] * b[j * 4 + 3];
    }
}

#if defined(__x86_64__)
/* The epilogue of a [7 pixels][64 channels] tile, vectorized along the channels (one channel row of 7 values per
   vector was slower than the microkernel): the same operations as qepilogue + qstore (the affine step contracted to an
   FMA, as the compiler does there; the residual gathered 16 channels at a time), then transposed to 64 channel rows of
   7 values: bytes by a gather of 8-byte groups and a byte permute, floats by a gather per channel. */
__attribute__((target("avx512f,avx512bw,avx512vbmi")))
static void qpx_epilogue(const qgemm_t *g, const int32_t *tile, int c0, int nc, size_t ldc, size_t pc) {
  uint8_t tb[8 * 64] __attribute__((aligned(64)));
  float ft[QPX_MR * 64] __attribute__((aligned(64)));
  const __m512 zero = _mm512_setzero_ps(), lo = _mm512_set1_ps(g->lo), hi = _mm512_set1_ps(g->hi);
  const __m512 ys = _mm512_set1_ps(g->y_scale), zp = _mm512_set1_ps((float)g->y_zp);
  const __m512 qlo = _mm512_set1_ps(g->out == 2 ? 0.0f : -128.0f), qhi = _mm512_set1_ps(g->out == 2 ? 255.0f : 127.0f);
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i rstride = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)ldc));
  for (int jv = 0; jv < 4; jv++) {
    int ch = c0 + jv * 16, n = KMIN(16, nc - jv * 16);
    if (n <= 0) break;
    __mmask16 m = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    __m512i cp = _mm512_maskz_loadu_epi32(m, g->comp + ch);
    __m512 sc = _mm512_maskz_loadu_ps(m, g->scale + ch), b = g->bias ? _mm512_maskz_loadu_ps(m, g->bias + ch) : zero;
    for (int r = 0; r < QPX_MR; r++) {
      __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_load_si512(tile + r * QPX_NR + jv * 16), cp)), sc, b);
      if (g->res) v = _mm512_add_ps(v, _mm512_mask_i32gather_ps(zero, m, rstride, g->res + (size_t)ch * ldc + pc + r, 4));
      if (g->act == 1) v = _mm512_mask_mov_ps(zero, _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), v);
      else if (g->act == 2) {
        __m512 t = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, hi, _CMP_GT_OQ), hi);
        v = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ), lo);
      }
      if (!g->out) { _mm512_store_ps(ft + r * 64 + jv * 16, v); continue; }
      __m512 q = _mm512_add_ps(_mm512_roundscale_ps(_mm512_div_ps(v, ys), _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC), zp);
      __m512 t = _mm512_mask_mov_ps(q, _mm512_cmp_ps_mask(q, qhi, _CMP_GT_OQ), qhi);
      q = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(q, qlo, _CMP_LT_OQ), qlo);
      _mm_store_si128((__m128i *)(tb + r * 64 + jv * 16), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q)));
    }
  }
  if (!g->out) {
    const __m512i rows = _mm512_mullo_epi32(lane, _mm512_set1_epi32(64));
    float *y = (float *)g->c + (size_t)c0 * ldc + pc;
    for (int c = 0; c < nc; c++)
      _mm512_mask_storeu_ps(y + (size_t)c * ldc, 0x7F, _mm512_mask_i32gather_ps(zero, 0x7F, rows, ft + c, 4));
    return;
  }
  /* byte (r, c) of group k (channels 8k..8k+7) at r * 8 + c -> c * 8 + r */
  const __m512i rows = _mm512_set_epi64(7 * 64, 6 * 64, 5 * 64, 4 * 64, 3 * 64, 2 * 64, 64, 0);
  const __m512i perm = _mm512_set_epi8(63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, 14, 6, 61, 53, 45, 37, 29, 21, 13, 5,
    60, 52, 44, 36, 28, 20, 12, 4, 59, 51, 43, 35, 27, 19, 11, 3, 58, 50, 42, 34, 26, 18, 10, 2, 57, 49, 41, 33, 25, 17, 9, 1,
    56, 48, 40, 32, 24, 16, 8, 0);
  uint8_t *y = (uint8_t *)g->c + (size_t)c0 * ldc + pc;
  for (int k = 0; k * 8 < nc; k++) {
    __m512i z = _mm512_permutexvar_epi8(perm, _mm512_i64gather_epi64(rows, (const void *)(tb + k * 8), 1));
    for (int c = 0; c < 8 && k * 8 + c < nc; c++)
      _mm512_mask_storeu_epi8(y + (size_t)(k * 8 + c) * ldc - c * 8, (__mmask64)0x7FULL << (c * 8), z);
  }
}
static int qvbmi_flag = -1;
#endif

typedef struct { const qgemm_t *g; qconv_t *cv; int grid; uint8_t *a; int np, gn; int fast; } qpx_t;
static void qpx_pack_task(void *p, int t) {
  const qpx_t *x = p;
  int j0 = t * 64, nj = KMIN(64, x->g->N - j0);
  (x->grid ? kiln_qconv_packb_grid : kiln_qconv_packb)(x->cv, j0, nj, x->a + (size_t)j0 * 4);
}
static void qpx_task(void *p, int t) {
  const qpx_t *x = p;
  const qgemm_t *g = x->g;
  int kq = (g->K + 3) / 4, c0 = t * QPX_NR, nc = KMIN(QPX_NR, g->M - c0), per = g->ow / QPX_MR, nblk = x->cv->OH * per;
  const int8_t *bp = g->bp + (size_t)t * kq * QPX_NR * 4;
  int32_t tile[QPX_MR * QPX_NR] __attribute__((aligned(64))), tt[QPX_NR * 8] __attribute__((aligned(64)));
  for (int blk = 0; blk < nblk; blk++) {
    int oh = blk / per, ow0 = blk % per * QPX_MR, j0 = oh * x->gn + ow0;
    if (blk + 1 < nblk) { int nb = blk + 1; qspan_t sp = qspan(g, nb / per * x->gn + nb % per * QPX_MR, QPX_MR); qprefetch(g, &sp, c0, nc); }
#if defined(__x86_64__)
    if (g->vnni) qukr_px_vnni(kq, x->a + (size_t)j0 * 4, (long)x->np * 4, bp, tile); else
#endif
    qukr_px_c(kq, x->a + (size_t)j0 * 4, (long)x->np * 4, bp, tile);
#if defined(__x86_64__)
    if (x->fast) { qpx_epilogue(g, tile, c0, nc, (size_t)x->cv->OH * g->ow, (size_t)oh * g->ow + ow0); continue; }
#endif
    for (int r = 0; r < QPX_MR; r++) for (int c = 0; c < QPX_NR; c++) tt[c * 8 + r] = tile[r * QPX_NR + c];
    qepilogue(g, tt, 8, c0, nc, j0, QPX_MR);
  }
}
/* g: M output channels, K, bp = the packed weights (B panels of 64), comp/scale/bias per channel, epilogue; cv: the
   convolution. grid: A from the stride-phase planes (kiln_qconv_grid), else from the input itself (1x1 stride 1). */
void kiln_qconv_px(qgemm_t *g, qconv_t *cv, int grid) {
  qpx_t x = { g, cv, grid, NULL, 0, 0, 0 };
#if defined(__x86_64__)
  g->vnni = qvnni();
  if (qvbmi_flag < 0) qvbmi_flag = __builtin_cpu_supports("avx512vbmi") ? 1 : 0;
  x.fast = g->vnni && qvbmi_flag;
#endif
  g->N = grid ? kiln_qconv_grid(cv) : cv->OH * cv->OW;
  g->gw = grid ? cv->wq : 0; g->ow = cv->OW;
  x.gn = grid ? cv->wq : cv->OW;
  x.np = (g->N + 15) / 16 * 16;
  x.a = (uint8_t *)kiln_scratch(3, (size_t)(g->K + 3) / 4 * x.np);
  cv->nr = x.np;
  int chunks = (g->N + 63) / 64;
  if (chunks == 1 || kiln_threads() == 1) for (int t = 0; t < chunks; t++) qpx_pack_task(&x, t);
  else kiln_pool_run(qpx_pack_task, &x, chunks);
  kiln_pool_run(qpx_task, &x, (g->M + QPX_NR - 1) / QPX_NR);
}

void kiln_qgemm(const qgemm_t *g0, int tile) {
  qgemm_t h = *g0, *g = &h;
#if defined(__x86_64__)
  h.vnni = qvnni();
#endif
  int nr = tile == 0 ? ${QTILES[0][1] * 16} : ${QTILES[1][1] * 16};
  task_fn fn = tile == 0 ? qtask_${QTILES[0].join('x')} : qtask_${QTILES[1].join('x')};
  kiln_pool_run(fn, g, (g->N + nr - 1) / nr);
}

` + INT8_ELEM_C;
