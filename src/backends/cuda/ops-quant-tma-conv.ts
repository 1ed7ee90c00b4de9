// The TMA-fed GEMM over implicit-im2col convolutions (codegen/quant-tma-conv.ts) as timed-tactic candidates of a
// QConv (ops-quant.ts layerGemm): the launch passes the input's im2col tensor map and the weights' 2-D map by value.
import type { CudaDevice } from './device.js';
import { encodeTensorMap2d, encodeTensorMapIm2col } from './ffi/driver.js';
import { qconvTma, tmaConvUnsupported, type TmaConvKernelSource, type TmaIm2colMap } from './codegen/quant-tma-conv.js';
import type { QGemmArgs } from './codegen/quant.js';
import { tmaCandidate, type TmaCandidate } from './ops-quant-tma.js';

/**
 * Tiles offered for convolutions (a subset of the plain GEMM's: ops-quant-tma.ts TMA_CANDIDATES / TMA_PP_CANDIDATES):
 * [BM, BN, blocks per SM, persistent ping-pong]. KILN_QGEMM=tma-conv forces the first; KILN_QTMACONV=0 leaves them out.
 */
export const TMA_CONV_CANDIDATES = [[128, 128, 2, false], [128, 64, 3, false], [64, 128, 3, false], [64, 128, 1, true], [64, 64, 2, true]] as const;

/** The TMA convolution candidates for a layer, or none: not Hopper, not an implicit-im2col QConv with C % 128 == 0, ... */
export function tmaConvCandidates(dev: CudaDevice, args: QGemmArgs, sc: number): (() => TmaCandidate)[] {
  if (dev.info.sm !== 90 || process.env.KILN_QTMACONV === '0' || tmaConvUnsupported(args) || args.K % 16 !== 0 || args.N % 8 !== 0
    || (args.splitK ?? 1) > 1 || args.persistent || args.qresidual || args.heads) return [];
  const g = { ...args, staged: true, wgmma: true };
  return TMA_CONV_CANDIDATES.map(([BM, BN, occupancy, pp]) => () => candidate(dev, qconvTma({ ...g, tile: { BM, BN }, occupancy }, pp ? { persistent: dev.info.smCount } : {}), sc));
}

function candidate(dev: CudaDevice, k: TmaConvKernelSource, sc: number): TmaCandidate {
  const [a, b] = k.tma;
  return tmaCandidate(dev, k, sc, (x, w) => [encodeIm2col(x, a), encodeTensorMap2d(w, b.rows, b.cols, b.boxRows, b.boxCols, b.swizzle)]);
}

/**
 * An im2col tensor map (CUtensorMap, 128 bytes) over the NHWC uint8 tensor at `addr`: dims [C, W, H, N] innermost
 * first, window corners in [lower, dim - 1 + upper] per spatial dim walked with `strides`, `channels` bytes per pixel
 * and `pixels` pixels per load, the given swizzle, 256-byte L2 promotion, zeros outside the tensor. As the bytes a
 * kernel takes by value (see encodeTensorMap2d).
 */
export function encodeIm2col(addr: number | bigint, t: TmaIm2colMap): Buffer {
  if (BigInt(addr) % 16n !== 0n || t.C % 16 !== 0) throw new Error(`im2col tensor map: the copy engine needs a 16-byte aligned address and pixel pitch, got address 0x${BigInt(addr).toString(16)} and ${t.C}-byte pixels`);
  // byte strides of W, H and N (the channel dim is contiguous)
  return encodeTensorMapIm2col(addr, [t.C, t.W, t.H, t.N], [t.C, t.W * t.C, t.H * t.W * t.C], t.lower, t.upper, t.channels, t.pixels, [1, t.strides[0], t.strides[1], 1], t.swizzle);
}
