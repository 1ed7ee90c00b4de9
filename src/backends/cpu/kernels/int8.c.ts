// The int8 part of every compiled CPU library: a u8 x s8 GEMM with int32 accumulation for quantized layers, its
// packing, and the requantizing epilogue. With AVX-512 VNNI the microkernel is vpdpbusd (four u8 x s8 products summed
// into each int32 lane); without it, portable C over the same packed layouts. The choice is made at run time (cpuid),
// so a library built on a VNNI machine still runs, more slowly, on one without.
//
// Layouts. C[M][N] = A[M][K] x B[K][N], K rounded up to a multiple of 4 (K4). A is broadcast four bytes at a time,
// packed [M/MR][K4/4][MR][4]; B is read as vectors, packed [N/NR][K4/4][NR][4]. vpdpbusd multiplies unsigned bytes by
// signed ones, so the activation operand is unsigned: int8 activations are stored xor 0x80 (x + 128), and the layer
// subtracts comp[ch] = (128 + x_zero_point) * sum_k W[ch][k] (x_zero_point alone for uint8). A convolution (NCHW) has
// the weights as A (output channels = rows) and the activations as B (im2col, packed per column panel); a MatMul has
// the activations as A and the weights as B (output channels = columns).

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
} qgemm_t;
void kiln_qgemm(const qgemm_t *g, int tile);
void *kiln_qpack_weights(const int8_t *w, int M, int K, long rs, long cs, int R, int conv, int zsum);
void kiln_qpack_rows(const uint8_t *a, int M, int K, int xr, int MR, uint8_t *out);
void kiln_interleave4(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, const uint8_t *r3, int n, int xr, uint8_t *dst);
typedef struct qconv_s {
  const uint8_t *x; int C, H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw, K; uint8_t pad; int xr; int nr; /* panel width */
} qconv_t;
void kiln_qconv_packb(const void *ctx, int j0, int nj, uint8_t *panel);
void kiln_quantize_f32(const float *x, void *y, long n, float scale, int zp, int is_u8);
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
  for (int i0 = 0; i0 < g->M; i0 += MR) {
    const int8_t *ap = g->ap + (size_t)(i0 / MR) * kq * MR * 4;
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
/* KILN_INT8_PORTABLE=1 forces the portable microkernel (tests compare the two paths); read per call, it is cheap */
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

static inline float qact(const qgemm_t *g, float v) {
  return g->act == 1 ? (v > 0.0f ? v : 0.0f) : g->act == 2 ? (v < g->lo ? g->lo : v > g->hi ? g->hi : v) : v;
}

/* y = act((acc - comp) * scale + bias + residual), then float32 out or saturate(round_half_even(y / y_scale) + zp). */
static void qepilogue(const qgemm_t *g, const int32_t *tile, int ldt, int i0, int mi, int j0, int nj) {
  int lo = g->out == 2 ? 0 : -128, hi = g->out == 2 ? 255 : 127;
  for (int r = 0; r < mi; r++) {
    int i = i0 + r;
    size_t off = (size_t)i * g->N + j0;
    const int32_t *t = tile + r * ldt;
    float row[256];
    if (g->conv) {
      int32_t cp = g->comp[i]; float sc = g->scale[i], b = g->bias ? g->bias[i] : 0.0f;
      for (int j = 0; j < nj; j++) row[j] = (float)(t[j] - cp) * sc + b;
    } else {
      for (int j = 0; j < nj; j++) row[j] = (float)(t[j] - g->comp[j0 + j]) * g->scale[j0 + j] + (g->bias ? g->bias[j0 + j] : 0.0f);
    }
    if (g->res) for (int j = 0; j < nj; j++) row[j] += g->res[off + j];
    if (g->act) for (int j = 0; j < nj; j++) row[j] = qact(g, row[j]);
    if (!g->out) { memcpy((float *)g->c + off, row, nj * sizeof(float)); continue; }
    uint8_t *y = (uint8_t *)g->c + off;
    for (int j = 0; j < nj; j++) {
      float q = nearbyintf(row[j] / g->y_scale) + (float)g->y_zp;
      q = q < lo ? lo : q > hi ? hi : q;
      y[j] = (uint8_t)(int)q;
    }
  }
}
${QTILES.map(([m, v]) => ukr(m, v)).join('')}
void kiln_qgemm(const qgemm_t *g0, int tile) {
  qgemm_t h = *g0, *g = &h;
#if defined(__x86_64__)
  h.vnni = qvnni();
#endif
  int nr = tile == 0 ? ${QTILES[0][1] * 16} : ${QTILES[1][1] * 16};
  task_fn fn = tile == 0 ? qtask_${QTILES[0].join('x')} : qtask_${QTILES[1].join('x')};
  kiln_pool_run(fn, g, (g->N + nr - 1) / nr);
}

void kiln_quantize_f32(const float *x, void *y, long n, float scale, int zp, int is_u8) {
  float lo = is_u8 ? 0.0f : -128.0f, hi = is_u8 ? 255.0f : 127.0f;
  if (is_u8) { uint8_t *o = y; for (long i = 0; i < n; i++) { float q = nearbyintf(x[i] / scale) + zp; o[i] = (uint8_t)(int)(q < lo ? lo : q > hi ? hi : q); } }
  else { int8_t *o = y; for (long i = 0; i < n; i++) { float q = nearbyintf(x[i] / scale) + zp; o[i] = (int8_t)(int)(q < lo ? lo : q > hi ? hi : q); } }
}
`;
