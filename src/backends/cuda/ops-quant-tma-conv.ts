// The TMA-fed GEMM over implicit-im2col convolutions (codegen/quant-tma-conv.ts) as timed-tactic candidates of a
// QConv (ops-quant.ts layerGemm): the launch passes the input's im2col tensor map and the weights' 2-D map by value.
import type { CudaDevice } from './device.js';
import { check, encodeTensorMap2d, koffi } from './ffi/driver.js';
import { loadLibrary } from './ffi/libs.js';
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

let encodeFn: ((...args: unknown[]) => number) | undefined;

/**
 * An im2col tensor map (CUtensorMap, 128 bytes) over the NHWC uint8 tensor at `addr`: dims [C, W, H, N] innermost
 * first, window corners in [lower, dim - 1 + upper] per spatial dim walked with `strides`, `channels` bytes per pixel
 * and `pixels` pixels per load, the given swizzle, 256-byte L2 promotion, zeros outside the tensor. As the bytes a
 * kernel takes by value (see encodeTensorMap2d).
 */
export function encodeIm2col(addr: number | bigint, t: TmaIm2colMap): Buffer {
  if (BigInt(addr) % 16n !== 0n || t.C % 16 !== 0) throw new Error(`im2col tensor map: the copy engine needs a 16-byte aligned address and pixel pitch, got address 0x${BigInt(addr).toString(16)} and ${t.C}-byte pixels`);
  encodeFn ??= loadLibrary('the CUDA driver', ['libcuda.so.1', 'libcuda.so']).func(
    'int cuTensorMapEncodeIm2col(uint64_t map, int dtype, unsigned int rank, uint64_t addr, const uint64_t *dims, const uint64_t *strides, const int *lower, const int *upper, unsigned int channels, unsigned int pixels, const uint32_t *elementStrides, int interleave, int swizzle, int l2Promotion, int oobFill)',
  ) as (...args: unknown[]) => number;
  const k = koffi();
  const scratch = k.alloc('uint8_t', 192);
  try {
    const at = k.address(scratch), aligned = (at + 63n) & ~63n;
    const u64 = (v: number[]) => new BigUint64Array(v.map(BigInt));
    // byte strides of W, H and N (the channel dim is contiguous)
    check(encodeFn(aligned, 0 /* UINT8 */, 4, BigInt(addr), u64([t.C, t.W, t.H, t.N]), u64([t.C, t.W * t.C, t.H * t.W * t.C]),
      new Int32Array(t.lower), new Int32Array(t.upper), t.channels, t.pixels, new Uint32Array([1, t.strides[0], t.strides[1], 1]), 0, t.swizzle, 3 /* L2 256B */, 0), 'cuTensorMapEncodeIm2col');
    const off = Number(aligned - at);
    return Buffer.from(Buffer.from(k.view(scratch, 192)).subarray(off, off + 128));
  } finally {
    k.free(scratch);
  }
}
