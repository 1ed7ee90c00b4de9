// The register-tile kernels of every compiled CPU library, one instance per tile shape the layers use: the GEMM
// microkernel and driver (renderGemm) and the transposed direct convolution (renderTconv). They build on the vector
// types and helpers of RUNTIME_H (runtime.c.ts).
/**
 * The register-tile microkernel, C[MR][NR] (+)= A panel [K][MR] x B [K][NR] (NR = NV vectors), as each caller reads
 * B and C: from a packed panel (the GEMM), or rows \`ldb\` apart (\`ldb\`: its C type) read unaligned (a pointwise
 * convolution's input in place) or aligned (Winograd's transformed input); \`acc\` adds to C; \`cAligned\` stores C
 * aligned with a size_t row offset; \`fuse\` takes the layer's common epilogue (kfuse_t, POINTWISE_H) and applies it to
 * the accumulators before the store (\`fu\` NULL: a plain store, as for the GEMM's earlier K blocks). One renderer, so
 * the hottest loop of the CPU backend is written once.
 */
export function microkernel(o: { name: string; mr: number; nv: number; ldb?: 'int' | 'size_t'; bAligned: boolean; acc: boolean; cAligned?: boolean; inline?: boolean;
  fuse?: boolean }): string {
  const { mr, nv } = o;
  const bType = o.bAligned ? 'vf' : 'vfu';
  const zero = `    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) s[r][j] = (vf){0};`;
  const init = o.acc ? `  if (acc) {
    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) s[r][j] = *(const vfu *)(c + r * ldc + j * VW);
  } else {
${zero}
  }` : zero.replace(/^ {2}/gm, '');
  const store = o.cAligned ? `*(vf *)(c + (size_t)r * ldc + j * VW)` : `*(vfu *)(c + r * ldc + j * VW)`;
  return `${o.fuse ? fuseTile(`${o.name}_fuse`, mr, nv) : ''}${o.inline ? 'static inline __attribute__((always_inline)) void' : 'static void'} ${o.name}(int K, const float *restrict a, const float *restrict b, ${o.ldb ? `${o.ldb} ldb, ` : ''}float *restrict c, int ldc${o.acc ? ', int acc' : ''}${o.fuse ? ', const float *restrict bias, const kfuse_t *fu' : ''}) {
  vf s[${mr}][${nv}];
${init}
  _Pragma("GCC unroll 4") for (int k = 0; k < K; k++, a += ${mr}, b += ${o.ldb ? 'ldb' : `${nv} * VW`}) {
    vf bv[${nv}];
    _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) bv[j] = *(const ${bType} *)(b + j * VW);
    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) {
      float ar = a[r];
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) s[r][j] += ar * bv[j];
    }
  }
${o.fuse ? `  if (fu) ${o.name}_fuse(s, bias, fu);\n` : ''}  _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
    _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) ${store} = s[r][j];
}
`;
}

/** The common epilogue (kfuse_t) on a microkernel's MR x NV accumulators (here and in the bf16 GEMM's). The activation
 * is a switch per tile, outside the unrolled loops. */
export function fuseTile(name: string, mr: number, nv: number): string {
  const each = (body: string) => `_Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) { vf v = s[r][j]; ${body} }`;
  return `static inline __attribute__((always_inline)) void ${name}(vf s[${mr}][${nv}], const float *restrict bias, const kfuse_t *fu) {
  if (bias) _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) { float br = bias[r]; _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) s[r][j] += br; }
  const vf zero = (vf){0}, one = zero + 1.0f, lo = zero + fu->lo, hi = zero + fu->hi;
  switch (fu->act) {
  case KFUSE_RELU: ${each('s[r][j] = KSEL(v > zero, v, zero);')} break;
  case KFUSE_CLIP: ${each('v = KSEL(v < lo, lo, v); s[r][j] = KSEL(v > hi, hi, v);')} break;
  case KFUSE_HARDSWISH: ${each('vf t = v * (1.0f / 6.0f) + 0.5f; t = KSEL(t < zero, zero, t); s[r][j] = v * KSEL(t > one, one, t);')} break;
  default: break;
  }
}
`;
}

