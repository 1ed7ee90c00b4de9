// Convolutions on the CPU (kiln:FusedConv): their geometry, and the variants the builder times for one layer: implicit
// GEMM per group, direct, transposed direct (also grouped), pointwise read in place, matrix-vector for 1 x 1 images,
// Winograd (winograd.ts), the stem variant for few input channels (stem.ts), the grouped kernel with positions in the
// lanes (grouped.ts) and the depthwise kernels (depthwise.ts).
import type { Node } from '../../ir/graph.js';
import { sameDims } from '../../ir/tensor.js';
import type { Isa } from './compiler.js';
import { bf16ConvVariants } from './bf16.js';
import { depthwise, depthwisePointwise } from './depthwise.js';
import { groupedVariants } from './grouped.js';
import { stemVariants } from './stem.js';
import { winogradVariants } from './winograd.js';
import {
  MIN_GEMM_WORK, TILES, VW, accumulateEpilogue, activation, attrOf, epilogue, exported, fusedEpilogue, isConst, nbOr, prod,
  type Ctx, type Gen, type Variant,
} from './codegen.js';

/** Tiles of the transposed convolution (see tconv_t): [output positions, vectors of output channels]. Rows of 7 and
 * 14 divide the spatial sizes of the usual 224-pixel networks (7, 14, 28, 56, 112); 16 x 1 suits layers of 16 to 32
 * channels; 7 x 2 is offered only where 48 and 64 channels do not divide the output channels (MobileNetV2's 960 -> 160
 * at 7 x 7: 141-144 us vs 156-166 for the wider tiles, bench/cpu/conv-c.ts). */
const TCONV_TILES: Record<Isa, [number, number][]> = { avx512: [[7, 4], [14, 2], [7, 3], [16, 1], [7, 2], [14, 1], [7, 1]], avx2: [[7, 2], [4, 3]], portable: [[7, 2]] };
/** One-vector tiles in rows of 7 and 14 are offered only to layers (or groups) of at most 16 output channels: RegNet's
 * 16-channel groups over 7- and 14-wide rows, which 16 x 1 fills only 7/16 and 14/16 of. */
const NARROW_ONLY = (mr: number, nv: number) => nv === 1 && mr !== 16;
export const tconvTilesOf = (isa: Isa) => TCONV_TILES[isa];
/** Tiles of the pointwise convolution (see pw_t): [output channels, vectors of positions], offered where the output
 * channels fill whole panels. 16 x 1 wastes less of the last vector of positions at 14 x 14 (196 = 12.25 x 16). */
const PW_TILES: Record<Isa, [number, number][]> = { avx512: [[8, 2], [16, 1]], avx2: [[6, 2]], portable: [[6, 2]] };
export const pwTilesOf = (isa: Isa) => PW_TILES[isa];

export interface ConvGeom { C: number; H: number; W: number; Co: number; OH: number; OW: number; kh: number; kw: number; s: number[]; d: number[]; p: number[]; group: number }

export function convGeometry(n: Node, x: number[], w: number[], out: number[]): ConvGeom | undefined {
  if (x.length !== 4 || w.length !== 4 || out.length !== 4) return undefined;
  const [, C, H, W] = x, [Co, , kh, kw] = w, [, , OH, OW] = out;
  const s = attrOf(n, 'strides', [1, 1]), d = attrOf(n, 'dilations', [1, 1]);
  const ks = attrOf<number[]>(n, 'kernel_shape', [kh, kw]);
  if (ks[0] !== kh || ks[1] !== kw || out[1] !== Co) return undefined;
  const p = convPads(n, x, out, [kh, kw], s, d);
  if (!p) return undefined;
  return { C, H, W, Co, OH, OW, kh, kw, s, d, p, group: attrOf(n, 'group', 1) };
}

/**
 * A 2-D window's pads [top, left, bottom, right] from its pads / auto_pad attributes (convolutions and pools alike;
 * SAME pads from the output size the shape inference gave).
 */
