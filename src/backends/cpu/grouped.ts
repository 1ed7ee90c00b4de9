// Grouped convolutions (1 < group < channels: RegNet's 16-channel groups, ResNeXt) with output positions in the
// vector lanes. The transposed kernel (tconv_t) puts a group's 16 output channels in the lanes and reads one broadcast
// per multiply-add; here a register block of MR output channels x NV vectors of positions takes MR broadcast weights
// and NV vector loads per tap (8 x 3: 11 loads per 24 multiply-adds).
//
// One pool run over every image x group x block of output rows. A task copies the rows its block reads from its
// group's channels into zero-padded planes in the thread's scratch (in cache), split by row and column phase where the
// stride is 2, so that tap (a, b) of every output position of the block is one contiguous run: the block's positions
// are "wide" columns w = r * RP + ow of the plane rows (RP = OW + (kw - 1) / stride; the few with ow >= OW computed and
// dropped), and a vector of them may span rows (7 x 7 outputs fill 7/9 of the lanes, not 7/16). No padded copy of the
// whole input (gtconv), no checks at the edges (getconv). Per panel of MR output channels the block is computed, each
// vector stored as its rows' segments under lane masks, then the layer's epilogue runs on the block while in cache.
// RegNetY-800MF's 14 grouped 3 x 3 layers, hot at 1 thread (bench/cpu/conv-c.ts): 1.3-1.8x gtconv's speed, 1.0x at
// 7 x 7.
import { VW, exported, nbOr, type Ctx, type Variant } from './codegen.js';
import type { ConvGeom } from './conv.js';
import type { Isa } from './compiler.js';

/** Register blocks [MR output channels, NV vectors of output positions] (AVX-512 only: 16 or 24 of its 32 registers).
 * 16 x 1, 12 x 2 and 4 x 6 were slower on all of RegNetY's shapes (bench/cpu/conv-c.ts, 16 x 1 by 10-20 %). */
const GROUPED_TILES: [number, number][] = [[8, 2], [8, 3]];
/** Tasks per image the row blocks aim at, over all groups (2 threads: about 8 each). */
const TASKS = 16;
/** Floats of one task's padded input rows at most (the thread's scratch: in L2). */
const MAX_ROWS_FLOATS = 1 << 15;

/** Whether a grouped convolution has the shape these variants compute. */
export function groupedFits(g: ConvGeom, isa: Isa): boolean {
  return isa === 'avx512' && g.group > 1 && g.group < g.C && g.d.every((v) => v === 1) && g.s.every((v) => v === 1 || v === 2)
    && g.kh <= 7 && g.kw <= 7;
}

/** Appends the grouped variants of a convolution that fits and returns their source (`epi`: the layer's epilogue
 * function or NULL, as fusedConv renders it). KILN_GROUPED=0 at build leaves grouped layers to gconv / gtconv (for A/B
 * runs). */
export function groupedVariants(c: Ctx, g: ConvGeom, batch: number, epi: string, variants: Variant[]): string {
  if (process.env.KILN_GROUPED === '0' || !groupedFits(g, c.isa)) return '';
  let src = `#ifndef KILN_GROUPED
#define KILN_GROUPED
#include <immintrin.h>
/* the lanes of a vector at column w of a row of n floats that lie inside it */
static inline __mmask16 kiln_lanes(int w, int n) {
  int lo = KMAX(0, -w), hi = KMIN(16, n - w);
  return hi > lo ? (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1)) : 0;
}
typedef struct {
  const float *x; float *y; const float *w;
  void (*epi)(const void *ctx, float *c, int ldc, int i0, int mi, int j0, int nj);
  const void *ctx; size_t ctxbs;
} grouped_t;
#endif
`;
  for (const [mr, nv] of GROUPED_TILES) {
    const fn = `L${c.id}_gr${mr}x${nv}`, pack = `P${c.id}_gr${mr}x${nv}`;
    src += variantSource(c, g, batch, mr, nv, epi, fn, pack);
    variants.push({ tactic: `native-${c.isa}-grouped-${mr}x${nv * VW[c.isa]}`, fn, pack: { fn: pack, inputs: [1] } });
  }
  return src;
}