/** The register-tile microkernel and GEMM driver for one MR x NR tile (NR = NV vectors). */
export function renderGemm(mr: number, nv: number): string {
  const id = `${mr}x${nv}`;
  return String.raw`
/* C[MR][NR] (+)= A panel [K][MR] x B panel [K][NR]; 'acc' adds to C (later K blocks). */
${microkernel({ name: `ukr_${id}`, mr, nv, bAligned: true, acc: true, fuse: true })}
typedef struct { const gemm_t *g; int tm, tn, mc, nc; } gemm_job_${id};

/* One task: rows [i0, i1) x columns [j0, j1). Columns go in blocks of NB; K goes in blocks of KC so one B panel
   slice [KC][NR] stays in L1 while it meets every A panel slice of the task (those stay in L2). B slices are packed
   per block (or read from the prepacked panels); the last K block applies the fused epilogue in its stores (g->fuse),
   or the generic one runs once per block after it. */
static void gemm_task_${id}(void *p, int t) {
  enum { MR = ${mr}, NR = ${nv} * VW, KC = 4096 / NR, NB = 4 * NR };
  const gemm_job_${id} *job = p;
  const gemm_t *g = job->g;
  int per = job->tm * job->tn, img = t / per;
  t %= per;
  float *const cimg = g->c + (size_t)img * g->cbs;
  const void *const ctx = (const char *)g->ctx + (size_t)img * g->ctxbs;
  int i0 = (t % job->tm) * job->mc, j0 = (t / job->tm) * job->nc;
  int i1 = KMIN(g->M, i0 + job->mc), j1 = KMIN(g->N, j0 + job->nc), K = g->K;
  if (i0 >= i1 || j0 >= j1) return;
  const float *apan;
  if (g->ap) apan = g->ap + (size_t)(i0 / MR) * K * MR;
  else {
    float *buf = kiln_scratch(0, (size_t)((i1 - i0 + MR - 1) / MR) * MR * K);
    kiln_pack_a(g->a + (size_t)i0 * g->lda, g->lda, 1, i1 - i0, K, MR, buf);
    apan = buf;
  }
  /* K blocks of equal size near KC (a short last block wastes the C reload) */
  int nkb = (K + KC - 1) / KC, kcb = (K + nkb - 1) / nkb;
  float *bbuf = g->bp ? NULL : kiln_scratch(1, (size_t)kcb * NB);
  float tile[MR * NR] __attribute__((aligned(64))), bpad[MR];
  for (int jb = j0; jb < j1; jb += NB) {
    int nbw = KMIN(NB, j1 - jb);
    for (int k0 = 0; k0 < K; k0 += kcb) {
      int kc = KMIN(kcb, K - k0);
      const kfuse_t *fu = k0 + kc == K ? g->fuse : NULL;
      for (int jr = 0; jr < nbw; jr += NR) {
        int j = jb + jr, nj = KMIN(NR, nbw - jr);
        const float *bpan;
        if (g->bp) bpan = g->bp + (size_t)(j / NR) * K * NR + (size_t)k0 * NR;
        else { bpan = bbuf + (size_t)(jr / NR) * kcb * NR; g->packb(ctx, j, k0, kc, (float *)bpan); }
        /* prepacked B comes from memory once per task (weights larger than the caches): spread prefetches of the
           next slice over this slice's row panels so its latency hides behind the arithmetic */
        const char *pf = NULL; int pfl = 0, pfstep = 0;
        if (g->bp) {
          int nj2 = j, nk0 = k0;
          if (jr + NR < nbw) nj2 = j + NR;
          else if (k0 + kc < K) { nj2 = jb; nk0 = k0 + kc; }
          else { nj2 = jb + NB; nk0 = 0; }
          if (nj2 < j1) {
            pf = (const char *)(g->bp + (size_t)(nj2 / NR) * K * NR + (size_t)nk0 * NR);
            pfl = KMIN(kcb, K - nk0) * NR * 4;
            pfstep = (pfl / ((i1 - i0 + MR - 1) / MR) + 63) / 64 * 64;
          }
        }
        for (int i = i0; i < i1; i += MR) {
          int mi = KMIN(MR, i1 - i);
          if (pf) for (int o = 0; o < pfstep && pfl > 0; o += 64, pf += 64, pfl -= 64) __builtin_prefetch(pf, 0, 3);
          const float *ap = apan + (size_t)((i - i0) / MR) * K * MR + (size_t)k0 * MR;
          float *c = cimg + (size_t)i * g->ldc + j;
          int acc = k0 > 0 || g->accumulate;
          const float *bias = kfuse_rows(fu, i, mi, MR, bpad);
          if (mi == MR && nj == NR) ukr_${id}(kc, ap, bpan, c, g->ldc, acc, bias, fu);
          else {
            if (acc) for (int r = 0; r < mi; r++) memcpy(tile + r * NR, c + (size_t)r * g->ldc, nj * sizeof(float));
            ukr_${id}(kc, ap, bpan, tile, NR, acc, bias, fu);
            for (int r = 0; r < mi; r++) memcpy(c + (size_t)r * g->ldc, tile + r * NR, nj * sizeof(float));
          }
        }
      }
    }
    if (g->epi) g->epi(ctx, cimg + (size_t)i0 * g->ldc + jb, g->ldc, i0, i1 - i0, jb, nbw);
  }
}

/* A few rows against prepacked B (a classifier at batch 1, M = 1): the MR-row tile would spend most of its work on
   zero rows, so each task runs MM rows of row-major A straight against its B panels, U accumulator sets over
   interleaved K steps to hide the FMA latency. Bound by streaming the weights. */
typedef struct { const gemm_t *g; int per; } gemv_job_${id};
static inline __attribute__((always_inline)) void gemv_rows_${id}(const gemm_t *g, const float *restrict b, int r0, int MM, int j, int nj) {
  enum { NV = ${nv}, NR = ${nv} * VW, U = 4 };
  const int K = g->K;
  const float *a = g->a + (size_t)r0 * g->lda;
  vf s[U][4][NV];
  for (int u = 0; u < U; u++) for (int r = 0; r < MM; r++) for (int v = 0; v < NV; v++) s[u][r][v] = (vf){0};
  int k = 0;
  for (; k + U <= K; k += U) {
    _Pragma("GCC unroll 4") for (int u = 0; u < U; u++) {
      const float *bk = b + (size_t)(k + u) * NR;
      for (int r = 0; r < MM; r++) {
        float ar = a[(size_t)r * g->lda + k + u];
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) s[u][r][v] += ar * *(const vf *)(bk + v * VW);
      }
    }
  }
  for (; k < K; k++) for (int r = 0; r < MM; r++) {
    float ar = a[(size_t)r * g->lda + k];
    for (int v = 0; v < NV; v++) s[0][r][v] += ar * *(const vf *)(b + (size_t)k * NR + v * VW);
  }
  for (int r = 0; r < MM; r++) {
    float tile[NR] __attribute__((aligned(64)));
    for (int v = 0; v < NV; v++) *(vf *)(tile + v * VW) = (s[0][r][v] + s[1][r][v]) + (s[2][r][v] + s[3][r][v]);
    memcpy(g->c + (size_t)(r0 + r) * g->ldc + j, tile, nj * sizeof(float));
  }
}
static void gemv_task_${id}(void *p, int t) {
  enum { NR = ${nv} * VW };
  const gemv_job_${id} *job = p;
  const gemm_t *g = job->g;
  int np = (g->N + NR - 1) / NR, p0 = t * job->per, p1 = KMIN(np, p0 + job->per);
  for (int pn = p0; pn < p1; pn++) {
    const float *b = g->bp + (size_t)pn * g->K * NR;
    int j = pn * NR, nj = KMIN(NR, g->N - j);
    for (int r0 = 0; r0 < g->M; r0 += 2) {
      if (g->M - r0 == 1) gemv_rows_${id}(g, b, r0, 1, j, nj);
      else gemv_rows_${id}(g, b, r0, 2, j, nj);
    }
    if (g->epi) g->epi(g->ctx, g->c + j, g->ldc, 0, g->M, j, nj);
  }
}

/* Row-major A packed into MR-row panels once for all tasks of a GEMM (split by columns, each task would pack the same
   rows again: 8 times over at two threads). */
typedef struct { const gemm_t *g; float *buf; int per; } packa_job_${id};
static void packa_task_${id}(void *p, int t) {
  enum { MR = ${mr} };
  const packa_job_${id} *job = p;
  const gemm_t *g = job->g;
  int i0 = t * job->per * MR, i1 = KMIN(g->M, i0 + job->per * MR);
  if (i0 < i1) kiln_pack_a(g->a + (size_t)i0 * g->lda, g->lda, 1, i1 - i0, g->K, MR, job->buf + (size_t)(i0 / MR) * g->K * MR);
}

/* Split the output into tasks: N panels first (B is packed per task, or streamed once from the prepacked weights),
   then M chunks so every thread has a few tasks to balance. K blocking keeps the A slices in L2 whatever M is, so A
   is not split for size (that would stream the weights once per chunk). */
void kiln_gemm_${id}(const gemm_t *g) {
  enum { MR = ${mr}, NR = ${nv} * VW };
  if (g->M <= 0 || g->N <= 0) return;
  int nth = kiln_threads(), np = (g->N + NR - 1) / NR, nm = (g->M + MR - 1) / MR, batch = g->batch > 0 ? g->batch : 1;
  if (g->M <= 4 && g->M < MR && g->bp && !g->ap && batch == 1 && !g->accumulate && !g->fuse) {
    int tasks = KMIN(np, 4 * nth);
    gemv_job_${id} job = { g, (np + tasks - 1) / tasks };
    kiln_pool_run(gemv_task_${id}, &job, (np + job.per - 1) / job.per);
    return;
  }
  int cm, cn;
  /* each cut of one dimension reads the other operand once more: with B the prepacked weights and no larger than A
     (M >= N), the rows are cut (ConvNeXt's 3136 x 384 -> 96 at 2 threads: 0.7x); else the columns */
  kiln_split2(nm, np, batch, !(g->bp && g->M >= g->N), &cm, &cn);
  int mc = cm * MR, nc = cn * NR;
  gemm_job_${id} job = { g, (g->M + mc - 1) / mc, (g->N + nc - 1) / nc, mc, nc };
  gemm_t packed;
  if (!g->ap && job.tn * batch > 1) {
    /* scratch slot 3 of the calling thread: the tasks' own slots 0 and 1 stay theirs */
    packed = *g;
    float *buf = kiln_scratch(3, (size_t)nm * MR * g->K);
    int tasks = KMIN(nm, 4 * nth);
    packa_job_${id} pj = { g, buf, (nm + tasks - 1) / tasks };
    kiln_pool_run(packa_task_${id}, &pj, (nm + pj.per - 1) / pj.per);
    packed.ap = buf;
    job.g = &packed;
  }
  kiln_pool_run(gemm_task_${id}, &job, job.tm * job.tn * batch);
}

/* C[MR][NR] = A panel [K][MR] x B rows b + off[k] (unaligned): the direct convolution's microkernel. */
static void ukrd_${id}(int K, const float *restrict a, const float *restrict b, const int *restrict off, float *restrict c, int ldc) {
  vf s[${mr}][${nv}];
  _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
    _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) s[r][j] = (vf){0};
  _Pragma("GCC unroll 4") for (int k = 0; k < K; k++, a += ${mr}) {
    const float *bk = b + off[k];
    vf bv[${nv}];
    _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) bv[j] = *(const vfu *)(bk + j * VW);
    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) {
      float ar = a[r];
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) s[r][j] += ar * bv[j];
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
    _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) *(vfu *)(c + r * ldc + j * VW) = s[r][j];
}

typedef struct { const dconv_t *g; int tm, tn, mc, nc, nw; } dconv_job_${id};

/* One task: rows [i0, i1) x wide columns [w0, w1) of one image. Rows go in blocks whose A panels fit in L2; per
   column block of NR, every row panel of the block runs the whole K (C stays in registers), then the epilogue runs
   on the block's output row segments. */
static void dconv_task_${id}(void *p, int t) {
  enum { MR = ${mr}, NR = ${nv} * VW };
  const dconv_job_${id} *job = p;
  const dconv_t *g = job->g;
  int per = job->tm * job->tn, img = t / per;
  t %= per;
  int i0 = (t % job->tm) * job->mc, w0 = (t / job->tm) * job->nc;
  int i1 = KMIN(g->M, i0 + job->mc), w1 = KMIN(job->nw, w0 + job->nc), K = g->K, OW = g->OW, WP = g->WP;
  if (i0 >= i1 || w0 >= w1) return;
  const float *src = g->src + (size_t)img * g->sbs;
  float *cimg = g->c + (size_t)img * g->cbs;
  const void *ctx = (const char *)g->ctx + (size_t)img * g->ctxbs;
  int ldc = g->OH * OW;
  int mcb = KMAX(MR, (65536 / K) / MR * MR);
  float tile[MR * NR] __attribute__((aligned(64)));
  for (int ib = i0; ib < i1; ib += mcb) {
    int ie = KMIN(i1, ib + mcb);
    for (int w = w0; w < w1; w += NR) {
      int nw = KMIN(NR, w1 - w), oh = w / WP, ow = w % WP;
      /* the whole block inside one output row: store straight into C */
      int direct = nw == NR && ow + NR <= OW;
      for (int i = ib; i < ie; i += MR) {
        int mi = KMIN(MR, ie - i);
        const float *ap = g->ap + (size_t)(i / MR) * K * MR;
        float *c = cimg + (size_t)i * ldc;
        if (direct && mi == MR) { ukrd_${id}(K, ap, src + w, g->off, c + oh * OW + ow, ldc); continue; }
        ukrd_${id}(K, ap, src + w, g->off, tile, NR);
        for (int q = 0; q < nw;) {
          int wq = w + q, r = wq / WP, col = wq % WP, len = KMIN(nw - q, WP - col);
          if (col < OW) {
            int keep = KMIN(len, OW - col);
            for (int rr = 0; rr < mi; rr++) memcpy(c + (size_t)rr * ldc + r * OW + col, tile + rr * NR + q, keep * sizeof(float));
          }
          q += len;
        }
      }
      if (g->epi) for (int q = 0; q < nw;) {
        int wq = w + q, r = wq / WP, col = wq % WP, len = KMIN(nw - q, WP - col);
        if (col < OW) g->epi(ctx, cimg + (size_t)ib * ldc + r * OW + col, ldc, ib, ie - ib, r * OW + col, KMIN(len, OW - col));
        q += len;
      }
      (void)oh;
    }
  }
}

void kiln_dconv_${id}(const dconv_t *g) {
  enum { MR = ${mr}, NR = ${nv} * VW };
  int batch = g->batch;
  /* wide columns up to the last valid one */
  int nwide = (g->OH - 1) * g->WP + g->OW;
  if (batch <= 0 || g->M <= 0 || nwide <= 0) return;
  int np = (nwide + NR - 1) / NR, nm = (g->M + MR - 1) / MR, cm, cn;
  kiln_split2(nm, np, batch, 1, &cm, &cn);
  int mc = cm * MR, nc = cn * NR;
  dconv_job_${id} job = { g, (g->M + mc - 1) / mc, (nwide + nc - 1) / nc, mc, nc, nwide };
  kiln_pool_run(dconv_task_${id}, &job, job.tm * job.tn * batch);
}
`;
}