export function windowPads(n: Node, x: number[], out: number[], k: number[], s: number[], d: number[]): number[] {
  const auto = attrOf<string>(n, 'auto_pad', 'NOTSET');
  if (auto === 'NOTSET') return attrOf(n, 'pads', [0, 0, 0, 0]);
  if (auto === 'VALID') return [0, 0, 0, 0];
  const tot = [0, 1].map((i) => Math.max(0, (out[2 + i] - 1) * s[i] + ((k[i] - 1) * d[i] + 1) - x[2 + i]));
  const lo = tot.map((t) => (auto === 'SAME_UPPER' ? Math.floor(t / 2) : Math.ceil(t / 2)));
  return [lo[0], lo[1], tot[0] - lo[0], tot[1] - lo[1]];
}

/**
 * A 2-D convolution's pads (windowPads), or undefined when the output shape does not follow from them (guards
 * against attributes the generators do not model).
 */
export function convPads(n: Node, x: number[], out: number[], k: number[], s: number[], d: number[]): number[] | undefined {
  const p = windowPads(n, x, out, k, s, d);
  const expect = [0, 1].map((i) => Math.floor((x[2 + i] + p[i] + p[i + 2] - ((k[i] - 1) * d[i] + 1)) / s[i]) + 1);
  return expect[0] === out[2] && expect[1] === out[3] ? p : undefined;
}

/** kiln:FusedConv: implicit GEMM (im2col panels packed on the fly) per group, a direct kernel for depthwise; for group
 * 1 also direct, transposed direct and Winograd variants. */
