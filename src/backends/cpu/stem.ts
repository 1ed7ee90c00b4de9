// The stem convolution variant for the CPU backend: a network's first layer, few input channels (RGB: 3) and a
// stride of 2 (3 x 3 in MobileNets / SqueezeNet / EfficientNet, 7 x 7 in ResNet). Its K (channels x window: 27 or
// 147) is too short for the GEMM-shaped variants, whose tiles span output channels x positions and reload a panel
// per K step; here the output positions of one row lie in the vector lanes and a register block of MR output
// channels x NV vectors accumulates the whole window, its weights broadcast from a packed panel [Co/MR][K][MR].
//
// Stride: per task (a block of output rows of one image) the input rows it reads are copied once, zero-padded and
// split by column phase (column w of the padded row goes to phase w % s at w / s), so every tap of the window reads
// contiguous vectors: tap b of output columns ow.. is phase b % s at ow + b / s. With 3 channels that copy is about
// the input's size, against Co x K multiply-adds per output position.
//
// Per task, one panel of output channels at a time over the block's rows (with the output out of cache, writing all
// channels of one row at once, 64 short streams, cost SqueezeNet's stem 754-867 us against 700 for tconv at 1 thread);
// the layer's epilogue (bias, residual, activation) runs on each panel's rows right after, while they are in cache.
import { VW, exported, nbOr, type Ctx, type Variant } from './codegen.js';
import type { ConvGeom } from './conv.js';
import type { Isa } from './compiler.js';

/** Register blocks [MR output channels, NV vectors of output columns], 16 or 24 accumulators of AVX-512's 32
 * registers (6 x 4 and 4 x 4 were slower on the 224 x 224 stems, bench/cpu/conv-c.ts).
 * Offered on AVX-512 only: the source is ISA-generic (vector extensions), but the AVX2 / SSE builds (12 accumulators,
 * [6, 2] / [4, 2], would suit their 16 registers) have not been checked or timed on a host of that kind. */
const STEM_TILES: Record<Isa, [number, number][]> = { avx512: [[8, 2], [8, 3]], avx2: [], portable: [] };
/** Input channels up to which a layer counts as a stem. */
const MAX_C = 4;
/** Tasks per image the row blocks aim at (2 threads: about 8 each, even where a block is cheaper than another). */
const BLOCKS = 16;

/** Whether a convolution has the shape this variant computes. */
export function stemFits(g: ConvGeom, isa: Isa): boolean {
  return STEM_TILES[isa].length > 0 && g.group === 1 && g.C <= MAX_C && g.d.every((v) => v === 1) && g.s.every((v) => v === 1 || v === 2)
    && g.kh <= 11 && g.kw <= 11 && g.OW >= VW[isa];
}

/** Appends the stem variants of a convolution that fits and returns their source (`epi`: the layer's epilogue
 * function or NULL, as fusedConv renders it; the source sits inside fusedConv's `N_` definition). */
export function stemVariants(c: Ctx, g: ConvGeom, batch: number, epi: string, variants: Variant[]): string {
  if (!stemFits(g, c.isa)) return '';
  let src = `#ifndef KILN_STEM
#define KILN_STEM
typedef struct {
  const float *x; float *y; const float *w;
  void (*epi)(const void *ctx, float *c, int ldc, int i0, int mi, int j0, int nj);
  const void *ctx; size_t ctxbs;
} stem_t;
#endif
`;
  for (const [mr, nv] of STEM_TILES[c.isa]) {
    const fn = `L${c.id}_st${mr}x${nv}`, pack = `P${c.id}_st${mr}x${nv}`;
    src += variantSource(c, g, batch, mr, nv, epi, fn, pack);
    variants.push({ tactic: `native-${c.isa}-stem-${mr}x${nv * VW[c.isa]}`, fn, pack: { fn: pack, inputs: [1] } });
  }
  return src;
}