/** A 16 x 16 block of floats transposed in registers (ktranspose16, RUNTIME_H) and stored as rows \`ldc\` apart, or
 * added to them: the transposed convolution's 16-position x 16-channel tiles go to the [channel][position] output
 * this way instead of by 256 scalar moves (a fifth of the work of a 3-channel 7x7 layer). Rendered once per library
 * (AVX-512 with GCC's __builtin_shuffle; else the scalar moves). */
export const TRANSPOSE16 = String.raw`
#ifdef KILN_TR16
#include <immintrin.h>
static inline __attribute__((always_inline)) void transpose_store16(const float *restrict t, float *restrict c, int ldc, int acc) {
  vf r[16];
  for (int i = 0; i < 16; i++) r[i] = *(const vf *)(t + i * 16);
  ktranspose16(r);
  if (acc) for (int i = 0; i < 16; i++) *(vfu *)(c + (size_t)i * ldc) += r[i];
  else for (int i = 0; i < 16; i++) *(vfu *)(c + (size_t)i * ldc) = r[i];
}
/* A block of P consecutive output positions x nj channels, held [P][ld] (position-major, 64-byte aligned rows, at
   least ceil(P / 16) * 16 of them readable), stored (or added) into the [channel][position] output: 16 x 16 squares
   transposed in registers, the last square's positions under a lane mask. Where a block's tiles cover consecutive
   positions (whole tiles along whole rows), this replaces the tiles' scalar moves (one load and store per float):
   MobileNetV2's 7 x 7 layers timed hot at build 3-6 % faster; in the model, where their weights come cold, within
   noise. */
static void transpose_store_block(const float *restrict t, int ld, int P, int nj, float *restrict c, int ldc, int acc) {
  for (int jb = 0; jb < nj; jb += 16) {
    int rows = KMIN(16, nj - jb);
    for (int pb = 0; pb < P; pb += 16) {
      vf r[16];
      for (int i = 0; i < 16; i++) r[i] = *(const vf *)(t + (size_t)(pb + i) * ld + jb);
      ktranspose16(r);
      float *cb = c + (size_t)jb * ldc + pb;
      __mmask16 m = P - pb >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (P - pb)) - 1);
      for (int i = 0; i < rows; i++) {
        __m512 v = (__m512)r[i];
        if (acc) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, cb + (size_t)i * ldc));
        _mm512_mask_storeu_ps(cb + (size_t)i * ldc, m, v);
      }
    }
  }
}
#endif
`;

