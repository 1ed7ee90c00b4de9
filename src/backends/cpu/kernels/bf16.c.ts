// The bf16 math mode's GEMM (precision 'bf16' on the CPU, see ../bf16.ts): fp32 tensors in and out, operands rounded
// to bfloat16 (round to nearest even) and multiplied by AVX-512 BF16's VDPBF16PS, which adds the products of two bf16
// pairs into each fp32 lane: twice the multiply-adds per instruction of an fp32 FMA (Zen 4: 325 vs 163 GFLOP/s per
// core). Compiled only into bf16 builds' libraries, under a target pragma (the rest of the library keeps its flags).
import { fuseTile } from './tiles.c.js';

/** Declarations (part of a bf16 build's header). */
export const BF16_H = String.raw`
/* C[M][N] = A[M][K] x B[K][N] in bf16, A as pairs along K per row panel, B as pairs along K per column. A convolution:
   A the weights, prepacked (kiln_bpack_a), B the activations, rounded to bf16 pairs per block as the tasks need them:
   read in place (a pointwise layer's input, rows ldb apart) or from the fp32 im2col panels of the convolution's packb.
   A MatMul: A the activations, rounded per call (kiln_bpack_rows), B the weights, prepacked (kiln_bpack_a over B's
   transpose, bp). */
typedef struct bgemm_s {
  int M, N, K;
  const uint32_t *ap;              /* [ceil(M/MR)][ceil(K/2)][MR] pairs (w[k], w[k + 1]), zero padded */
  const float *src; size_t sbs; size_t ldb; /* B in place, images sbs floats apart; NULL: packb */
  void (*packb)(const void *ctx, int j0, int k0, int kc, float *panel); /* fp32 [kc][NR] from row k0, col j0 */
  void (*epi)(const void *ctx, float *c, int ldc, int i0, int mi, int j0, int nj);
  const void *ctx; size_t ctxbs;
  float *c; size_t cbs; int ldc;
  int batch;
  int accumulate;                  /* as in gemm_t */
  const uint32_t *bp;              /* B prepacked as [ceil(N/NR)][ceil(K/2)][NR] pairs (b[k][j], b[k + 1][j]), or NULL */
  const kfuse_t *fuse;             /* the epilogue applied in the tile stores (as in gemm_t), or NULL */
} bgemm_t;
void *kiln_bpack_a(const float *w, int rs, int cs, int M, int K, int MR);
const uint32_t *kiln_bpack_rows(const float *a, int lda, int M, int K, int MR);
/* The bf16 transposed convolution's operands (tconv_t, renderTconv's bf16 instance): weights [Co][C][KHW] as panels
   [ceil(Co/NR)][ceil(C/2) * KHW][NR] of words (w[co][2c][t], w[co][2c + 1][t]); images zero padded to HP x WP as
   ceil(C/2) planes of words (x[2c][h][w], x[2c + 1][h][w]), slack words after each image, per words apart. */
void *kiln_bpack_conv(const float *w, int Co, int C, int KHW, int NR);
const uint32_t *kiln_bpad_pairs(const float *x, int B, int C, int H, int W, int HP, int WP, int pt, int pl, int slack, size_t *per);
`;

