// The CPU's bf16 math mode (`precision: 'bf16'`, `kiln build --bf16 --device cpu`), like oneDNN's fpmath mode bf16
// or the GPU's tf32 flag: the graph and every tensor between layers stay float32 (so every other kernel keeps
// working), and the convolutions may round their operands to bfloat16 inside the kernel, multiplying with AVX-512
// BF16's VDPBF16PS and accumulating in fp32 (kernels/bf16.c.ts). Weights are rounded and packed in K pairs once at
// load, activations as the tasks pack them. The bf16 variants are offered beside the fp32 ones and timed against
// them, so a layer where bf16 does not pay keeps fp32. Winograd stays fp32: its transforms amplify bf16's rounding
// (F(4,3) with both operands rounded: ~9x the rms error of a direct bf16 sum, ~2e-2 of the output's rms on a
// 256-channel layer; F(2,3) ~1.4x but 4 products per output), and the 3 x 3s' bf16 transposed convolution is timed
// against it. bf16 keeps 8 bits of mantissa: each product is off by up to ~2^-8 relative, and a K-long sum of them by
// about sqrt(K) times that (test/backends/cpu/bf16.test.ts).
import { hasCpuFlag, type Isa } from './compiler.js';
import { tconvPlanes, type ConvGeom } from './conv.js';
import { exported, nbOr, type Ctx, type Variant } from './codegen.js';
import { BF16_C, BF16_H, renderBgemm } from './kernels/bf16.c.js';
import { renderTconv } from './kernels/tiles.c.js';

/** Register tiles of the bf16 GEMM: [output channels, vectors of 16 positions]. 16 x 1 suits 14 x 14 and 7 x 7
 * images (196 and 49 positions: less of the last vector wasted). */
const BF16_TILES: [number, number][] = [[8, 2], [6, 4], [16, 1]];
/** Tiles of the bf16 transposed convolution: [output positions, vectors of 16 output channels], rows of 7 and 14 as
 * the fp32 one's (TCONV_TILES, conv.ts): every lane of a 7 x 7 or 14 x 14 image's tiles does work, where the GEMM's
 * vectors of positions leave a quarter of the last one empty at 7 x 7. */
const BTCONV_TILES: [number, number][] = [[7, 4], [14, 2]];

/** Whether this CPU runs AVX-512 BF16 (Zen 4, Sapphire Rapids and later). */
export const hostBf16 = () => hasCpuFlag('avx512_bf16');

/** Whether a build's kernels may offer bf16 variants: a bf16 build on an AVX-512 host with BF16. */
export const bf16Kernels = (bf16: boolean, isa: Isa) => bf16 && isa === 'avx512' && hostBf16();

/** What a bf16 library adds: declarations for the header, the runtime unit's code (GEMM per tile) and the transposed
 * convolutions' unit's (per tile). */
export function bf16Library(): { header: string; runtime: string; tconv: string } {
  return {
    header: `${BF16_H}${BF16_TILES.map(([mr, nv]) => `void kiln_bgemm_${mr}x${nv}(const bgemm_t *g);`).join('\n')}
${BTCONV_TILES.map(([mr, nv]) => `void kiln_tconv_b${mr}x${nv}(const tconv_t *g);`).join('\n')}\n`,
    runtime: BF16_C + BF16_TILES.map(([mr, nv]) => renderBgemm(mr, nv)).join(''),
    tconv: BTCONV_TILES.map(([mr, nv]) => renderTconv(mr, nv, true)).join(''),
  };
}

/** Tactic names of the bf16 variants carry this: NativeTactic.precision reads it (the plan's per-layer precision, and
 * KernelsMeta.bf16 for the runner's host check). */
export const isBf16Tactic = (tactic: string) => tactic.includes('-bf16-');

/**
 * bf16 variants of a group-1 convolution (kiln:FusedConv, see fusedConv). The GEMM: a pointwise layer reads its input
 * in place, any other its implicit im2col panels through `packb(nr)` (the fp32 packer's body at that panel width),
 * rounded to bf16 pairs per block. The transposed convolution (bf16TconvVariants). `epi` and `acc` (the statement
 * switching `g` to the accumulate mode) as for the fp32 variants; `set`, as for the pointwise ones: the statement
 * giving the GEMM's `g` the fused epilogue and / or the accumulate mode.
 */
export function bf16ConvVariants(c: Ctx, g: ConvGeom, batch: number, pointwise: boolean, packb: (nr: number) => string, epi: string, variants: Variant[],
  set: string, acc?: string): string {
  const accumulate = !!acc;
  const { C, H, W, Co, OH, OW, kh, kw } = g;
  const id = c.id, N = OH * OW, K = C * kh * kw;
  let src = '';
  for (const [mr, nv] of BF16_TILES) {
    const tile = `${mr}x${nv}`, nr = nv * 16, fn = `L${id}_b${tile}`, pack = `P${id}_b${tile}`, packB = `BB${id}_${tile}`;
    // a panel more than a quarter empty costs more than the tile shape gains
    if (Math.ceil(Co / mr) * mr > 1.25 * Co) continue;
    src += `KEXPORT void *${pack}(void *w, void *unused) { (void)unused; return kiln_bpack_a(w, ${K}, 1, ${Co}, ${K}, ${mr}); }\n`;
    if (!pointwise) {
      src += `static void ${packB}(const void *ctx, int j0, int k0, int kc, float *restrict panel) {
  const float *x = ((const float *const *)ctx)[0];
${packb(nr)}
}\n`;
    }
    src += exported(fn, `  int B = ${nbOr(c, batch)};
  const float *(*p)[3] = malloc(sizeof(*p) * (B ? B : 1));
  for (int b = 0; b < B; b++) {
    p[b][0] = (const float *)a0 + (size_t)b * ${C * H * W}; p[b][1] = a2;
    p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co * N} : NULL;
  }
  bgemm_t g = { ${Co}, ${N}, ${K}, a1, ${pointwise ? `a0, ${C * H * W}, ${N}, NULL` : `NULL, 0, 0, ${packB}`}, ${epi}, p, sizeof(*p), a4, ${Co * N}, ${N}, B, 0 };
${set}  kiln_bgemm_${tile}(&g);
  free(p);`);
    variants.push({ tactic: `native-${c.isa}-bf16-${pointwise ? 'pw' : 'conv'}-${mr}x${nr}`, fn, pack: { fn: pack, inputs: [1] }, ...(accumulate ? { accumulate: true } : {}) });
  }
  // KILN_BF16_TCONV=0 at build leaves the transposed convolution out (for A/B runs)
  return process.env.KILN_BF16_TCONV === '0' ? src : src + bf16TconvVariants(c, g, batch, epi, variants, acc);
}