/** The transposed direct convolution (see tconv_t) for one MR x NR tile: output positions x output channels. \`bf16\`:
 * the bf16 math mode's instance (kiln_tconv_b<tile>, under the avx512bf16 target): K counts pairs of input channels
 * per tap, the source is the padded image as (x[2c], x[2c + 1]) bf16 words (kiln_bpad_pairs) and the weights the
 * matching words per output channel (kiln_bpack_conv); each tap broadcasts one word against the weight pairs by
 * VDPBF16PS. It takes no edges (tap NULL: always the padded copy). */
export function renderTconv(mr: number, nv: number, bf16 = false): string {
  const id = `${bf16 ? 'b' : ''}${mr}x${nv}`;
  // a 16 x 16 tile (one vector of channels) is a square of vectors on AVX-512: transposed in registers (TRANSPOSE16)
  const square = mr === 16 && nv === 1;
  const mac = bf16 ? `__m512bh a = (__m512bh)_mm512_set1_epi32((int)((const uint32_t *)p)[r * s]);
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) t[r][j] = _mm512_dpbf16_ps(t[r][j], a, (__m512bh)bv[j]);`
    : `float a = p[r * s];
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) t[r][j] += a * bv[j];`;
  return String.raw`${bf16 ? '#pragma GCC push_options\n#pragma GCC target("avx512bf16")\n' : ''}static inline __attribute__((always_inline)) void ukt_${id}(int K, const float *restrict base, const int *restrict off, int s,
    const float *restrict b, float *restrict ct, int acc, const float *pf, int pfon) {
  vf t[${mr}][${nv}];
  if (acc) {
    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) t[r][j] = *(const vf *)(ct + r * ${nv} * VW + j * VW);
  } else {
    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) t[r][j] = (vf){0};
  }
  _Pragma("GCC unroll 2") for (int k = 0; k < K; k++, b += ${nv} * VW) {
    const float *p = base + off[k];
    if (pfon) {
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) __builtin_prefetch(pf + j * VW, 0, 2);
      pf += ${nv} * VW;
    }
    vf bv[${nv}];
    _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) bv[j] = *(const vf *)(b + j * VW);
    _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++) {
      ${mac}
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < ${mr}; r++)
    _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) *(vf *)(ct + r * ${nv} * VW + j * VW) = t[r][j];
}
${bf16 ? '' : String.raw`
/* One output position of an edge tile (see tconv_t.tap): K slice [k0, k0 + kc) with every tap checked against the
   image, added to (acc) or stored in the tile's row. */
static inline __attribute__((always_inline)) void ukt_edge_${id}(const tconv_t *g, const float *img, int k0, int kc, int ih0, int iw0,
    const float *restrict b, float *restrict row, int acc) {
  vf t[${nv}];
  _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) t[j] = acc ? *(const vf *)(row + j * VW) : (vf){0};
  const int *tp = g->tap + 3 * k0;
  for (int k = 0; k < kc; k++, tp += 3, b += ${nv} * VW) {
    int ih = ih0 + tp[1], iw = iw0 + tp[2];
    if ((unsigned)ih < (unsigned)g->H && (unsigned)iw < (unsigned)g->W) {
      float a = img[tp[0] + (size_t)ih * g->W + iw];
      _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) t[j] += a * *(const vf *)(b + j * VW);
    }
  }
  _Pragma("GCC unroll 8") for (int j = 0; j < ${nv}; j++) *(vf *)(row + j * VW) = t[j];
}
`}
typedef struct { const tconv_t *g; int tp, tt, pc, tc, tpr, ntiles; } tconv_job_${id};

static void tconv_task_${id}(void *p, int t) {
  enum { MR = ${mr}, NR = ${nv} * VW, TB = 16, KC = 8192 / NR };
  const tconv_job_${id} *job = p;
  const tconv_t *g = job->g;
  int per = job->tp * job->tt, img = t / per;
  t %= per;
  int p0 = (t % job->tp) * job->pc, p1 = KMIN((g->M + NR - 1) / NR, p0 + job->pc);
  int t0 = (t / job->tp) * job->tc, t1 = KMIN(job->ntiles, t0 + job->tc);
  if (p0 >= p1 || t0 >= t1) return;
  const float *src = g->src + (size_t)img * g->sbs;
  float *cimg = g->c + (size_t)img * g->cbs;
  const void *ctx = (const char *)g->ctx + (size_t)img * g->ctxbs;
  int K = g->K, OW = g->OW, s = g->s, tpr = job->tpr, ldc = g->OH * OW;
  int nkb = (K + KC - 1) / KC, kcb = (K + nkb - 1) / nkb;
  float ct[TB * MR * NR] __attribute__((aligned(64)));
  for (int pn = p0; pn < p1; pn++) {
    int co0 = pn * NR, nj = KMIN(NR, g->M - co0);
    const float *bpan = g->bp + (g->groups > 1 ? (size_t)(img % g->groups) * g->gbs : 0) + (size_t)pn * K * NR;
    for (int tb = t0; tb < t1; tb += TB) {
      int te = KMIN(t1, tb + TB);
      for (int k0 = 0; k0 < K; k0 += kcb) {
        int kc = KMIN(kcb, K - k0);
        /* one tile of the block (the second, where there is one: the first waits on this slice itself) prefetches
           the next slice of weights into L2 while the others compute: cold weights (the 7 x 7 and 14 x 14 layers
           read theirs from memory in the model) stream in behind the arithmetic instead of stalling the next slice's
           first tile (MobileNetV2's 7 x 7 layers: 13-15 % less time in the model; spreading the prefetches over all
           the later tiles measured no better) */
        const float *pf = bpan + (size_t)(k0 + kcb) * NR;
        int pq = te - tb > 1 ? tb + 1 : tb;
        for (int q = tb; q < te; q++) {
          int oh = q / tpr, ow0 = (q % tpr) * MR;
          const float *base = src + (size_t)oh * g->rs + (size_t)ow0 * s;
          float *tile = ct + (q - tb) * MR * NR;
${bf16 ? '' : String.raw`          /* edges: 0 every tap inside the image (in place), 1 inside its memory but some positions' columns off the
             image (in place, those positions redone with checks), 2 every position with checks */
          int edge = 0, mi = KMIN(MR, OW - ow0);
          if (g->tap) {
            int ih0 = oh * g->s0 - g->pt, iw0 = ow0 * s - g->pl;
            int rows = ih0 >= 0 && ih0 + g->khs < g->H, cols = iw0 >= 0 && iw0 + (MR - 1) * s + g->kws < g->W;
            long at = (long)oh * g->rs + (long)ow0 * s;
            edge = rows && cols ? 0 : rows && at + g->offlo >= 0 && at + g->offhi + (MR - 1) * s < (long)g->sbs ? 1 : 2;
          }
          if (edge == 2) {
            for (int r = 0; r < mi; r++)
              ukt_edge_${id}(g, src, k0, kc, oh * g->s0 - g->pt, (ow0 + r) * s - g->pl, bpan + (size_t)k0 * NR, tile + r * NR, k0 > 0);
            continue;
          }
          float keep[MR * NR] __attribute__((aligned(64)));
          if (edge == 1 && k0 > 0) memcpy(keep, tile, sizeof(keep));