/** The packing helpers of the bf16 GEMM (once per bf16 library). */
export const BF16_C = String.raw`
#pragma GCC push_options
#pragma GCC target("avx512bf16")
#include <immintrin.h>
/* fp32 -> bf16, round to nearest even (NaN kept quiet), as VCVTNE2PS2BF16 rounds the activations */
static inline uint32_t kbf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return (u >> 16) | 0x40;
  return (u + 0x7fff + ((u >> 16) & 1)) >> 16;
}
/* Weights w[m * rs + k * cs] as panels of MR rows: per pair of K steps one 32-bit word per row, (w[k], w[k + 1]). A
   MatMul's B [K][N] packs as panels of its columns: the same layout over its transpose (strides swapped). */
void *kiln_bpack_a(const float *w, int rs, int cs, int M, int K, int MR) {
  int K2 = (K + 1) / 2, np = (M + MR - 1) / MR;
  uint32_t *o = (uint32_t *)kiln_alloc((size_t)np * K2 * MR);
  for (int p = 0; p < np; p++)
    for (int k2 = 0; k2 < K2; k2++)
      for (int r = 0; r < MR; r++) {
        int m = p * MR + r, k = 2 * k2;
        uint32_t lo = m < M ? kbf16(w[(size_t)m * rs + (size_t)k * cs]) : 0;
        uint32_t hi = m < M && k + 1 < K ? kbf16(w[(size_t)m * rs + (size_t)(k + 1) * cs]) : 0;
        o[((size_t)p * K2 + k2) * MR + r] = lo | hi << 16;
      }
  return o;
}
void *kiln_bpack_conv(const float *w, int Co, int C, int KHW, int NR) {
  int CP = (C + 1) / 2, np = (Co + NR - 1) / NR;
  uint32_t *o = (uint32_t *)kiln_alloc((size_t)np * CP * KHW * NR);
  for (int p = 0; p < np; p++)
    for (int cp = 0; cp < CP; cp++)
      for (int t = 0; t < KHW; t++)
        for (int j = 0; j < NR; j++) {
          int co = p * NR + j, c = 2 * cp;
          const float *wc = w + ((size_t)co * C + c) * KHW + t;
          uint32_t lo = co < Co ? kbf16(wc[0]) : 0, hi = co < Co && c + 1 < C ? kbf16(wc[KHW]) : 0;
          o[(((size_t)p * CP + cp) * KHW + t) * NR + j] = lo | hi << 16;
        }
  return o;
}
typedef struct { const float *x; uint32_t *o; int C, H, W, HP, WP, pt, pl, slack, per, planes; size_t img; } bpad_job;
/* planes [t * per, (t + 1) * per) of (image, channel pair): per padded row, 16 columns at a time, the two channels'
   valid columns loaded under a mask (the pads read as zeros), rounded into one vector of 32 halves and interleaved
   into words */
static void bpad_task(void *p, int t) {
  const bpad_job *j = p;
  const __m512i il = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
    23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  int CP = (j->C + 1) / 2, HW = j->H * j->W;
  size_t plane = (size_t)j->HP * j->WP;
  for (int q = t * j->per; q < KMIN(j->planes, (t + 1) * j->per); q++) {
    int b = q / CP, cp = q % CP;
    const float *x0 = j->x + ((size_t)b * j->C + 2 * cp) * HW, *x1 = 2 * cp + 1 < j->C ? x0 + HW : NULL;
    uint32_t *o = j->o + (size_t)b * j->img + (size_t)cp * plane;
    for (int h = 0; h < j->HP; h++) {
      uint32_t *orow = o + (size_t)h * j->WP;
      int ih = h - j->pt;
      if ((unsigned)ih >= (unsigned)j->H) { memset(orow, 0, j->WP * sizeof(uint32_t)); continue; }
      const float *r0 = x0 + (size_t)ih * j->W - j->pl, *r1 = x1 ? x1 + (size_t)ih * j->W - j->pl : NULL;
      for (int w = 0; w < j->WP; w += 16) {
        /* lanes l with source column w + l - pl in [0, W) */
        int lo = KMIN(16, KMAX(0, j->pl - w)), hi = KMIN(16, KMAX(0, j->pl + j->W - w));
        __mmask16 m = lo < hi ? (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1)) : 0;
        __m512 v0 = _mm512_maskz_loadu_ps(m, r0 + w), v1 = r1 ? _mm512_maskz_loadu_ps(m, r1 + w) : _mm512_setzero_ps();
        __m512i v = _mm512_permutexvar_epi16(il, (__m512i)_mm512_cvtne2ps_pbh(v1, v0));
        _mm512_mask_storeu_epi32(orow + w, (__mmask16)((1u << KMIN(16, j->WP - w)) - 1), v);
      }
    }
    if (cp == CP - 1) memset(o + plane, 0, j->slack * sizeof(uint32_t));
  }
}
const uint32_t *kiln_bpad_pairs(const float *x, int B, int C, int H, int W, int HP, int WP, int pt, int pl, int slack, size_t *per) {
  int CP = (C + 1) / 2, planes = B * CP;
  size_t img = (size_t)CP * HP * WP + slack;
  uint32_t *out = (uint32_t *)kiln_scratch(2, (size_t)B * img);
  *per = img;
  /* below ~64K words a handoff to other threads costs more than the copy (as kiln_pad_images) */
  int tasks = (size_t)planes * HP * WP < (1 << 16) ? 1 : KMIN(planes, 4 * kiln_threads());
  bpad_job j = { x, out, C, H, W, HP, WP, pt, pl, slack, (planes + tasks - 1) / KMAX(1, tasks), planes, img };
  if (planes) { if (tasks <= 1) bpad_task(&j, 0); else kiln_pool_run(bpad_task, &j, (planes + j.per - 1) / j.per); }
  return out;
}
typedef struct { const float *a; int lda, M, K, MR; uint32_t *o; } bpack_rows_job;
/* one panel of MR rows: 32 floats of a row rounded into 16 pair words at a time (VCVTNE2PS2BF16 pairs neighbours),
   each word to its K pair's row of the panel */
static void bpack_rows_task(void *p, int t) {
  const bpack_rows_job *job = p;
  int K = job->K, K2 = (K + 1) / 2, MR = job->MR;
  uint32_t *o = job->o + (size_t)t * K2 * MR;
  for (int r = 0; r < MR; r++) {
    int m = t * MR + r;
    if (m >= job->M) { for (int k2 = 0; k2 < K2; k2++) o[(size_t)k2 * MR + r] = 0; continue; }
    const float *row = job->a + (size_t)m * job->lda;
    for (int k = 0; k < K; k += 32) {
      int n = KMIN(32, K - k);
      __mmask16 m0 = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1), m1 = n <= 16 ? 0 : n >= 32 ? (__mmask16)0xffff : (__mmask16)((1u << (n - 16)) - 1);
      uint32_t w[16] __attribute__((aligned(64)));
      _mm512_store_si512((void *)w, (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, row + k + 16), _mm512_maskz_loadu_ps(m0, row + k)));
      for (int i = 0; i < (n + 1) / 2; i++) o[(size_t)(k / 2 + i) * MR + r] = w[i];
    }
  }
}
/* Row-major activations as bf16 pair panels [ceil(M/MR)][ceil(K/2)][MR] in the calling thread's scratch slot 3 (the
   tasks' slots 0 and 1 stay theirs), the panels spread over the pool */
const uint32_t *kiln_bpack_rows(const float *a, int lda, int M, int K, int MR) {
  int np = (M + MR - 1) / MR;
  bpack_rows_job job = { a, lda, M, K, MR, (uint32_t *)kiln_scratch(3, (size_t)np * ((K + 1) / 2) * MR) };
  kiln_pool_run(bpack_rows_task, &job, np);
  return job.o;
}
#pragma GCC pop_options
`;