export const fusedConv: Gen = (c, n, ins, out) => {
  const [x, w, bias, res] = ins;
  if (!x || !w || !isConst(c, n.inputs[1]) || (bias && (prod(bias) !== out[1] || !isConst(c, n.inputs[2]))) || (res && !sameDims(res, out))) return undefined;
  const g = convGeometry(n, x, w, out);
  const act = activation(n);
  if (!g || act === undefined) return undefined;
  const { C, H, W, Co, OH, OW, kh, kw, s, p, group: G } = g;
  const batch = x[0];
  if (c.batch && (!c.batch[0] || (res && !c.batch[3]))) c = { ...c, batch: undefined };
  if (G === C && w[1] === 1 && Co % C === 0) return depthwise(c, n, g, batch, !!bias, !!res, act);
  // grouped (1 < group < channels: ResNeXt, RegNet): the same GEMM per group over its slice of input channels, output
  // channels, bias and weights (packed per group at load), the groups one after another
  if (C % G || Co % G || w[1] !== C / G) return undefined;
  const N = OH * OW, Cog = Co / G, K = (C / G) * kh * kw, id = c.id;
  if (Co * N * K < MIN_GEMM_WORK) return undefined;
  const sub: ConvGeom = { ...g, C: C / G, Co: Cog, group: 1 };
  const epi = epilogue(`e${id}`, 1, bias ? 'p[1][i0 + r]' : undefined, res ? 'p[2][(size_t)(i0 + r) * N_ + j0 + j]' : undefined, act);
  const acc = res && G === 1 ? accumulateEpilogue(id, epilogue(`e${id}i`, 1, bias ? 'p[1][i0 + r]' : undefined, undefined, act)) : undefined;
  const pointwise = kh === 1 && kw === 1 && s[0] === 1 && s[1] === 1 && p.every((v) => v === 0);
  // a pointwise layer runs direct as pw_t (its input read in place), not through dconv_t's padded copy
  const direct = G === 1 && !pointwise ? directConv(g) : undefined;
  // the GEMM and pointwise tiles apply a common epilogue in their stores (a grouped layer's residual: the generic pass)
  const fuseGemm = G === 1 || !res ? fusedEpilogue(n, bias ? `(const float *)a2 + gi * ${Cog}` : 'NULL', !!res, '    ') : undefined;
  let src = `#define N_ ${N}\n${epi ?? ''}${acc?.src ?? ''}${direct ? `static const int off${id}[${K}] = { ${direct.off.join(', ')} };\n` : ''}`;
  const variants: Variant[] = [];
  for (const [mr, nv] of TILES[c.isa]) {
    const tile = `${mr}x${nv}`, nr = nv * VW[c.isa], per = Math.ceil(Cog / mr) * mr * K;
    const fn = `L${id}_${tile}`, pack = `P${id}_${tile}`, packb = `B${id}_${tile}`;
    // a full panel's rows are fixed-size copies the compiler inlines as vector moves
    const body = pointwise ? `  int n = KMIN(${nr}, ${N} - j0);
  const float *src = x + (size_t)k0 * ${N} + j0;
  if (n == ${nr}) for (int k = 0; k < kc; k++) memcpy(panel + k * ${nr}, src + (size_t)k * ${N}, ${nr * 4});
  else for (int k = 0; k < kc; k++) {
    memcpy(panel + k * ${nr}, src + (size_t)k * ${N}, n * sizeof(float));
    for (int j = n; j < ${nr}; j++) panel[k * ${nr} + j] = 0;
  }` : im2colBody(sub, nr);
    src += `static void ${packb}(const void *ctx, int j0, int k0, int kc, float *restrict panel) {
  const float *x = ((const float *const *)ctx)[0];
${body}
}\n`;
    src += `KEXPORT void *${pack}(void *w, void *unused) {
  float *o = kiln_alloc((size_t)${G} * ${per});
  for (int gi = 0; gi < ${G}; gi++) kiln_pack_a((const float *)w + (size_t)gi * ${Cog * K}, ${K}, 1, ${Cog}, ${K}, ${mr}, o + (size_t)gi * ${per});
  return o;
}\n`;
    // one GEMM per image (and group), all images in one pool run (a small image alone is too little work to split)
    src += exported(fn, `  int B = ${nbOr(c, batch)};
  const float *(*p)[3] = malloc(sizeof(*p) * (B ? B : 1));
  for (int gi = 0; gi < ${G}; gi++) {
    for (int b = 0; b < B; b++) {
      p[b][0] = (const float *)a0 + (size_t)b * ${C * H * W} + (size_t)gi * ${(C / G) * H * W};
      p[b][1] = a2 ? (const float *)a2 + gi * ${Cog} : NULL;
      p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co * N} + (size_t)gi * ${Cog * N} : NULL;
    }
    gemm_t g = { ${Cog}, ${N}, ${K}, (const float *)a1 + (size_t)gi * ${per}, NULL, 0, NULL, ${packb}, ${epi ? `e${id}` : 'NULL'}, p, (float *)a4 + (size_t)gi * ${Cog * N}, ${N}, B, ${Co * N}, sizeof(*p) };
${fuseGemm ?? acc?.set ?? ''}    if (B) kiln_gemm_${tile}(&g);
  }
  free(p);`);
    variants.push({ tactic: `native-${c.isa}-${G > 1 ? 'g' : ''}conv-${mr}x${nr}`, fn, pack: { fn: pack, inputs: [1] }, ...(acc ? { accumulate: true } : {}) });
    if (direct) {
      src += exported(`${fn}d`, `  int B = ${nbOr(c, batch)};
  size_t per;
  const float *xp = kiln_pad_images(a0, B, ${C}, ${H}, ${W}, ${direct.HP}, ${direct.WP}, ${p[0]}, ${p[1]}, ${nr + 16}, &per);
  const float *(*p)[3] = malloc(sizeof(*p) * (B ? B : 1));
  for (int b = 0; b < B; b++) { p[b][0] = NULL; p[b][1] = a2; p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co * N} : NULL; }
  dconv_t g = { ${Co}, ${K}, ${OH}, ${OW}, ${direct.WP}, a1, off${id}, xp, per, ${epi ? `e${id}` : 'NULL'}, p, sizeof(*p), a4, ${Co * N}, B };
  kiln_dconv_${tile}(&g);
  free(p);`);
      variants.push({ tactic: `native-${c.isa}-dconv-${mr}x${nr}`, fn: `${fn}d`, pack: { fn: pack, inputs: [1] } });
    }
  }
  // the pointwise and bf16 variants' fused epilogue: the bias from a2 (their g has no groups)
  const fuse = G === 1 ? fusedEpilogue(n, bias ? 'a2' : 'NULL', !!res) ?? acc?.set ?? '' : '';
  if (G === 1 && pointwise) src += pointwiseVariants(c, g, batch, epi ? `e${id}` : 'NULL', variants, fuse, !!acc);
  if (G === 1 && c.bf16) src += bf16ConvVariants(c, g, batch, pointwise, (nr) => im2colBody(g, nr), epi ? `e${id}` : 'NULL', variants, fuse, acc?.set);
  src += tconvVariants(c, g, batch, epi ? `e${id}` : 'NULL', variants, acc?.set);
  if (G > 1) src += groupedVariants(c, g, batch, epi ? `e${id}` : 'NULL', variants);
  if (G === 1) src += winogradVariants(c, g, batch, epi ? `e${id}` : 'NULL', variants, acc?.set);
  if (G === 1) src += stemVariants(c, g, batch, epi ? `e${id}` : 'NULL', variants);
  if (G === 1 && pointwise && N === 1 && !acc) src += gemvVariant(c, g, batch, epi ? `e${id}` : 'NULL', variants);
  // the pair with the depthwise layer before, where one of the variants it pairs with is offered
  const dp = G === 1 && pointwise ? depthwisePointwise(c, n, g, batch, epi ? `e${id}` : 'NULL') : undefined;
  const pair = dp && variants.some((v) => dp.pair.tactics!.includes(v.tactic)) ? dp.pair : undefined;
  if (pair) src += dp!.src;
  // with the pair only the variants it pairs with: timed alone, the layer cannot see what the pair saves
  return { variants: pair ? variants.filter((v) => pair.tactics!.includes(v.tactic)) : variants, args: [{ in: 0 }, { packed: true }, { in: 2 }, { in: 3 }, { out: true }],
    source: `${src}#undef N_\n`, batched: !!c.batch, work: batch * Co * N * K, ...(pair ? { pair } : {}) };
};