`}#define UKT(S, PF) ukt_${id}(kc, base, g->off + k0, S, bpan + (size_t)k0 * NR, tile, k0 > 0, pf, PF)
          if (q == pq) { if (s == 1) UKT(1, 1); else if (s == 2) UKT(2, 1); else UKT(s, 1); }
          else if (s == 1) UKT(1, 0);
          else if (s == 2) UKT(2, 0);
          else UKT(s, 0);
#undef UKT
${bf16 ? '' : String.raw`          if (edge == 1) {
            for (int r = 0; r < mi; r++) {
              int iw0 = (ow0 + r) * s - g->pl;
              if (iw0 >= 0 && iw0 + g->kws < g->W) continue;
              if (k0 > 0) memcpy(tile + r * NR, keep + r * NR, NR * sizeof(float));
              ukt_edge_${id}(g, src, k0, kc, oh * g->s0 - g->pt, iw0, bpan + (size_t)k0 * NR, tile + r * NR, k0 > 0);
            }
          }
`}        }
      }
      /* transpose the block's tiles into C: output position n = oh * OW + ow */
#ifdef KILN_TR16
      if (OW % MR == 0) {
        /* whole tiles along whole rows: tile q starts at position q * MR, the block's tiles are consecutive */
        transpose_store_block(ct, NR, (te - tb) * MR, nj, cimg + (size_t)co0 * ldc + tb * MR, ldc, g->accumulate);
        if (g->epi) g->epi(ctx, cimg + (size_t)co0 * ldc + tb * MR, ldc, co0, nj, tb * MR, (te - tb) * MR);
        continue;
      }
#endif
      int nlo = -1, nhi = 0;
      for (int q = tb; q < te; q++) {
        int oh = q / tpr, ow0 = (q % tpr) * MR, mi = KMIN(MR, OW - ow0), n0 = oh * OW + ow0;
        const float *tile = ct + (q - tb) * MR * NR;
        if (nlo < 0) nlo = n0;
        nhi = n0 + mi;
${square ? `#ifdef KILN_TR16
        if (mi == MR && nj == NR) { transpose_store16(tile, cimg + (size_t)co0 * ldc + n0, ldc, g->accumulate); continue; }