/**
 * bf16 transposed convolution variants (renderTconv's bf16 instance; any window, stride, padding, dilation): per call
 * the images are padded into planes of channel-pair words (kiln_bpad_pairs), and each tile of output positions x
 * output channels sums, per channel pair and tap, one broadcast word times the weights' pair vectors. The bf16 GEMM's
 * im2col panels are fp32 copies rounded per block, and its vectors of positions leave a quarter of the last one empty
 * at 7 x 7; here nothing is copied per tile and every lane works. ResNet-50's 3 x 3s at batch 8, 2 threads
 * (bench/cpu/bf16-ab.ts): 0.67-0.78x the time of the best earlier variant, fp32 Winograd included.
 */
function bf16TconvVariants(c: Ctx, g: ConvGeom, batch: number, epi: string, variants: Variant[], acc?: string): string {
  const { C, H, W, Co, OH, OW, kh, kw, s, p } = g;
  const id = c.id, N = OH * OW, CP = Math.ceil(C / 2), K2 = CP * kh * kw;
  // planes of channel-pair words, laid out as the fp32 one's planes
  const { HP, WP, off, oh, ow, rs } = tconvPlanes(g, CP);
  let src = `static const int boff${id}[${K2}] = { ${off.join(', ')} };\n`;
  for (const [mr, nv] of BTCONV_TILES) {
    const tile = `${mr}x${nv}`, nr = nv * 16, fn = `L${id}_bt${tile}`, pack = `P${id}_bt${tile}`;
    if (Math.ceil(Co / nr) * nr > 1.25 * Co) continue;
    src += `KEXPORT void *${pack}(void *w, void *unused) { (void)unused; return kiln_bpack_conv(w, ${Co}, ${C}, ${kh * kw}, ${nr}); }\n`;
    src += exported(fn, `  int B = ${nbOr(c, batch)};
  size_t per;
  const uint32_t *xp = kiln_bpad_pairs(a0, B, ${C}, ${H}, ${W}, ${HP}, ${WP}, ${p[0]}, ${p[1]}, ${mr * s[1] + 16}, &per);
  const float *(*p)[3] = malloc(sizeof(*p) * (B ? B : 1));
  for (int b = 0; b < B; b++) { p[b][0] = NULL; p[b][1] = a2; p[b][2] = a3 ? (const float *)a3 + (size_t)b * ${Co * N} : NULL; }
  tconv_t g = { ${Co}, ${K2}, ${oh}, ${ow}, ${rs}, ${s[1]}, a1, boff${id}, (const float *)xp, per, ${epi}, p, sizeof(*p), a4, ${Co * N}, B, 0, 1, 0 };
${acc ?? ''}  kiln_tconv_b${tile}(&g);
  free(p);`);
    variants.push({ tactic: `native-${c.isa}-bf16-tconv-${mr}x${nr}`, fn, pack: { fn: pack, inputs: [1] }, ...(acc ? { accumulate: true } : {}) });
  }
  return src;
}

/**
 * bf16 variants of a MatMul with constant 2-D weights (kiln:FusedMatMul, see fusedMatMul): the weights packed once as
 * bf16 pairs per column panel, the activations rounded into row panels per call (`M`: the C expression of the rows,
 * the run-time batch's where batch-generic). `epi` and `acc` as for the fp32 variants; the epilogue's context is the
 * bias and residual pointers.
 */
export function bf16MatMulVariants(c: Ctx, M: string, N: number, K: number, transB: boolean, epi: string, variants: Variant[], acc?: string): string {
  const id = c.id;
  let src = '';
  for (const [mr, nv] of BF16_TILES) {
    const tile = `${mr}x${nv}`, nr = nv * 16, fn = `L${id}_b${tile}`, pack = `P${id}_b${tile}`;
    if (Math.ceil(N / nr) * nr > 1.25 * N) continue;
    src += `KEXPORT void *${pack}(void *w, void *unused) { (void)unused; return kiln_bpack_a(w, ${transB ? `${K}, 1` : `1, ${N}`}, ${N}, ${K}, ${nr}); }\n`;
    src += exported(fn, `  const float *p[2] = { a2, a3 };
  int M = ${M};
  bgemm_t g = { M, ${N}, ${K}, kiln_bpack_rows(a0, ${K}, M, ${K}, ${mr}), NULL, 0, 0, NULL, ${epi}, p, 0, a4, 0, ${N}, 1, 0, a1 };
${acc ?? ''}  kiln_bgemm_${tile}(&g);`);
    variants.push({ tactic: `native-${c.isa}-bf16-gemm-${mr}x${nr}`, fn, pack: { fn: pack, inputs: [1] }, ...(acc ? { accumulate: true } : {}) });
  }
  return src;
}
