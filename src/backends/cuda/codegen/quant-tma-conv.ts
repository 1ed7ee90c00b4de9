// Implicit-im2col convolutions on the TMA-fed, warp-specialized int8 GEMM (quant-tma.ts): the A operand comes from the
// NHWC input through a tensor map in im2col mode instead of a 2-D map over a dense [M, K] matrix. Per k-step the
// producer asks the copy engine for BM consecutive output pixels' window taps: coordinates (channel chunk, the tile's
// first window corner w / h, image n) plus the tap's (kw, kh) offsets; the engine walks the pixels across W, H and
// images with the convolution's stride (the map's element strides) inside the bounding box of valid window corners,
// and fills taps outside the image with zeros (the padding, since an implicit-im2col QConv has zero point 0 or no
// pads). The rest of the kernel, its MMA loop and its staged epilogue are qgemmTma's text (plain and ping-pong), so
// the outputs are the cp.async implicit-im2col kernel's byte for byte (integer accumulation, same epilogue).
import { qgemmTma, type TmaKernelSource, type TmaOperandMap } from './quant-tma.js';
import { sourceHash } from './types.js';
import type { QConvGeometry, QGemmArgs } from './quant.js';

/** The im2col tensor map of the A operand (cuTensorMapEncodeIm2col over the NHWC input, uint8 elements). */
export interface TmaIm2colMap {
  operand: 0;
  /** input dims and the window corners' bounding box: lower = -pad begin, upper = pad end - (kernel - 1) * dilation ([W, H]) */
  N: number; H: number; W: number; C: number; lower: [number, number]; upper: [number, number];
  /** traversal strides [W, H] (the convolution's), channels per pixel (bytes: one k-step), pixels per load (BM) */
  strides: [number, number]; channels: number; pixels: number;
  swizzle: 2 | 3;
}

/** A TMA convolution kernel: parameter 0 is the im2col map, parameter 1 the weights' 2-D map (both by value). */
export type TmaConvKernelSource = Omit<TmaKernelSource, 'tma'> & { tma: [TmaIm2colMap, TmaOperandMap] };

/** Why the TMA kernel cannot take this convolution, or undefined: 128-byte k-steps must stay inside one tap (C % 128). */
export function tmaConvUnsupported(g: QGemmArgs): string | undefined {
  const cv = g.conv;
  if (!cv) return 'not a convolution';
  if (cv.C % 128 !== 0) return `C = ${cv.C}: a 128-byte k-step must lie inside one tap (C % 128 == 0)`;
  if (g.a === 'fp8') return 'integer operands only';
  if (g.M % (cv.OH * cv.OW) !== 0) return `M = ${g.M} is not a whole number of ${cv.OH} x ${cv.OW} images`;
  return undefined;
}

/**
 * qgemmTma's kernel (options as there: tile, occupancy, cluster, persistent) over an implicit-im2col convolution
 * (g.conv: NHWC input, K = KH * KW * C with C % 128 == 0, weights [N, KH, KW, C]).
 */
export function qconvTma(g: QGemmArgs, opts: { cluster?: 1 | 2; persistent?: number } = {}): TmaConvKernelSource {
  const why = tmaConvUnsupported(g);
  if (why) throw new Error(`qconv (tma): ${why}`);
  const cv = g.conv as QConvGeometry;
  if (g.K !== cv.KH * cv.KW * cv.C) throw new Error(`qconv (tma): K = ${g.K} is not ${cv.KH} x ${cv.KW} x ${cv.C}`);
  const k = qgemmTma({ ...g, conv: undefined }, opts);
  const BKB = k.tma[0].boxCols, BM = k.tma[0].boxRows, PER = cv.C / BKB;
  const anchor = `kq_tma(sa, &tmA, kt * ${BKB}, m0, bar);`;
  const fits = (src: string) => src.split(anchor).length === 2 && src.split('extern "C" __global__').length === 2;
  if (!fits(k.source)) throw new Error('qconv (tma): the TMA kernel text has changed (one A load and one entry expected): update quant-tma-conv.ts');
  // the A load of k-step kt for the tile at row m0: channel chunk and tap of kt, window corner of pixel m0
  const helper = `__device__ __forceinline__ void kq_tma_im2col(unsigned dst, const KqTmap* map, int kt, int m0, unsigned bar) {
  const int tap = kt / ${PER}, c = (kt - tap * ${PER}) * ${BKB}, kh = tap / ${cv.KW}, kw = tap - kh * ${cv.KW};
  const int ow = m0 % ${cv.OW}, t = m0 / ${cv.OW}, oh = t % ${cv.OH}, n = t / ${cv.OH};
  asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6], {%7, %8};\\n"
    :: "r"(dst), "l"(map), "r"(c), "r"(ow * ${cv.strides[1]} - ${cv.pads[1]}), "r"(oh * ${cv.strides[0]} - ${cv.pads[0]}), "r"(n), "r"(bar),
       "h"((unsigned short)(kw * ${cv.dilations[1]})), "h"((unsigned short)(kh * ${cv.dilations[0]})) : "memory");
}
`;
  const convert = (src: string) => src.split(k.name).join('KNAME').replace(anchor, 'kq_tma_im2col(sa, &tmA, kt, m0, bar);').replace('extern "C" __global__', `${helper}extern "C" __global__`);
  const text = convert(k.source);
  const name = `kiln_qtmaconv_${sourceHash(text)}`;
  // a programmatic-dependent-launch `early` variant of the GEMM (codegen/pdl.ts, where the generator renders one) gets
  // the same A load under this kernel's name, or is dropped (the plain GEMM's would read the im2col map as a 2-D one)
  const early = (k as { pdlEarly?: string }).pdlEarly;
  const pdlEarly = early !== undefined && fits(early) ? convert(early).split('KNAME').join(name) : undefined;
  const a: TmaIm2colMap = {
    operand: 0, N: g.M / (cv.OH * cv.OW), H: cv.H, W: cv.W, C: cv.C,
    lower: [0 - cv.pads[1], 0 - cv.pads[0]], upper: [cv.pads[3] - (cv.KW - 1) * cv.dilations[1], cv.pads[2] - (cv.KH - 1) * cv.dilations[0]],
    strides: [cv.strides[1], cv.strides[0]], channels: BKB, pixels: BM, swizzle: k.tma[0].swizzle,
  };
  return { ...k, name, source: text.split('KNAME').join(name), tma: [a, k.tma[1]], ...(early !== undefined ? { pdlEarly } : {}) };
}