/**
 * The transposed convolution's view of its source (fp32 or bf16 channel pairs): padded planes of HP x WP, each tap's
 * offset for `planes` planes, and the output as oh rows of ow positions, rs apart in the source. A 1x1 stride-1
 * unpadded convolution runs as one long output row on the image itself.
 */
export function tconvPlanes(g: ConvGeom, planes: number) {
  const { H, W, OH, OW, kh, kw, s, d, p } = g;
  const flat = kh === 1 && kw === 1 && s[0] === 1 && s[1] === 1 && p.every((v) => v === 0);
  const HP = flat ? H : Math.max((OH - 1) * s[0] + (kh - 1) * d[0] + 1, p[0] + H);
  const WP = flat ? W : Math.max((OW - 1) * s[1] + (kw - 1) * d[1] + 1, p[1] + W);
  const off: number[] = [];
  for (let ci = 0; ci < planes; ci++) for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) off.push(ci * HP * WP + a * d[0] * WP + b * d[1]);
  const [oh, ow, rs] = flat ? [1, OH * OW, 0] : [OH, OW, s[0] * WP];
  return { flat, HP, WP, off, oh, ow, rs };
}

/** Transposed direct convolution variants (tconv_t; any window, stride, padding, dilation): taps read straight from
 * the input where every tile lies inside it, else from a zero-padded copy with slack for the last tiles' overrun.
 * A 1x1 stride-1 unpadded convolution runs as one long output row. */