#endif
` : ''}        for (int j = 0; j < nj; j++) {
          float *cr = cimg + (size_t)(co0 + j) * ldc + n0;
          if (g->accumulate) for (int r = 0; r < mi; r++) cr[r] += tile[r * NR + j];
          else for (int r = 0; r < mi; r++) cr[r] = tile[r * NR + j];
        }
      }
      if (g->epi) g->epi(ctx, cimg + (size_t)co0 * ldc + nlo, ldc, co0, nj, nlo, nhi - nlo);
    }
  }
}

void kiln_tconv_${id}(const tconv_t *g) {
  enum { MR = ${mr}, NR = ${nv} * VW };
  int batch = g->batch;
  if (batch <= 0 || g->M <= 0 || g->OH <= 0 || g->OW <= 0) return;
  int tpr = (g->OW + MR - 1) / MR, ntiles = g->OH * tpr, np = (g->M + NR - 1) / NR;
  int pc, tc;
  /* up to 8 tasks a thread by panels: a panel's weights are read by its task alone, so finer cuts cost no traffic, and
     with 4 a thread ResNet-50's 11 panels of 48 channels (512) went as 6 tasks of 2 panels and 1 of 1: one thread
     computed 3 pairs, the other 2 and idled for half a task */
  kiln_split2n(np, ntiles, batch, 0, 8, &pc, &tc);
  tconv_job_${id} job = { g, (np + pc - 1) / pc, (ntiles + tc - 1) / tc, pc, tc, tpr, ntiles };
  kiln_pool_run(tconv_task_${id}, &job, job.tp * job.tt * batch);
}
${bf16 ? '#pragma GCC pop_options\n' : ''}`;
}

