// Winograd convolution variants for the CPU backend: 3x3, stride 1, dilation 1, group 1 layers (ResNet's bottleneck
// middles) computed as F(m x m, 3 x 3), m = 2 or 4. Each output tile of m x m needs (m + 2)^2 multiplies per input
// channel instead of 9 m^2 (2.25x fewer for F(2,3), 4x for F(4,3)): these layers already run near the GEMM tiles'
// best rate as direct or implicit GEMMs, so doing less arithmetic is what is left (ResNet-50: 2.1 -> 0.8-0.9 ms each). The builder times these variants
// against the GEMM-based ones and keeps the fastest per layer.
//
// Layout: the weights are transformed once (U = G g G^T) at load into (m + 2)^2 matrices [Co][C], packed as GEMM A
// panels, grouped by PANELS output-channel panels (a group's panels of every matrix together). Per call, the input is
// cut into blocks of whole tile rows; phase 1 transforms each block (V = B^T d B: vertical pass along each tile row's
// input rows, zero-padded into a strip, horizontal pass over vectors of tiles, the columns split by phase with even/odd
// permutes) into (m + 2)^2 row-major [C][tiles] matrices; phase 2, per (image, block, output-channel chunk) task, runs
// the (m + 2)^2 small GEMMs into a buffer that stays in L2, then the output transform (Y = A^T M A, vectorized over the
// block's tiles) writes whole output rows, and the layer's epilogue (bias, residual, activation) runs on them while
// they are still in cache.
import { VW, exported, nbOr, type Ctx, type Variant } from './codegen.js';
import type { ConvGeom } from './conv.js';
import type { Isa } from './compiler.js';
import { microkernel } from './kernels/tiles.c.js';

export interface WinogradTransform {
  /** Input transform B^T, (m + 2) x (m + 2). */
  BT: number[][];
  /** Weight transform G, (m + 2) x 3. */
  G: number[][];
  /** Output transform A^T, m x (m + 2). */
  AT: number[][];
}

/** The transforms for interpolation points 0, +-1 (F(2,3)) and 0, +-1, +-2 (F(4,3)), each with the point at
 * infinity. Exported (and mutable) so a test can break one and see the layer fail. */