function tconvVariants(c: Ctx, g: ConvGeom, batch: number, epi: string, variants: Variant[], acc?: string): string {
  const { H, W, OH, OW, kh, kw, s, d, p, group: G } = g;
  // a grouped layer: each group's channels are an image of their own (see tconv_t), its output channels the panels
  const C = g.C / G, Co = g.Co / G;
  const id = c.id, K = C * kh * kw, N = OH * OW;
  const { flat, HP, WP, off, oh, ow, rs } = tconvPlanes(g, C);
  let src = `static const int toff${id}[${K}] = { ${off.join(', ')} };\n`;
  // edges: a padded layer whose taps fall off the image for at most a tenth of its output positions (stems, 3 x 3
  // layers from 56 x 56 up) also runs on the image in place, those positions computed with bounds checks (tconv_t.tap),
  // without the zero-padded copy. Offered beside the padded variants and timed against them. In the model: RegNetY's
  // grouped 3 x 3 at 56 x 56 786 -> 659 us (1 thread), the stems about the same (their input is read cold either way)
  const inRows = Array.from({ length: OH }, (_, o) => o * s[0] - p[0] >= 0 && o * s[0] - p[0] + (kh - 1) * d[0] < H).filter(Boolean).length;
  const inCols = Array.from({ length: OW }, (_, o) => o * s[1] - p[1] >= 0 && o * s[1] - p[1] + (kw - 1) * d[1] < W).filter(Boolean).length;
  const edges = !flat && p.some((v) => v > 0) && inRows * inCols >= 0.9 * N;
  if (edges) {
    const offI: number[] = [], tap: number[] = [];
    for (let ci = 0; ci < C; ci++) {
      for (let a = 0; a < kh; a++) {
        for (let b = 0; b < kw; b++) {
          offI.push(ci * H * W + (a * d[0] - p[0]) * W + b * d[1] - p[1]);
          tap.push(ci * H * W, a * d[0], b * d[1]);
        }
      }
    }
    src += `static const int eoff${id}[${K}] = { ${offI.join(', ')} };\nstatic const int etap${id}[${3 * K}] = { ${tap.join(', ')} };\n`;
  }
  for (const [mr, nv] of TCONV_TILES[c.isa]) {
    if (c.isa === 'avx512' && mr === 7 && nv === 2 && (Co % 48 === 0 || Co % 64 === 0)) continue;
    const tile = `${mr}x${nv}`, nr = nv * VW[c.isa], per = Math.ceil(Co / nr) * nr * K;
    // panels of output channels more than a quarter empty are not offered from 16 channels up: the wasted lanes cost
    // more than the tile shape gains (MobileNetV2's 144 -> 24 projection at 56 x 56, in the model: 16 x 16 305 us,
    // the GEMM tile 258, pw-8x32 222)
    if ((Co >= 16 && Math.ceil(Co / nr) * nr > 1.25 * Co) || (NARROW_ONLY(mr, nv) && Co > 16)) continue;
    const fn = `L${id}_t${tile}`, pack = `P${id}_t${tile}`;
    const inside = p.every((v) => v === 0) && ow % mr === 0;
    src += `KEXPORT void *${pack}(void *w, void *unused) {
  float *o = kiln_alloc((size_t)${G * per});
  for (int gi = 0; gi < ${G}; gi++) kiln_pack_b((const float *)w + (size_t)gi * ${Co * K}, 1, ${K}, ${K}, ${Co}, ${nr}, o + (size_t)gi * ${per});
  return o;
}\n`;
    const source = inside ? `  const float *xp = a0; size_t per = ${C * H * W};`
      : `  size_t per;
  const float *xp = kiln_pad_images(a0, B * ${G}, ${C}, ${H}, ${W}, ${HP}, ${WP}, ${p[0]}, ${p[1]}, ${mr * s[1] + 16}, &per);`;
    // the call: per-image epilogue pointers, then the tile's descriptor (its fields up to the edge ones differ by variant)
    const call = (pre: string, head: string, edge = '') => `  int B = ${nbOr(c, batch)};
${pre}  const float *(*p)[3] = malloc(sizeof(*p) * (B ? B * ${G} : 1));
  for (int b = 0; b < B * ${G}; b++) {
    p[b][0] = NULL; p[b][1] = a2 ? (const float *)a2 + (b % ${G}) * ${Co} : NULL;
    p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co * N} : NULL;
  }
  tconv_t g = { ${head}, ${epi}, p, sizeof(*p), a4, ${Co * N}, B * ${G}, 0, ${G}, ${per}${edge} };
${acc ?? ''}  kiln_tconv_${tile}(&g);
  free(p);`;
    src += exported(fn, call(`${source}\n`, `${Co}, ${K}, ${oh}, ${ow}, ${rs}, ${s[1]}, a1, toff${id}, xp, per`));
    variants.push({ tactic: `native-${c.isa}-${G > 1 ? 'g' : ''}tconv-${mr}x${nr}`, fn, pack: { fn: pack, inputs: [1] }, ...(acc ? { accumulate: true } : {}) });
    if (!edges) continue;
    src += exported(`${fn}e`, call('', `${Co}, ${K}, ${OH}, ${OW}, ${s[0] * W}, ${s[1]}, a1, eoff${id}, a0, ${C * H * W}`,
      `,\n    etap${id}, ${H}, ${W}, ${s[0]}, ${p[0]}, ${p[1]}, ${(kh - 1) * d[0]}, ${(kw - 1) * d[1]}, ${-p[0] * W - p[1]}, ${(C - 1) * H * W + ((kh - 1) * d[0] - p[0]) * W + (kw - 1) * d[1] - p[1]}`));
    variants.push({ tactic: `native-${c.isa}-${G > 1 ? 'g' : ''}etconv-${mr}x${nr}`, fn: `${fn}e`, pack: { fn: pack, inputs: [1] }, ...(acc ? { accumulate: true } : {}) });
  }
  return src;
}