/** Declarations of the tile kernels' fused epilogue (kfuse_t) and of the pointwise convolution (renderPointwise), part
 * of every library's header. */
export const POINTWISE_H = String.raw`
/* A convolution's common epilogue, applied by the GEMM and pointwise tiles to their accumulators before the store:
   the per-row bias (NULL: none), then the activation (lo, hi: the clip's bounds). The generic epilogue (a C function
   per layer over each stored tile: read back, add, activate, store) weighs against the arithmetic where K is small:
   RegNetY's 32 -> 64 at 112 x 112 takes 0.74x the time with bias + ReLU in the stores (bench/cpu/fuse-ab.ts). */
enum { KFUSE_NONE, KFUSE_RELU, KFUSE_CLIP, KFUSE_HARDSWISH };
typedef struct kfuse_s { const float *bias; int act; float lo, hi; } kfuse_t;
/* lanes of a where mask m is set, else of b */
#define KSEL(m, a, b) ((vf)(((kvi)(m) & (kvi)(a)) | (~(kvi)(m) & (kvi)(b))))
/* the bias of a tile's rows [i, i + mi) of MR: in place, or zero padded into pad where the tile is partial (the bias
   ends at the last row) */
static inline const float *kfuse_rows(const kfuse_t *fu, int i, int mi, int MR, float *pad) {
  if (!fu || !fu->bias) return NULL;
  if (mi == MR) return fu->bias + i;
  memcpy(pad, fu->bias + i, mi * sizeof(float));
  memset(pad + mi, 0, (MR - mi) * sizeof(float));
  return pad;
}
/* Pointwise convolution (1x1, stride 1, unpadded, group 1): C[M][N] = A[M][K] x the input image itself as B[K][N] (N
   positions): no im2col, no packing of B, no padded copy, and the output channels are the tile rows, so the tiles
   store straight into the [Co][N] output (the transposed convolution moves its tiles there one float at a time). */
typedef struct pw_s {
  int M, N, K;
  const float *ap;                 /* weights packed in [M/MR][K][MR] panels */
  const float *src; size_t sbs;    /* input images [K][N], sbs floats apart */
  void (*epi)(const void *ctx, float *c, int ldc, int i0, int mi, int j0, int nj);
  const void *ctx; size_t ctxbs;
  float *c; size_t cbs;            /* output [M][N] per image, cbs floats apart */
  int batch;
  int accumulate;                  /* C already holds the residual (see gemm_t): add to it */
  const kfuse_t *fuse;             /* the epilogue applied in the tile stores, or NULL */
} pw_t;
`;

/** The pointwise convolution (see pw_t) for one MR x NR tile: output channels x positions. chunk: floats of input
 * per chunk of positions (pw_task); KILN_PW_CHUNK=0 runs every layer by columns, as before chunks (for A/B runs). */
