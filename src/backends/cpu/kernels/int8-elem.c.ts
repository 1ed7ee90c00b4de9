// The element-wise part of the int8 runtime: per-tensor QuantizeLinear and DequantizeLinear over the thread pool, and
// max pooling over 8-bit planes. Appended to INT8_C (int8.c.ts) in the same translation unit: it calls the runtime's
// pool and scratch, and on x86-64 the AVX-512 path uses INT8_C's <immintrin.h> and qvnni() (KILN_INT8_PORTABLE).
// Declarations are in INT8_H.

export const INT8_ELEM_C = String.raw`/* Quantize in tasks of 16K elements over the thread pool (a residual block's output is ~800K at 56x56). The
   division (not a reciprocal multiply) keeps every value the reference's x / scale rounded half to even. */
typedef struct { const float *x; void *y; long n; float scale; int zp, is_u8; } quant_job;
#define QUANT_PER 16384L
static void quant_task(void *p, int t) {
  const quant_job *j = p;
  long i0 = t * QUANT_PER, i1 = i0 + QUANT_PER < j->n ? i0 + QUANT_PER : j->n;
  const float *x = j->x; float scale = j->scale; int zp = j->zp;
  float lo = j->is_u8 ? 0.0f : -128.0f, hi = j->is_u8 ? 255.0f : 127.0f;
  if (j->is_u8) { uint8_t *o = j->y; for (long i = i0; i < i1; i++) { float q = nearbyintf(x[i] / scale) + zp; o[i] = (uint8_t)(int)(q < lo ? lo : q > hi ? hi : q); } }
  else { int8_t *o = j->y; for (long i = i0; i < i1; i++) { float q = nearbyintf(x[i] / scale) + zp; o[i] = (int8_t)(int)(q < lo ? lo : q > hi ? hi : q); } }
}
void kiln_quantize_f32(const float *x, void *y, long n, float scale, int zp, int is_u8) {
  quant_job j = { x, y, n, scale, zp, is_u8 };
  kiln_pool_run(quant_task, &j, (int)((n + QUANT_PER - 1) / QUANT_PER));
}

/* Per-tensor DequantizeLinear of int8/uint8 to float32: (x - zp) * scale, one float multiply of an exact integer,
   rounded once as the reference's double product cast to float32 is. Where a Q/DQ file keeps a DequantizeLinear
   between integer layers (both inputs of a quantized residual Add, on the CPU). */
typedef struct { const void *x; float *y; long n; float scale; int zp, is_u8; } dequant_job;
static void dequant_task(void *p, int t) {
  const dequant_job *j = p;
  long i0 = t * QUANT_PER, i1 = i0 + QUANT_PER < j->n ? i0 + QUANT_PER : j->n;
  float *y = j->y; float scale = j->scale; int zp = j->zp;
  if (j->is_u8) { const uint8_t *x = j->x; for (long i = i0; i < i1; i++) y[i] = (float)((int)x[i] - zp) * scale; }
  else { const int8_t *x = j->x; for (long i = i0; i < i1; i++) y[i] = (float)((int)x[i] - zp) * scale; }
}
void kiln_dequantize_q(const void *x, float *y, long n, float scale, int zp, int is_u8) {
  dequant_job j = { x, y, n, scale, zp, is_u8 };
  kiln_pool_run(dequant_task, &j, (int)((n + QUANT_PER - 1) / QUANT_PER));
}

/* Max pooling over 8-bit planes (NCHW), one plane per task, for a MaxPool that reads a quantized tensor (the build
   moves a QuantizeLinear from after a max pool to before it: quantizing is monotonic and saturating, so the two orders
   give the same bytes, and the pool then moves a quarter of the bytes). Separable, each pass over contiguous bytes so
   it vectorizes: per output row, the window's input rows (those inside the image) are combined into one row with the
   padding columns at the type's minimum (what quantizing the float pool's -inf gives); then every column combines
   its kw taps; stride 2 then keeps the even columns, read as the low bytes of 16-bit words (one narrowing store). */
typedef struct { const void *x; void *y; int H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw; } qpool_job;
#define QPOOL_TASK(NAME, T, MINV) \
static void NAME(void *p, int c) { \
  const qpool_job *j = p; \
  const T *x = (const T *)j->x + (size_t)c * j->H * j->W; \
  T *y = (T *)j->y + (size_t)c * j->OH * j->OW; \
  int OW = j->OW, W = j->W, sw = j->sw, kw = j->kw, dw = j->dw, pl = j->pw; \
  int span = (OW - 1) * sw + 1, PW = span + (kw - 1) * dw; /* taps' reach, padded coordinates */ \
  if (PW < pl + W) PW = pl + W; \
  T *row = (T *)kiln_scratch(0, (PW + 2 * OW + 2 * span + 64) / 4 + 16); \
  T *m = row + ((PW + 63) & ~63); \
  for (int i = 0; i < pl; i++) row[i] = MINV; \
  for (int i = pl + W; i < PW; i++) row[i] = MINV; \
  for (int oh = 0; oh < j->OH; oh++) { \
    int h0 = oh * j->sh - j->ph, first = 1; \
    T *r = row + pl; \
    for (int a = 0; a < j->kh; a++) { \
      int h = h0 + a * j->dh; \
      if (h < 0 || h >= j->H) continue; \
      const T *xr = x + (size_t)h * W; \
      if (first) { for (int w = 0; w < W; w++) r[w] = xr[w]; first = 0; } \
      else for (int w = 0; w < W; w++) r[w] = xr[w] > r[w] ? xr[w] : r[w]; \
    } \
    if (first) for (int w = 0; w < W; w++) r[w] = MINV; \
    T *out = y + (size_t)oh * OW; \
    T *acc = sw == 1 ? out : m; \
    for (int i = 0; i < span; i++) acc[i] = row[i]; \
    for (int b = 1; b < kw; b++) { const T *t = row + b * dw; for (int i = 0; i < span; i++) acc[i] = t[i] > acc[i] ? t[i] : acc[i]; } \
    if (sw == 2) { const uint16_t *m16 = (const uint16_t *)m; for (int i = 0; i < OW; i++) out[i] = (T)(uint8_t)m16[i]; } \
    else if (sw > 2) for (int i = 0; i < OW; i++) out[i] = m[i * sw]; \
  } \
}
QPOOL_TASK(qpool_u8_task, uint8_t, 0)
QPOOL_TASK(qpool_s8_task, int8_t, -128)
#if defined(__x86_64__)
/* The same passes in AVX-512BW, 64 bytes per step with masked tails (the rows here are 7 to a few hundred bytes: the
   compiler's scalar remainder loops were most of the portable version's time). */
__attribute__((target("avx512f,avx512bw"))) static inline __m512i qp_max(__m512i a, __m512i b, int s8) {
  return s8 ? _mm512_max_epi8(a, b) : _mm512_max_epu8(a, b);
}
__attribute__((target("avx512f,avx512bw"))) static inline __mmask64 qp_mask(int left) {
  return left >= 64 ? ~0ULL : (1ULL << left) - 1;
}
__attribute__((target("avx512f,avx512bw"))) static void qpool_avx512_task(void *p, int c, int s8) {
  const qpool_job *j = p;
  const uint8_t *x = (const uint8_t *)j->x + (size_t)c * j->H * j->W;
  uint8_t *y = (uint8_t *)j->y + (size_t)c * j->OH * j->OW;
  int OW = j->OW, W = j->W, sw = j->sw, kw = j->kw, dw = j->dw, pl = j->pw;
  int span = (OW - 1) * sw + 1, PW = span + (kw - 1) * dw;
  if (PW < pl + W) PW = pl + W;
  uint8_t *row = (uint8_t *)kiln_scratch(0, (PW + 2 * OW + 2 * span + 192) / 4 + 16);
  uint8_t *m = row + ((PW + 63) & ~63);
  const __m512i lo = _mm512_set1_epi8(s8 ? -128 : 0);
  for (int i = 0; i < pl; i++) row[i] = s8 ? 0x80 : 0;
  for (int i = pl + W; i < PW; i++) row[i] = s8 ? 0x80 : 0;
  for (int oh = 0; oh < j->OH; oh++) {
    int h0 = oh * j->sh - j->ph;
    uint8_t *r = row + pl;
    for (int w = 0; w < W; w += 64) {
      __mmask64 k = qp_mask(W - w);
      __m512i v = lo;
      for (int a = 0; a < j->kh; a++) {
        int h = h0 + a * j->dh;
        if (h >= 0 && h < j->H) v = qp_max(v, _mm512_maskz_loadu_epi8(k, x + (size_t)h * W + w), s8);
      }
      _mm512_mask_storeu_epi8(r + w, k, v);
    }
    uint8_t *out = y + (size_t)oh * OW, *acc = sw == 1 ? out : m;
    for (int i = 0; i < span; i += 64) {
      __mmask64 k = qp_mask(span - i);
      __m512i v = _mm512_maskz_loadu_epi8(k, row + i);
      for (int b = 1; b < kw; b++) v = qp_max(v, _mm512_maskz_loadu_epi8(k, row + i + b * dw), s8);
      _mm512_mask_storeu_epi8(acc + i, k, v);
    }
    if (sw == 2)
      for (int i = 0; i < OW; i += 32) {
        __mmask32 k = OW - i >= 32 ? ~0U : (1U << (OW - i)) - 1;
        _mm256_mask_storeu_epi8(out + i, k, _mm512_cvtepi16_epi8(_mm512_maskz_loadu_epi16(k, m + 2 * i)));
      }
    else if (sw > 2) for (int i = 0; i < OW; i++) out[i] = m[i * sw];
  }
}
static void qpool_avx512_u8(void *p, int c) { qpool_avx512_task(p, c, 0); }
static void qpool_avx512_s8(void *p, int c) { qpool_avx512_task(p, c, 1); }
#endif
void kiln_maxpool_q(const void *x, void *y, int planes, int H, int W, int OH, int OW, int kh, int kw, int sh, int sw,
    int dh, int dw, int ph, int pw, int is_s8) {
  qpool_job j = { x, y, H, W, OH, OW, kh, kw, sh, sw, dh, dw, ph, pw };
#if defined(__x86_64__)
  if (qvnni()) { kiln_pool_run(is_s8 ? qpool_avx512_s8 : qpool_avx512_u8, &j, planes); return; }
#endif
  kiln_pool_run(is_s8 ? qpool_s8_task : qpool_u8_task, &j, planes);
}
`;