/**
 * A pointwise layer over a 1 x 1 image (squeeze-excite's two fully connected layers): a matrix-vector product, which
 * the tile kernels run with all but one of their rows or columns empty. Weights packed once in panels of 2 vectors of
 * output channels ([Co/NR][K][NR]); per panel, four accumulators over k hide the FMA latency. Reading the weights is
 * the work (MobileNetV3's 960 -> 240: 0.9 MB), so the panels are spread over the pool.
 */
function gemvVariant(c: Ctx, g: ConvGeom, batch: number, epi: string, variants: Variant[]): string {
  const { C: K, Co } = g;
  const id = c.id, NV = 2, NR = NV * VW[c.isa], P = Math.ceil(Co / NR), CH = Math.max(1, Math.ceil(P / 8));
  const acc = (u: number) => Array.from({ length: NV }, (_, j) => `s${u}[${j}] += x[k + ${u}] * *(const vf *)(w + (size_t)(k + ${u}) * ${NR} + ${j * VW[c.isa]});`).join(' ');
  const src = `KEXPORT void *P${id}_gv(void *w, void *unused) {
  float *o = kiln_alloc((size_t)${P * NR * K});
  kiln_pack_b(w, 1, ${K}, ${K}, ${Co}, ${NR}, o);
  return o;
}
typedef struct { const float *x; const float *w; float *y; const void *ctx; size_t ctxbs; int per; } gv${id}_t;
static void gvt${id}(void *arg, int t) {
  const gv${id}_t *a = arg;
  int img = t / a->per, p0 = (t % a->per) * ${CH}, p1 = KMIN(${P}, p0 + ${CH});
  const float *x = a->x + (size_t)img * ${K};
  float *y = a->y + (size_t)img * ${Co};
  for (int p = p0; p < p1; p++) {
    const float *w = a->w + (size_t)p * ${K * NR};
    vf s0[${NV}] = {0}, s1[${NV}] = {0}, s2[${NV}] = {0}, s3[${NV}] = {0};
    int k = 0;
    for (; k + 4 <= ${K}; k += 4) { ${acc(0)} ${acc(1)} ${acc(2)} ${acc(3)} }
    for (; k < ${K}; k++) { ${acc(0)} }
    float out[${NR}] __attribute__((aligned(64)));
    for (int j = 0; j < ${NV}; j++) *(vf *)(out + j * VW) = s0[j] + s1[j] + s2[j] + s3[j];
    int co0 = p * ${NR}, nj = KMIN(${NR}, ${Co} - co0);
    memcpy(y + co0, out, nj * sizeof(float));
    ${epi === 'NULL' ? '' : `${epi}((const char *)a->ctx + (size_t)img * a->ctxbs, y + co0, 1, co0, nj, 0, 1);`}
  }
}
${exported(`L${id}_gv`, `  int B = ${nbOr(c, batch)};
  const float *(*p)[3] = malloc(sizeof(*p) * (B ? B : 1));
  for (int b = 0; b < B; b++) { p[b][0] = NULL; p[b][1] = a2; p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co} : NULL; }
  gv${id}_t job = { a0, a1, a4, p, sizeof(*p), ${Math.ceil(P / CH)} };
  if (B) kiln_pool_run(gvt${id}, &job, B * job.per);
  free(p);`)}`;
  variants.push({ tactic: `native-${c.isa}-gemv-${NR}`, fn: `L${id}_gv`, pack: { fn: `P${id}_gv`, inputs: [1] } });
  return src;
}

/** Pointwise variants (pw_t): a 1x1 stride-1 unpadded layer as a GEMM of its weights by its input read in place. \`set\`:
 * the statement giving \`g\` the fused epilogue and / or the accumulate mode (which the variants offer if \`accumulate\`). */