export function renderPointwise(mr: number, nv: number, chunk = Number(process.env.KILN_PW_CHUNK ?? 65536)): string {
  const id = `${mr}x${nv}`;
  return String.raw`
/* C[MR][NR] (+)= A panel [K][MR] x B rows ldb apart (unaligned); 'acc' adds to C */
${microkernel({ name: `ukp_${id}`, mr, nv, ldb: 'size_t', bAligned: false, acc: true, inline: true, fuse: true })}
typedef struct { const pw_t *g; int tm, tn, mc, nc; } pw_job_${id};

/* One task: output channels [i0, i1) x positions [j0, j1) of one image, in chunks of positions whose K x JC slice of
   the input stays in L2. Per chunk each row panel runs along the chunk's positions: per tile the whole K against the
   input's rows, stored straight into C, the epilogue run a few tiles behind (still in L1). So the output is written as
   MR rows at a time, each in runs of the chunk's width: a layer whose output comes cold from memory (the first
   layers' megabytes, last touched a run ago) writes MR streams instead of all M rows a vector apart, which the
   memory system serves at half the time or less (RegNetY's 32 -> 64 at 112 x 112 with its output out of L3:
   ~1000 us by columns of all 64 rows). The positions past the last whole NR are copied, zero padded, into a [K][NR]
   panel (reading them in place would run past the input's end). */
static void pw_task_${id}(void *p, int t) {
  enum { MR = ${mr}, NR = ${nv} * VW, EL = 8 };
  const pw_job_${id} *job = p;
  const pw_t *g = job->g;
  int per = job->tm * job->tn, img = t / per;
  t %= per;
  int N = g->N, K = g->K;
  int i0 = (t % job->tm) * job->mc, j0 = (t / job->tm) * job->nc;
  int i1 = KMIN(g->M, i0 + job->mc), j1 = KMIN(N, j0 + job->nc);
  if (i0 >= i1 || j0 >= j1) return;
  const float *src = g->src + (size_t)img * g->sbs;
  float *cimg = g->c + (size_t)img * g->cbs;
  const void *ctx = (const char *)g->ctx + (size_t)img * g->ctxbs;
  float tile[MR * NR] __attribute__((aligned(64))), bpad[MR];
  const kfuse_t *fu = g->fuse;
  /* an output smaller than L2 goes by columns (one NR block of positions through every row panel, JC = NR): its
     rows are few streams or already cached, and the block's slice of input stays in L1 */
  int JC = (size_t)g->M * N >= (1u << 18) ? KMAX(NR, ${chunk} / K / NR * NR) : NR, jt = N - N % NR;
  for (int jc = j0; jc < j1; jc += JC) {
    int je = KMIN(j1, jc + JC);
    const float *pan = NULL;
    if (N % NR && je > jt) {
      float *q = kiln_scratch(0, (size_t)K * NR);
      for (int k = 0; k < K; k++) {
        memcpy(q + (size_t)k * NR, src + (size_t)k * N + jt, (N - jt) * sizeof(float));
        memset(q + (size_t)k * NR + (N - jt), 0, (NR - (N - jt)) * sizeof(float));
      }
      pan = q;
    }
    for (int i = i0; i < i1; i += MR) {
      int mi = KMIN(MR, i1 - i), ej = jc;
      const float *ap = g->ap + (size_t)(i / MR) * K * MR, *bias = kfuse_rows(fu, i, mi, MR, bpad);
      for (int j = jc; j < je; j += NR) {
        int nj = KMIN(NR, je - j);
        const float *b = j == jt ? pan : src + j;
        size_t ldb = j == jt ? NR : (size_t)N;
        float *c = cimg + (size_t)i * N + j;
        if (mi == MR && nj == NR) {
          if (g->accumulate) ukp_${id}(K, ap, b, ldb, c, N, 1, bias, fu);
          else ukp_${id}(K, ap, b, ldb, c, N, 0, bias, fu);
        } else {
          if (g->accumulate) for (int r = 0; r < mi; r++) memcpy(tile + r * NR, c + (size_t)r * N, nj * sizeof(float));
          ukp_${id}(K, ap, b, ldb, tile, NR, g->accumulate, bias, fu);
          for (int r = 0; r < mi; r++) memcpy(c + (size_t)r * N, tile + r * NR, nj * sizeof(float));
        }
        /* the epilogue trails the stores by EL tiles: read back at once, a tile of a cold output waits on its lines'
           read-for-ownership (tile by tile at once measured 1.15x the time of columns on 144 -> 144 at 28 x 28) */
        if (g->epi && JC > NR && j - ej >= EL * NR) { g->epi(ctx, cimg + (size_t)i * N + ej, N, i, mi, ej, NR); ej += NR; }
      }
      if (g->epi && JC > NR) g->epi(ctx, cimg + (size_t)i * N + ej, N, i, mi, ej, je - ej);
    }
    if (g->epi && JC == NR) g->epi(ctx, cimg + (size_t)i0 * N + jc, N, i0, i1 - i0, jc, je - jc);
  }
}

/* One tile for code outside this unit (the depthwise + pointwise pair, depthwise.ts) */
void kiln_pw_tile_${id}(int K, const float *a, const float *b, size_t ldb, float *c, int ldc) { ukp_${id}(K, a, b, ldb, c, ldc, 0, NULL, NULL); }

void kiln_pw_${id}(const pw_t *g) {
  enum { MR = ${mr}, NR = ${nv} * VW };
  int batch = g->batch;
  if (batch <= 0 || g->M <= 0 || g->N <= 0) return;
  int np = (g->N + NR - 1) / NR, nm = (g->M + MR - 1) / MR, cm, cn;
  kiln_split2(nm, np, batch, 1, &cm, &cn);
  int mc = cm * MR, nc = cn * NR;
  pw_job_${id} job = { g, (g->M + mc - 1) / mc, (g->N + nc - 1) / nc, mc, nc };
  kiln_pool_run(pw_task_${id}, &job, job.tm * job.tn * batch);
}
`;
}