export const WINOGRAD: Record<2 | 4, WinogradTransform> = {
  2: {
    BT: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    G: [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
    AT: [[1, 1, 1, 0], [0, 1, -1, -1]],
  },
  4: {
    BT: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    G: [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    AT: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
  },
};

/** Below these channel counts the small GEMMs (K = C) are too short to pay for the transforms. */
const MIN_C = 16;
const MIN_CO = 16;
/** F(4,3) needs at least this many tiles per image (see winogradVariants). */
const MIN_F4_TILES = 8;
/** Rows of the microkernel per ISA and vectors of columns. */
const MR: Record<Isa, Record<1 | 2, number>> = { avx512: { 1: 8, 2: 8 }, avx2: { 1: 8, 2: 6 }, portable: { 1: 8, 2: 6 } };
/** Bytes of GEMM results (all (m + 2)^2 of them) one task keeps for its output transform: well inside L2. */
const M_BYTES = 1 << 19;
/** Output-channel panels whose transformed weights lie together, matrix after matrix: a task reads its weights as a
 * few long runs from memory, each matrix's panels of the group next to the ones it just read. Matrix-major (each matrix
 * all panels), a task's share of a matrix was a short run, the next far beyond: in a model the weights come from
 * memory, and SqueezeNet's 13 x 13 layers' tasks took 3x as long as with the weights in cache. Paired with the same
 * tactics: SqueezeNet 0.967 / 0.967 at 1 / 2 threads, ResNet-18 0.996 / 0.969, ResNet-50 0.987 / 0.975; groups of 8
 * were slower at both counts, of 2 quicker at 2 threads and slower at 1 (the input matrices are read once per group). */
const PANELS = 4;

/** \`n\` floats rounded up to an odd number of 64-byte lines: the stride between the (m + 2)^2 matrices that the
 * transforms write and read side by side, 36 streams at once for F(4,3). At a multiple of 4 KiB apart (ResNet-18's
 * 56 x 56 layer: [64][112] floats, 7 x 4 KiB) all of them fall into one L1 set and evict each other: its input
 * transform took 0.23 ms of the layer's 0.71 at one thread; an odd number of lines apart, 0.09. */
const oddLines = (n: number) => { const l = Math.ceil(n / 16); return (l % 2 ? l : l + 1) * 16; };

/** A linear combination as a C float expression (zero coefficients skipped). */
function lin(row: number[], names: string[]): string {
  const terms: string[] = [];
  row.forEach((v, k) => {
    if (v === 0) return;
    const a = Math.abs(v), sign = v < 0 ? '-' : '+';
    terms.push(`${sign} ${a === 1 ? names[k] : `${Number.isInteger(a) ? `${a}.0f` : `${a}f`} * ${names[k]}`}`);
  });
  if (!terms.length) return '0.0f';
  const s = terms.join(' ');
  return s.startsWith('+ ') ? s.slice(2) : `-${s.slice(2)}`;
}

/** Tile rows per block and the padded GEMM width: whole tile rows (so the output transform writes whole output
 * rows), as few padding columns over the image as possible, blocks of at least 32 tiles where the image has them. */
function blocking(TH: number, TW: number, nr: number): { RB: number; NBp: number; padded: number } {
  let best = { RB: 1, NBp: Math.ceil(TW / nr) * nr, padded: Infinity, score: Infinity };
  for (let RB = 1; RB <= TH; RB++) {
    const nbt = RB * TW;
    if (nbt > 128 && RB > 1) break;
    const full = Math.floor(TH / RB), rest = TH % RB;
    const padded = full * Math.ceil(nbt / nr) * nr + (rest ? Math.ceil((rest * TW) / nr) * nr : 0);
    const score = padded / (TH * TW) + (nbt < 32 && RB < TH ? 0.15 : 0);
    if (score < best.score - 1e-9) best = { RB, NBp: Math.ceil(nbt / nr) * nr, padded, score };
  }
  return best;
}

/** The guarded, shared part: the job record and the microkernel for one tile shape (once per translation unit). */
function shared(mr: number, nv: number): string {
  const id = `${mr}x${nv}`;
  return `#ifndef KILN_WINO
#define KILN_WINO
typedef struct {
  const float *x; size_t xbs;      /* padded images */
  float *v;                        /* transformed input: per image and block, [(m+2)^2][C][NBp] */
  const float *u;                  /* transformed weights: [(m+2)^2][Co/MR][C][MR] */
  float *c;                        /* output [B][Co][OH * OW] */
  void (*epi)(const void *ctx, float *c, int ldc, int i0, int mi, int j0, int nj);
  const void *ctx; size_t ctxbs;
  int accumulate, coch, nco;       /* coch panels of MR output channels per task, nco chunks */
} wino_t;
#endif
#ifndef KILN_WUKR_${id}
#define KILN_WUKR_${id}
/* C[MR][NR] = A panel [K][MR] x B rows [K] (ldb apart, NR wide, aligned) */
${microkernel({ name: `wukr_${id}`, mr, nv, ldb: 'int', bAligned: true, acc: false, cAligned: true })}#endif
`;
}

/** One F(m,3) variant's C source: weight packing, the two task functions and the layer function. */
function variantSource(c: Ctx, g: ConvGeom, batch: number, m: 2 | 4, nv: 1 | 2, epi: string, acc: string | undefined, fn: string, pack: string): string {
  const { C, H, W, Co, OH, OW, p } = g;
  const { BT, G, AT } = WINOGRAD[m];
  const A = m + 2, A2 = A * A, N = OH * OW, mr = MR[c.isa][nv], nr = nv * VW[c.isa];
  const TH = Math.ceil(OH / m), TW = Math.ceil(OW / m);
  const { RB, NBp } = blocking(TH, TW, nr);
  const [pt, pl] = p;
  // the vertical pass covers a tile row's TW * m columns in whole vectors; its results for the block's tile rows lie
  // end to end (tile j's columns at j * m), once from each tile's first column and once from its (m+1)-th
  const vw = VW[c.isa], RW = Math.ceil((TW * m) / vw) * vw;
  const TVW = Math.ceil((RB * TW) / vw) * vw * m + RW;
  // a tile row's A padded input rows, copied per channel into a strip the vertical pass reads (reads run m + RW
  // columns into a row, past its padded width TW * m + 2)
  const SW = RW + m;
  const XS = oddLines(C * NBp), NBLK = Math.ceil(TH / RB), VB = A2 * XS, COP = Math.ceil(Co / mr);
  const NCH = Math.min(C, Math.max(1, Math.ceil(16 / NBLK)));
  const CH = Math.ceil(C / NCH);
  const COCH = Math.max(1, Math.floor(M_BYTES / (4 * A2 * mr * NBp)));
  const f = fn;
  const rng = (n: number) => Array.from({ length: n }, (_, i) => i);
  const d = rng(A).map((r) => `d${r}`), e = rng(A).map((s) => `e${s}`);
  // phase 1: vertical transform along the padded rows (vectors of columns), then per vector of the block's tiles the
  // columns split by phase (even/odd permutes, twice for m = 4) and the horizontal transform
  const vert = (tv: string) => rng(A).map((i) => `*(vfu *)(${tv}[${i}] + o + xx) = ${lin(BT[i], d)};`).join(' ');
  const sh = (a: string, b: string, odd: boolean) => `__builtin_shuffle(${a}, ${b}, ${odd ? 'KODD' : 'KEVEN'})`;
  const phases = (i: number) => m === 2
    ? `const float *t0 = ta[${i}] + j * 2, *t1 = tb[${i}] + j * 2;
        vf a0 = *(const vf *)t0, a1 = *(const vf *)(t0 + VW), b0 = *(const vf *)t1, b1 = *(const vf *)(t1 + VW);
        vf e0 = ${sh('a0', 'a1', false)}, e1 = ${sh('a0', 'a1', true)}, e2 = ${sh('b0', 'b1', false)}, e3 = ${sh('b0', 'b1', true)};`
    : `const float *t0 = ta[${i}] + j * 4, *t1 = tb[${i}] + j * 4;
        vf a0 = *(const vf *)t0, a1 = *(const vf *)(t0 + VW), a2 = *(const vf *)(t0 + 2 * VW), a3 = *(const vf *)(t0 + 3 * VW);
        vf b0 = *(const vf *)t1, b1 = *(const vf *)(t1 + VW), b2 = *(const vf *)(t1 + 2 * VW), b3 = *(const vf *)(t1 + 3 * VW);
        vf p0 = ${sh('a0', 'a1', false)}, p1 = ${sh('a0', 'a1', true)}, p2 = ${sh('a2', 'a3', false)}, p3 = ${sh('a2', 'a3', true)};
        vf q0 = ${sh('b0', 'b1', false)}, q1 = ${sh('b0', 'b1', true)}, q2 = ${sh('b2', 'b3', false)}, q3 = ${sh('b2', 'b3', true)};
        vf e0 = ${sh('p0', 'p2', false)}, e2 = ${sh('p0', 'p2', true)}, e1 = ${sh('p1', 'p3', false)}, e3 = ${sh('p1', 'p3', true)};
        vf e4 = ${sh('q0', 'q2', false)}, e5 = ${sh('q1', 'q3', false)};`;
  const horiz = rng(A).map((i) => `{
        ${phases(i)}
        ${rng(A).map((k) => `*(vf *)(vo + ${(i * A + k) * XS}) = ${lin(BT[k], e)};`).join('\n        ')}
      }`).join('\n      ');
  // phase 2's output transform: Z = M A (per row i of the tile), then Y = A^T Z
  const mv = (i: number, k: number) => `q${i}_${k}`;
  const loads = rng(A).map((i) => rng(A).map((k) => `float ${mv(i, k)} = ms[${i * A + k} * st + j];`).join(' ')).join('\n      ');
  const zs = rng(A).map((i) => rng(m).map((s) => `float z${i}_${s} = ${lin(AT[s], rng(A).map((k) => mv(i, k)))};`).join(' ')).join('\n      ');
  const ys = rng(m).map((r) => rng(m).map((s) => `yb[${r * m + s}][j] = ${lin(AT[r], rng(A).map((i) => `z${i}_${s}`))};`).join(' ')).join('\n      ');
  const rowSplit = rng(m).map((s) => `rowb[tx * ${m} + ${s}] = yr[${s * NBp}];`).join(' ');
  const gdef = G.map((r) => `{ ${r.map((v) => String(v)).join(', ')} }`).join(', ');
  return `static const double G${f}[${A}][3] = { ${gdef} };
/* where panel cp of matrix xi starts in the transformed weights (see PANELS) */
static inline size_t uat${f}(int xi, int cp) {
  int gb = cp / ${PANELS} * ${PANELS}, gl = KMIN(${PANELS}, ${COP} - gb);
  return ((size_t)gb * ${A2} + (size_t)xi * gl + (cp - gb)) * ${C * mr};
}
KEXPORT void *${pack}(void *w, void *unused) {
  const float *k = w;
  float *u = kiln_alloc((size_t)${A2} * ${COP * mr} * ${C});
  for (int co = 0; co < ${Co}; co++) for (int ci = 0; ci < ${C}; ci++) {
    const float *g = k + ((size_t)co * ${C} + ci) * 9;
    double t[${A}][3];
    for (int i = 0; i < ${A}; i++) for (int b = 0; b < 3; b++) t[i][b] = G${f}[i][0] * g[b] + G${f}[i][1] * g[3 + b] + G${f}[i][2] * g[6 + b];
    for (int i = 0; i < ${A}; i++) for (int j = 0; j < ${A}; j++)
      u[uat${f}(i * ${A} + j, co / ${mr}) + (size_t)ci * ${mr} + co % ${mr}] = (float)(t[i][0] * G${f}[j][0] + t[i][1] * G${f}[j][1] + t[i][2] * G${f}[j][2]);
  }
  return u;
}
static void ${f}_in(void *arg, int t) {
  const wino_t *g = arg;
  int img = t / ${NBLK * NCH}, r = t % ${NBLK * NCH}, blk = r / ${NCH}, c0 = (r % ${NCH}) * ${CH}, c1 = KMIN(${C}, c0 + ${CH});
  int ty0 = blk * ${RB}, ty1 = KMIN(${TH}, ty0 + ${RB}), nbt = (ty1 - ty0) * ${TW};
  const float *x = g->x + (size_t)img * g->xbs;
  float *v = g->v + ((size_t)img * ${NBLK} + blk) * ${VB};
  float ta[${A}][${TVW}] __attribute__((aligned(64))), tb[${A}][${TVW}] __attribute__((aligned(64)));
  /* the zero padding is made here, a strip at a time, not in a padded copy of the whole input (a pass over it and a
     pool job more, whose rows the other thread then read from this one's cache) */
  float rw[${A * SW} + VW] __attribute__((aligned(64)));
  for (int ci = c0; ci < c1; ci++) {
    const float *xc = x + (size_t)ci * ${H * W};
    /* in tile-row order: each row's vector overrun is overwritten by the next row */
    for (int ty = ty0; ty < ty1; ty++) {
      for (int k = 0; k < ${A}; k++) {
        float *row = rw + k * ${SW};
        int ir = ty * ${m} + k - ${pt};
        if (ir < 0 || ir >= ${H}) { memset(row, 0, ${SW} * sizeof(float)); continue; }
        ${pl ? `memset(row, 0, ${pl} * sizeof(float));` : ''}
        memcpy(row + ${pl}, xc + (size_t)ir * ${W}, ${W} * sizeof(float));
        memset(row + ${pl + W}, 0, ${SW - pl - W} * sizeof(float));
      }
      int o = (ty - ty0) * ${TW * m};
      for (int xx = 0; xx < ${RW}; xx += VW) {
        ${d.map((n, k) => `vf ${n} = *(const vfu *)(rw + ${k * SW} + xx);`).join(' ')}
        ${vert('ta')}
      }
      for (int xx = 0; xx < ${RW}; xx += VW) {
        ${d.map((n, k) => `vf ${n} = *(const vfu *)(rw + ${k * SW + m} + xx);`).join(' ')}
        ${vert('tb')}
      }
    }
    for (int j = 0; j < nbt; j += VW) {
      float *vo = v + (size_t)ci * ${NBp} + j;
      ${horiz}
    }
    if (nbt < ${NBp}) for (int xi = 0; xi < ${A2}; xi++) memset(v + (size_t)xi * ${XS} + (size_t)ci * ${NBp} + nbt, 0, (${NBp} - nbt) * sizeof(float));
  }
}
static void ${f}_mm(void *arg, int t) {
  const wino_t *g = arg;
  int nco = g->nco, img = t / (${NBLK} * nco), r = t % (${NBLK} * nco), blk = r / nco;
  int cp0 = (r % nco) * g->coch, cp1 = KMIN(${COP}, cp0 + g->coch);
  if (cp0 >= cp1) return;
  int ty0 = blk * ${RB}, ty1 = KMIN(${TH}, ty0 + ${RB}), nbt = (ty1 - ty0) * ${TW};
  const float *v = g->v + ((size_t)img * ${NBLK} + blk) * ${VB};
  int rows = (cp1 - cp0) * ${mr};
  size_t st = (size_t)rows * ${NBp};
  if (!((st / 16) & 1)) st += 16; /* an odd number of lines apart (see oddLines) */
  float *mb = kiln_scratch(0, ${A2} * st);
  for (int gb = cp0 / ${PANELS} * ${PANELS}; gb < cp1; gb += ${PANELS}) {
    int c0 = KMAX(cp0, gb), c1 = KMIN(cp1, gb + ${PANELS});
    for (int xi = 0; xi < ${A2}; xi++) for (int cp = c0; cp < c1; cp++) {
      const float *a = g->u + uat${f}(xi, cp);
      float *mo = mb + xi * st + (size_t)(cp - cp0) * ${mr * NBp};
      for (int j = 0; j < nbt; j += ${nr}) wukr_${mr}x${nv}(${C}, a, v + (size_t)xi * ${XS} + j, ${NBp}, mo + j, ${NBp});
    }
  }
  float *cimg = g->c + (size_t)img * ${Co * N};
  int co0 = cp0 * ${mr}, co1 = KMIN(${Co}, cp1 * ${mr}), oh0 = ty0 * ${m}, oh1 = KMIN(${OH}, ty1 * ${m});
  float yb[${m * m}][${NBp}] __attribute__((aligned(64)));
  float rowb[${TW * m}] __attribute__((aligned(64)));
  for (int co = co0; co < co1; co++) {
    const float *ms = mb + (size_t)(co - co0) * ${NBp};
    #pragma GCC ivdep
    for (int j = 0; j < nbt; j++) {
      ${loads}
      ${zs}
      ${ys}
    }
    for (int ty = ty0; ty < ty1; ty++) for (int r = 0; r < ${m}; r++) {
      int oh = ty * ${m} + r;
      if (oh >= ${OH}) break;
      const float *yrow = &yb[r * ${m}][(ty - ty0) * ${TW}];
      #pragma GCC ivdep
      for (int tx = 0; tx < ${TW}; tx++) { const float *yr = yrow + tx; ${rowSplit} }
      float *o = cimg + (size_t)co * ${N} + oh * ${OW};
      if (g->accumulate) {
        #pragma GCC ivdep
        for (int ow = 0; ow < ${OW}; ow++) o[ow] += rowb[ow];
      } else memcpy(o, rowb, ${OW} * sizeof(float));
    }
  }
  if (g->epi) g->epi((const char *)g->ctx + (size_t)img * g->ctxbs, cimg + (size_t)co0 * ${N} + oh0 * ${OW}, ${N}, co0, co1 - co0, oh0 * ${OW}, (oh1 - oh0) * ${OW});
}
${exported(fn, `  int B = ${nbOr(c, batch)};
  if (B <= 0) return;
  const float *(*p)[3] = malloc(sizeof(*p) * B);
  for (int b = 0; b < B; b++) { p[b][0] = NULL; p[b][1] = a2; p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co * N} : NULL; }
  wino_t g = { a0, ${C * H * W}, kiln_scratch(3, (size_t)B * ${NBLK * VB}), a1, a4, ${epi}, p, sizeof(*p), 0, 0, 0 };
${acc ?? ''}  kiln_pool_run(${f}_in, &g, B * ${NBLK * NCH});
  /* output-channel chunks: as many as the threads need (4 tasks each), as few as the results buffer allows */
  int nth = kiln_threads(), want = nth > 1 ? (4 * nth + B * ${NBLK} - 1) / (B * ${NBLK}) : 1;
  g.coch = KMIN(${COCH}, (${COP} + want - 1) / want);
  g.nco = (${COP} + g.coch - 1) / g.coch;
  kiln_pool_run(${f}_mm, &g, B * ${NBLK} * g.nco);
  free(p);`)}`;
}

/** Whether a convolution has the shape these variants compute. */
export function winogradFits(g: ConvGeom): boolean {
  return g.kh === 3 && g.kw === 3 && g.group === 1 && g.s.every((v) => v === 1) && g.d.every((v) => v === 1) && g.C >= MIN_C && g.Co >= MIN_CO;
}

/** Appends the F(2,3) and F(4,3) variants of a convolution that fits (each with the microkernel width that pads its
 * blocks least: on ResNet-50's layers that choice was also the faster one, measured) and returns their source. \`epi\` is the layer's epilogue function (or NULL) and \`acc\` the statement
 * switching \`g\` to the accumulate mode, both as fusedConv renders them. */
export function winogradVariants(c: Ctx, g: ConvGeom, batch: number, epi: string, variants: Variant[], acc?: string): string {
  if (!winogradFits(g)) return '';
  let src = '';
  for (const m of [4, 2] as const) {
    const TH = Math.ceil(g.OH / m), TW = Math.ceil(g.OW / m);
    // F(4,3) on a handful of tiles (7x7 images) streams weights 4x their size per image for GEMMs a panel wide
    if (m === 4 && TH * TW < MIN_F4_TILES) continue;
    const nv = ([2, 1] as const).reduce((b, n) => (blocking(TH, TW, n * VW[c.isa]).padded < blocking(TH, TW, b * VW[c.isa]).padded ? n : b));
    const mr = MR[c.isa][nv], fn = `L${c.id}_wf${m}`, pack = `P${c.id}_wf${m}`;
    src += shared(mr, nv) + variantSource(c, g, batch, m, nv, epi, acc, fn, pack);
    variants.push({ tactic: `native-${c.isa}-winograd-f${m}-${mr}x${nv * VW[c.isa]}`, fn, pack: { fn: pack, inputs: [1] }, ...(acc ? { accumulate: true } : {}) });
  }
  return src;
}
