// The TMA-fed quantized GEMM (codegen/quant-tma.ts) as timed-tactic candidates of a quantized layer (ops-quant.ts
// layerGemm): its launch passes two tensor maps by value in place of the operand pointers.
import type { CudaDevice } from './device.js';
import { encodeTensorMap2d } from './ffi/driver.js';
import { qgemmTma, type TmaKernelSource } from './codegen/quant-tma.js';
import type { QGemmArgs } from './codegen/quant.js';
import type { KernelSource } from './codegen/types.js';

/** The shape of ops-quant.ts' candidates: out2 / out3 are the second (and a head split's third) outputs. */
export interface TmaCandidate {
  kernels: KernelSource[];
  ready(): void;
  run(x: number, w: number, res: number, out: number, stream: unknown, out2?: number, out3?: number): void;
  destroy(): void;
}

/**
 * Tiles offered to the tactic (bench/quant/gpu-layers.js main, H100: each won on some BERT-base or ResNet-50 GEMM
 * shape): [BM, BN, blocks per SM, blocks per cluster]. The first is KILN_QGEMM=tma's, the first clustered one
 * KILN_QGEMM=tma-cluster's.
 */
export const TMA_CANDIDATES = [[128, 128, 2, 1], [128, 64, 3, 1], [64, 128, 3, 1], [64, 128, 2, 1], [64, 64, 3, 1], [128, 128, 2, 2], [64, 128, 2, 2]] as const;

/**
 * The persistent ping-pong kernel's tiles (qgemmTma's `persistent`), offered after TMA_CANDIDATES (saved choices keep
 * their indices): [BM, BN, blocks per SM]. KILN_QTMA=pp offers these alone (so KILN_QGEMM=tma forces the first),
 * KILN_QTMA=nopp leaves them out (same-run before / after).
 */
export const TMA_PP_CANDIDATES = [[64, 128, 1], [64, 64, 1], [64, 64, 2]] as const;

/**
 * The TMA kernel's candidates for a layer, or none where it does not apply: not Hopper, implicit im2col, fp8, a ragged
 * row pitch (K % 16) or channel count (N % 8: the staged epilogue), split-K or persistent grids, an 8-bit residual.
 */
export function tmaCandidates(dev: CudaDevice, args: QGemmArgs, sc: number): (() => TmaCandidate)[] {
  if (dev.info.sm !== 90 || args.conv || args.a === 'fp8' || args.K % 16 !== 0 || args.N % 8 !== 0 || (args.splitK ?? 1) > 1 || args.persistent || args.qresidual) return [];
  const g = { ...args, staged: true, wgmma: true };
  const pp = TMA_PP_CANDIDATES.map(([BM, BN, occupancy]) => () => candidate(dev, qgemmTma({ ...g, tile: { BM, BN }, occupancy }, { persistent: dev.info.smCount }), sc));
  if (process.env.KILN_QTMA === 'pp') return pp;
  const tiles = TMA_CANDIDATES.map(([BM, BN, occupancy, cluster]) => () => candidate(dev, qgemmTma({ ...g, tile: { BM, BN }, occupancy }, { cluster }), sc));
  return process.env.KILN_QTMA === 'nopp' ? tiles : [...tiles, ...pp];
}

function candidate(dev: CudaDevice, k: TmaKernelSource, sc: number): TmaCandidate {
  return tmaCandidate(dev, k, sc, (x, w) => k.tma.map((t) => encodeTensorMap2d(t.operand === 0 ? x : w, t.rows, t.cols, t.boxRows, t.boxCols, t.swizzle)));
}

/**
 * A TMA kernel as a candidate: `maps(x, w)` encodes its tensor maps (passed by value, parameters 0 and 1) over the
 * operands. They are kept per operand pair: a plan's buffers stay put, so this holds one entry per context (encoded
 * at its eager run; a captured graph keeps the parameter bytes it was launched with).
 */
export function tmaCandidate(dev: CudaDevice, k: KernelSource, sc: number, maps: (x: number, w: number) => Buffer[]): TmaCandidate {
  const held = new Map<string, Buffer[]>();
  return {
    kernels: [k],
    ready: () => { dev.kernel(k); },
    run: (x, w, res, out, stream, out2 = 0, out3 = 0) => {
      const key = `${x}:${w}`;
      let m = held.get(key);
      if (!m) {
        if (held.size >= 64) held.clear();
        m = maps(x, w);
        held.set(key, m);
      }
      const ptrs = k.params.map((p) => (p.kind === 'ws' ? sc : p.kind === 'out' ? [out, out2, out3][p.index] : p.index < 2 ? m[p.index] : res));
      dev.launch(k, ptrs, stream);
    },
    destroy: () => held.clear(),
  };
}