function variantSource(c: Ctx, g: ConvGeom, batch: number, mr: number, nv: number, epi: string, fn: string, pack: string): string {
  const { H, W, OH, OW, kh, kw, s, p, group: G } = g;
  const C = g.C / G, Co = g.Co / G, vw = VW[c.isa], N = OH * OW, K = C * kh * kw, COP = Math.ceil(Co / mr);
  const [s0, S] = s;
  // the copy: per channel, s0 x S planes (row phase a % s0, column phase b % S) of RR rows RP floats apart, so tap
  // (a, b) of output position (r, ow) of the block is plane (a % s0, b % S) at row r + a / s0, column ow + b / S
  const RP = OW + Math.floor((kw - 1) / S);
  const sizes = (rb: number) => { const RR = rb + Math.floor((kh - 1) / s0), PS = RR * RP; return { RR, PS, CS: s0 * S * PS }; };
  let RB = Math.max(1, Math.ceil(OH / Math.ceil(TASKS / G)));
  while (RB > 1 && C * sizes(RB).CS > MAX_ROWS_FLOATS) RB--;
  const NBLK = Math.ceil(OH / RB), { RR, PS, CS } = sizes(RB);
  const rng = (n: number) => Array.from({ length: n }, (_, i) => i);
  const taps = rng(kh).flatMap((a) => rng(kw).map((b) => ({ k: a * kw + b, off: ((a % s0) * S + (b % S)) * PS + Math.floor(a / s0) * RP + Math.floor(b / S) })));
  // the block's output positions as "wide" columns w = r * RP + ow (ow >= OW: padding, computed and dropped), VW at a
  // time, NV vectors per register block: the whole window accumulated per panel, then each vector stored as its
  // rows' segments under lane masks
  const block = (nx: number) => {
    const accs = rng(mr).map((m) => rng(nx).map((v) => `a${m}_${v}`));
    const body = taps.map(({ k, off }) => `{
            ${rng(nx).map((v) => `vf x${v} = *(const vfu *)(xb + o + ${off + v * vw});`).join(' ')}
            ${rng(mr).map((m) => rng(nx).map((v) => `${accs[m][v]} += x${v} * wa[${k * mr + m}];`).join(' ')).join('\n            ')}
          }`).join('\n          ');
    const store = rng(nx).map((v) => `for (int q = 0; q < ${Math.ceil(vw / RP) + 1}; q++) {
          int w0 = (v0 + ${v}) * VW, r = w0 / ${RP} + q, lo = r * ${RP} - w0;
          if (r >= nrow || lo >= VW) break;
          __mmask16 m = kiln_lanes(-lo, ${OW});
          float *o = y + (size_t)(oh0 + r) * ${OW} - lo + (size_t)co0 * ${N};
          ${rng(mr).map((m) => `${Co % mr ? `if (co0 + ${m} < ${Co}) ` : ''}_mm512_mask_storeu_ps(o + ${m * N}, m, (__m512)${accs[m][v]});`).join('\n          ')}
        }`).join('\n        ');
    return `{
        const float *xb = xs + (size_t)v0 * VW;
        vf ${accs.flat().map((a) => `${a} = {0}`).join(', ')};
        for (int ci = 0; ci < ${C}; ci++) {
          size_t o = (size_t)ci * ${CS};
          const float *wa = wp + ci * ${kh * kw * mr};
          ${body}
        }
        ${store}
      }`;
  };
  // one plane row: stride 1 copied as is, stride 2 split into even / odd columns by permutes of two loads whose lanes
  // off the row are masked to zero
  const split = S === 2 ? `for (int i = 0; i < ${RP}; i += VW) {
          int w = 2 * i - ${p[1]};
          vf v0 = (vf)_mm512_maskz_loadu_ps(kiln_lanes(w, ${W}), xr + w), v1 = (vf)_mm512_maskz_loadu_ps(kiln_lanes(w + VW, ${W}), xr + w + VW);
          __mmask16 m = kiln_lanes(i, ${RP});
          _mm512_mask_storeu_ps(d + i, m, (__m512)__builtin_shuffle(v0, v1, KEVEN)); _mm512_mask_storeu_ps(d + ${PS} + i, m, (__m512)__builtin_shuffle(v0, v1, KODD));
        }`
    : `memset(d, 0, ${p[1]} * sizeof(float));
        memcpy(d + ${p[1]}, xr, ${W} * sizeof(float));
        memset(d + ${p[1] + W}, 0, ${RP - p[1] - W} * sizeof(float));`;
  const per = COP * mr * K;
  return `KEXPORT void *${pack}(void *w, void *unused) {
  float *o = kiln_alloc((size_t)${G * per});
  for (int gi = 0; gi < ${G}; gi++) kiln_pack_a((const float *)w + (size_t)gi * ${Co * K}, ${K}, 1, ${Co}, ${K}, ${mr}, o + (size_t)gi * ${per});
  return o;
}
static void ${fn}_task(void *arg, int t) {
  const grouped_t *g = arg;
  int ig = t / ${NBLK}, img = ig / ${G}, gi = ig % ${G}, oh0 = (t % ${NBLK}) * ${RB}, nrow = KMIN(${OH}, oh0 + ${RB}) - oh0;
  const float *x = g->x + (size_t)img * ${g.C * H * W} + (size_t)gi * ${C * H * W};
  float *y = g->y + (size_t)img * ${g.Co * N} + (size_t)gi * ${Co * N};
  /* [C][s0][S][RR][RP] and a vector's slack (the last vector's padding lanes read past the last plane) */
  float *xs = kiln_scratch(0, ${C * CS + 2 * vw});
  for (int ci = 0; ci < ${C}; ci++) for (int ph = 0; ph < ${s0}; ph++) for (int r = 0; r < ${RR}; r++) {
    float *d = xs + (size_t)ci * ${CS} + ph * ${S * PS} + r * ${RP};
    int h = (oh0 + r) * ${s0} + ph - ${p[0]};
    if (h < 0 || h >= ${H}) { for (int f = 0; f < ${S}; f++) memset(d + f * ${PS}, 0, ${RP} * sizeof(float)); continue; }
    const float *xr = x + ((size_t)ci * ${H} + h) * ${W};
    {
        ${split}
    }
  }
  int nvec = ((nrow - 1) * ${RP} + ${OW} + VW - 1) / VW;
  for (int cp = 0, co0 = 0; cp < ${COP}; cp++, co0 += ${mr}) {
    const float *wp = g->w + (size_t)gi * ${per} + (size_t)cp * ${K * mr};
    int v0 = 0;
    for (; v0 + ${nv} <= nvec; v0 += ${nv}) ${block(nv)}
${rng(nv - 1).map((i) => `    if (nvec - v0 == ${i + 1}) ${block(i + 1)}\n`).join('')}    if (g->epi) g->epi((const char *)g->ctx + (size_t)ig * g->ctxbs, y + (size_t)co0 * ${N} + oh0 * ${OW}, ${N}, co0, KMIN(${mr}, ${Co} - co0), oh0 * ${OW}, nrow * ${OW});
  }
}
${exported(fn, `  int B = ${nbOr(c, batch)};
  if (B <= 0) return;
  const float *(*p)[3] = malloc(sizeof(*p) * B * ${G});
  for (int b = 0; b < B * ${G}; b++) {
    p[b][0] = NULL; p[b][1] = a2 ? (const float *)a2 + (b % ${G}) * ${Co} : NULL;
    p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co * N} : NULL;
  }
  grouped_t g = { a0, a4, a1, ${epi}, p, sizeof(*p) };
  kiln_pool_run(${fn}_task, &g, B * ${G * NBLK});
  free(p);`)}`;
}