function variantSource(c: Ctx, g: ConvGeom, batch: number, mr: number, nv: number, epi: string, fn: string, pack: string): string {
  const { C, H, W, Co, OH, OW, kh, kw, s, p } = g;
  const vw = VW[c.isa], nr = nv * vw, N = OH * OW, K = C * kh * kw, COP = Math.ceil(Co / mr);
  const [s0, S] = s;
  const RB = Math.min(8, Math.max(1, Math.floor(OH / BLOCKS))), NBLK = Math.ceil(OH / RB);
  // input rows per block; each phase row covers the padded output width plus the window's reach, in whole vectors
  const RIN = (RB - 1) * s0 + kh;
  const OWP = Math.ceil(OW / vw) * vw, WPH = Math.ceil((OWP + Math.floor((kw - 1) / S)) / vw) * vw;
  const rng = (n: number) => Array.from({ length: n }, (_, i) => i);
  // one register block of nx vectors at column ow0: the whole window accumulated per panel, then stored (the last
  // block of a row through tmp where the row ends inside a vector)
  const block = (nx: number, full: boolean) => {
    const accs = rng(mr).map((m) => rng(nx).map((v) => `a${m}_${v}`));
    const taps = rng(kw).map((b) => `{
            const float *xb = xa + ${(b % S) * WPH + Math.floor(b / S)};
            ${rng(nx).map((v) => `vf x${v} = *(const vfu *)(xb + ${v * vw});`).join(' ')}
            ${rng(mr).map((m) => rng(nx).map((v) => `${accs[m][v]} += x${v} * wa[${b * mr + m}];`).join(' ')).join('\n            ')}
          }`).join('\n          ');
    const store = rng(mr).map((m) => `if (co0 + ${m} < ${Co}) {
            float *o = yr + (size_t)(co0 + ${m}) * ${N} + ow0;
            ${full ? rng(nx).map((v) => `*(vfu *)(o + ${v * vw}) = ${accs[m][v]};`).join(' ')
    : `${rng(nx).map((v) => `*(vf *)(tmp + ${v * vw}) = ${accs[m][v]};`).join(' ')} memcpy(o, tmp, (${OW} - ow0) * sizeof(float));`}
          }`).join('\n          ');
    return `{
        vf ${accs.flat().map((a) => `${a} = {0}`).join(', ')};
        for (int ci = 0; ci < ${C}; ci++) for (int a = 0; a < ${kh}; a++) {
          const float *xa = xrow + (size_t)(ci * ${RIN} + a) * ${S * WPH} + ow0;
          const float *wa = wp + (ci * ${kh} + a) * ${kw * mr};
          ${taps}
        }
        ${store}
      }`;
  };
  const nFull = Math.floor(OW / nr), rest = OW - nFull * nr, nt = Math.ceil(rest / vw);
  // the phase split: vectors of even / odd columns by permutes where a whole vector pair lies inside the row (stored
  // unaligned: the first vector index depends on the left pad)
  const split = S === 2 ? `int i = 0;
        for (; i < ${WPH}; i++) { int w = 2 * i - ${p[1]}; if (w >= 0) break; d0[i] = 0; d1[i] = (w + 1 >= 0 && w + 1 < ${W}) ? xr[w + 1] : 0; }
        for (; i + VW <= ${WPH} && 2 * (i + VW) - ${p[1]} <= ${W}; i += VW) {
          vf v0 = *(const vfu *)(xr + 2 * i - ${p[1]}), v1 = *(const vfu *)(xr + 2 * i - ${p[1]} + VW);
          *(vfu *)(d0 + i) = __builtin_shuffle(v0, v1, KEVEN); *(vfu *)(d1 + i) = __builtin_shuffle(v0, v1, KODD);
        }
        for (; i < ${WPH}; i++) { int w = 2 * i - ${p[1]}; d0[i] = (w >= 0 && w < ${W}) ? xr[w] : 0; d1[i] = (w + 1 >= 0 && w + 1 < ${W}) ? xr[w + 1] : 0; }`
    : `for (int i = 0; i < ${WPH}; i++) { int w = i - ${p[1]}; d0[i] = (w >= 0 && w < ${W}) ? xr[w] : 0; }`;
  return `KEXPORT void *${pack}(void *w, void *unused) {
  const float *k = w;
  float *o = kiln_alloc((size_t)${COP * K * mr});
  for (int cp = 0; cp < ${COP}; cp++) for (int j = 0; j < ${K}; j++) for (int m = 0; m < ${mr}; m++) {
    int co = cp * ${mr} + m;
    o[((size_t)cp * ${K} + j) * ${mr} + m] = co < ${Co} ? k[(size_t)co * ${K} + j] : 0.0f;
  }
  return o;
}
static void ${fn}_task(void *arg, int t) {
  const stem_t *g = arg;
  int img = t / ${NBLK}, oh0 = (t % ${NBLK}) * ${RB}, oh1 = KMIN(${OH}, oh0 + ${RB});
  const float *x = g->x + (size_t)img * ${C * H * W};
  float *y = g->y + (size_t)img * ${Co * N};
  /* [C][RIN][S][WPH]: the block's input rows, padded and split by column phase */
  float xs[${C * RIN * S * WPH}] __attribute__((aligned(64)));
  float tmp[${nr}] __attribute__((aligned(64))); (void)tmp;
  for (int ci = 0; ci < ${C}; ci++) for (int r = 0; r < ${RIN}; r++) {
    float *d0 = xs + ((size_t)(ci * ${RIN} + r) * ${S}) * ${WPH};${S === 2 ? ` float *d1 = d0 + ${WPH};` : ''}
    int h = oh0 * ${s0} - ${p[0]} + r;
    if (h < 0 || h >= ${H}) { memset(d0, 0, ${S * WPH} * sizeof(float)); continue; }
    const float *xr = x + ((size_t)ci * ${H} + h) * ${W};
    {
        ${split}
    }
  }
  /* one panel of output channels at a time over the block's rows: its MR channel planes are written as runs of whole
     rows (few streams into a cold output), and its epilogue runs on them in cache */
  for (int cp = 0, co0 = 0; cp < ${COP}; cp++, co0 += ${mr}) {
    const float *wp = g->w + (size_t)cp * ${K * mr};
    for (int oh = oh0; oh < oh1; oh++) {
      const float *xrow = xs + (size_t)(oh - oh0) * ${s0 * S * WPH};
      float *yr = y + (size_t)oh * ${OW};
      for (int ow0 = 0; ow0 < ${nFull * nr}; ow0 += ${nr}) {
        ${block(nv, true)}
      }
${rest ? `      {
        int ow0 = ${nFull * nr};
        ${block(nt, rest === nt * vw)}
      }
` : ''}    }
    if (g->epi) g->epi((const char *)g->ctx + (size_t)img * g->ctxbs, y + (size_t)co0 * ${N} + oh0 * ${OW}, ${N}, co0, KMIN(${mr}, ${Co} - co0), oh0 * ${OW}, (oh1 - oh0) * ${OW});
  }
}
${exported(fn, `  int B = ${nbOr(c, batch)};
  if (B <= 0) return;
  const float *(*p)[3] = malloc(sizeof(*p) * B);
  for (int b = 0; b < B; b++) { p[b][0] = NULL; p[b][1] = a2; p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co * N} : NULL; }
  stem_t g = { a0, a4, a1, ${epi}, p, sizeof(*p) };
  kiln_pool_run(${fn}_task, &g, B * ${NBLK});
  free(p);`)}`;
}