function pointwiseVariants(c: Ctx, g: ConvGeom, batch: number, epi: string, variants: Variant[], set: string, accumulate: boolean): string {
  const { C, Co, OH, OW } = g;
  const id = c.id, N = OH * OW;
  let src = '';
  for (const [mr, nv] of PW_TILES[c.isa]) {
    // whole row panels only: a partial panel runs every block through the tile copy (MobileNetV2's 24-channel
    // projections in 16 + 8 rows: 267 vs 196 us with 8-row panels)
    if (Co % mr) continue;
    const tile = `${mr}x${nv}`, fn = `L${id}_p${tile}`, pack = `P${id}_p${tile}`;
    src += `KEXPORT void *${pack}(void *w, void *unused) {
  float *o = kiln_alloc((size_t)${Math.ceil(Co / mr) * mr * C});
  kiln_pack_a(w, ${C}, 1, ${Co}, ${C}, ${mr}, o);
  return o;
}\n`;
    src += exported(fn, `  int B = ${nbOr(c, batch)};
  const float *(*p)[3] = malloc(sizeof(*p) * (B ? B : 1));
  for (int b = 0; b < B; b++) { p[b][0] = NULL; p[b][1] = a2; p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co * N} : NULL; }
  pw_t g = { ${Co}, ${N}, ${C}, a1, a0, ${C * N}, ${epi}, p, sizeof(*p), a4, ${Co * N}, B, 0 };
${set}  kiln_pw_${tile}(&g);
  free(p);`);
    variants.push({ tactic: `native-${c.isa}-pw-${mr}x${nv * VW[c.isa]}`, fn, pack: { fn: pack, inputs: [1] }, ...(accumulate ? { accumulate: true } : {}) });
  }
  return src;
}

/** Stride-1 convolutions can also run direct (no im2col; see dconv_t): the padded
 * image size and each tap's offset in it. */
function directConv(g: ConvGeom): { HP: number; WP: number; off: number[] } | undefined {
  const { C, H, W, OH, OW, kh, kw, s, d, p } = g;
  if (s[0] !== 1 || s[1] !== 1) return undefined;
  const HP = Math.max(OH + (kh - 1) * d[0], p[0] + H), WP = Math.max(OW + (kw - 1) * d[1], p[1] + W);
  const off: number[] = [];
  for (let ci = 0; ci < C; ci++) for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) off.push(ci * HP * WP + a * d[0] * WP + b * d[1]);
  return { HP, WP, off };
}

/** Packs rows [k0, k0 + kc) x columns [j0, j0 + NR) of the implicit im2col matrix: per row, runs along one output
 * row, each split into a zero head, a valid middle (memcpy when the stride is 1) and a zero tail. */
function im2colBody(g: ConvGeom, nr: number): string {
  const { H, W, OW, kh, kw, s, d, p } = g;
  const N = g.OH * OW;
  const mid = s[1] === 1 ? 'memcpy(dst + jj + lo, xr + w0 + lo, (hi - lo) * sizeof(float));'
    : `for (int t = lo; t < hi; t++) dst[jj + t] = xr[w0 + t * ${s[1]}];`;
  return `  int oh0 = j0 / ${OW}, ow0 = j0 % ${OW};
  for (int k = k0; k < k0 + kc; k++) {
    int ci = k / ${kh * kw}, fa = (k / ${kw}) % ${kh}, fb = k % ${kw};
    const float *xc = x + (size_t)ci * ${H * W};
    float *dst = panel + (k - k0) * ${nr};
    int jj = 0, oh = oh0, ow = ow0;
    while (jj < ${nr}) {
      if (j0 + jj >= ${N}) { memset(dst + jj, 0, (${nr} - jj) * sizeof(float)); break; }
      int run = KMIN(KMIN(${nr} - jj, ${OW} - ow), ${N} - (j0 + jj));
      int h = oh * ${s[0]} - ${p[0]} + fa * ${d[0]};
      if ((unsigned)h >= ${H}u) memset(dst + jj, 0, run * sizeof(float));
      else {
        const float *xr = xc + h * ${W};
        int w0 = ow * ${s[1]} - ${p[1]} + fb * ${d[1]};
        /* valid t: 0 <= w0 + t * stride < W */
        int lo = w0 >= 0 ? 0 : (-w0 + ${s[1] - 1}) / ${s[1]};
        int hi = w0 > ${W - 1} ? 0 : KMIN(run, (${W - 1} - w0) / ${s[1]} + 1);
        if (lo > run) lo = run;
        if (hi < lo) hi = lo;
        for (int t = 0; t < lo; t++) dst[jj + t] = 0.0f;
        ${mid}
        for (int t = hi; t < run; t++) dst[jj + t] = 0.0f;
      }
      jj += run; ow += run;
      if (ow == ${OW}) { ow = 0; oh++; }
    }
  }`;
}