/** The microkernel and driver of one MR x NR tile (NR = NV vectors of 16 positions). */
export function renderBgemm(mr: number, nv: number): string {
  const id = `${mr}x${nv}`;
  return String.raw`
#pragma GCC push_options
#pragma GCC target("avx512bf16")
/* rows [k, k + kc) of B (rows ldb apart, n <= NR valid columns) as bf16 pairs [kc / 2][NR]: two rows rounded into one
   vector of 32 halves (VCVTNE2PS2BF16), interleaved to (b[k][j], b[k + 1][j]) per lane; an odd last row pairs with 0 */
static inline __attribute__((always_inline)) void bpack_b_${id}(const float *restrict b, size_t ldb, int kc, int n, uint32_t *restrict o) {
  enum { NV = ${nv}, NR = ${nv} * 16 };
  const __m512i il = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
    23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  __mmask16 m[NV];
  for (int v = 0; v < NV; v++) { int c = n - v * 16; m[v] = c >= 16 ? (__mmask16)0xffff : c <= 0 ? 0 : (__mmask16)((1u << c) - 1); }
  for (int k = 0; k < kc; k += 2, o += NR) {
    const float *r0 = b + (size_t)k * ldb, *r1 = r0 + ldb;
    _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {
      __m512 lo = _mm512_maskz_loadu_ps(m[v], r0 + v * 16);
      __m512 hi = k + 1 < kc ? _mm512_maskz_loadu_ps(m[v], r1 + v * 16) : _mm512_setzero_ps();
      __m512i h = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
      _mm512_store_si512((void *)(o + v * 16), _mm512_permutexvar_epi16(il, h));
    }
  }
}

${fuseTile(`ukb_${id}_fuse`, mr, nv)}
/* C[MR][NR] (+)= A pairs [K2][MR] x B pairs [K2][NR]: per pair of K steps, each row's weight pair broadcast against the
   NV vectors of position pairs; \`fu\`: the fused epilogue before the store (NULL: a plain store) */
static inline __attribute__((always_inline)) void ukb_${id}(int K2, const uint32_t *restrict a, const uint32_t *restrict b, float *restrict c, int ldc, int acc,
    const float *restrict bias, const kfuse_t *fu) {
  vf s[${mr}][${nv}];
  if (acc) {
    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
      _Pragma("GCC unroll 4") for (int j = 0; j < ${nv}; j++) s[r][j] = _mm512_loadu_ps(c + (size_t)r * ldc + j * 16);
  } else {
    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
      _Pragma("GCC unroll 4") for (int j = 0; j < ${nv}; j++) s[r][j] = _mm512_setzero_ps();
  }
  _Pragma("GCC unroll 2") for (int k = 0; k < K2; k++, a += ${mr}, b += ${nv * 16}) {
    __m512bh bv[${nv}];
    _Pragma("GCC unroll 4") for (int j = 0; j < ${nv}; j++) bv[j] = (__m512bh)_mm512_load_si512((const void *)(b + j * 16));
    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) {
      __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r]);
      _Pragma("GCC unroll 4") for (int j = 0; j < ${nv}; j++) s[r][j] = _mm512_dpbf16_ps(s[r][j], av, bv[j]);
    }
  }
  if (fu) ukb_${id}_fuse(s, bias, fu);
  _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
    _Pragma("GCC unroll 4") for (int j = 0; j < ${nv}; j++) _mm512_storeu_ps(c + (size_t)r * ldc + j * 16, s[r][j]);
}

typedef struct { const bgemm_t *g; int tm, tn, mc, nc; } bgemm_job_${id};

/* One task: rows [i0, i1) x columns [j0, j1) of one image, as gemm_task: column blocks of NB, K in blocks of KC
   (even), each block's B rounded to pairs once and met by every row panel of the task; the last K block applies the
   fused epilogue in its stores (g->fuse), or the generic one runs per column block after it. */
static void bgemm_task_${id}(void *p, int t) {
  enum { MR = ${mr}, NR = ${nv} * 16, KC = 8192 / NR, NB = 4 * NR };
  const bgemm_job_${id} *job = p;
  const bgemm_t *g = job->g;
  int per = job->tm * job->tn, img = t / per;
  t %= per;
  float *const cimg = g->c + (size_t)img * g->cbs;
  const void *const ctx = (const char *)g->ctx + (size_t)img * g->ctxbs;
  const float *src = g->src ? g->src + (size_t)img * g->sbs : NULL;
  int i0 = (t % job->tm) * job->mc, j0 = (t / job->tm) * job->nc;
  int i1 = KMIN(g->M, i0 + job->mc), j1 = KMIN(g->N, j0 + job->nc), K = g->K, K2 = (K + 1) / 2, ldc = g->ldc;
  if (i0 >= i1 || j0 >= j1) return;
  int nkb = (K + KC - 1) / KC, kcb = ((K + nkb - 1) / nkb + 1) & ~1;
  uint32_t *bb = g->bp ? NULL : (uint32_t *)kiln_scratch(1, (size_t)(kcb / 2) * NB);
  float *fp = src || g->bp ? NULL : kiln_scratch(0, (size_t)kcb * NR);
  float tile[MR * NR] __attribute__((aligned(64))), bpad[MR];
  for (int jb = j0; jb < j1; jb += NB) {
    int nbw = KMIN(NB, j1 - jb);
    for (int k0 = 0; k0 < K; k0 += kcb) {
      int kc = KMIN(kcb, K - k0), kc2 = (kc + 1) / 2;
      const kfuse_t *fu = k0 + kc == K ? g->fuse : NULL;
      if (!g->bp) for (int jr = 0; jr < nbw; jr += NR) {
        int nj = KMIN(NR, nbw - jr);
        uint32_t *bp = bb + (size_t)(jr / NR) * (kcb / 2) * NR;
        if (src) bpack_b_${id}(src + (size_t)k0 * g->ldb + jb + jr, g->ldb, kc, nj, bp);
        else { g->packb(ctx, jb + jr, k0, kc, fp); bpack_b_${id}(fp, NR, kc, NR, bp); }
      }
      int acc = k0 > 0 || g->accumulate;
      for (int jr = 0; jr < nbw; jr += NR) {
        int j = jb + jr, nj = KMIN(NR, nbw - jr);
        const uint32_t *bp = g->bp ? g->bp + ((size_t)(j / NR) * K2 + k0 / 2) * NR : bb + (size_t)(jr / NR) * (kcb / 2) * NR;
        for (int i = i0; i < i1; i += MR) {
          int mi = KMIN(MR, i1 - i);
          const uint32_t *ap = g->ap + ((size_t)(i / MR) * K2 + k0 / 2) * MR;
          float *c = cimg + (size_t)i * ldc + j;
          const float *bias = kfuse_rows(fu, i, mi, MR, bpad);
          if (mi == MR && nj == NR) ukb_${id}(kc2, ap, bp, c, ldc, acc, bias, fu);
          else {
            if (acc) for (int r = 0; r < mi; r++) memcpy(tile + r * NR, c + (size_t)r * ldc, nj * sizeof(float));
            ukb_${id}(kc2, ap, bp, tile, NR, acc, bias, fu);
            for (int r = 0; r < mi; r++) memcpy(c + (size_t)r * ldc, tile + r * NR, nj * sizeof(float));
          }
        }
      }
    }
    if (g->epi) g->epi(ctx, cimg + (size_t)i0 * ldc + jb, ldc, i0, i1 - i0, jb, nbw);
  }
}
#pragma GCC pop_options

void kiln_bgemm_${id}(const bgemm_t *g) {
  enum { MR = ${mr}, NR = ${nv} * 16 };
  int batch = g->batch;
  if (batch <= 0 || g->M <= 0 || g->N <= 0) return;
  int np = (g->N + NR - 1) / NR, nm = (g->M + MR - 1) / MR, cm, cn;
  kiln_split2(nm, np, batch, 1, &cm, &cn);
  int mc = cm * MR, nc = cn * NR;
  bgemm_job_${id} job = { g, (g->M + mc - 1) / mc, (g->N + nc - 1) / nc, mc, nc };
  kiln_pool_run(bgemm_task_${id}, &job, job.tm * job.tn * batch);
}
`;
}
