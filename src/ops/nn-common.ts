// Helpers shared by the nn operator files: float storage selection, Conv attribute handling, matmul planning and
// requantization rounding.
import type { Dim } from '../ir/graph.js';
import { attr } from '../ir/schema.js';
import { TensorData } from '../ir/tensor.js';
import { intRange, isInteger, type DType } from '../ir/dtype.js';
import { broadcastDims, broadcastIndex, broadcastShapes, prod } from './util.js';
import { gemm, rowMajor, type FloatArray } from './nn-gemm.js';
import { inferWindowDims, type WindowAttrs } from './nn-window.js';

/** Float storage to compute on: the float32 array itself on the hot path, else decoded float64. */
export function floats(t: TensorData, f32: boolean): FloatArray {
  if (f32) return t.dtype === 'float32' ? (t.data as Float32Array) : Float32Array.from(t.toFloat64());
  return t.toFloat64();
}

/** Wrap a computed float buffer as a tensor of `dtype` (float32 buffers are adopted without a copy). */
export function fromFloats(dtype: DType, dims: readonly number[], y: FloatArray): TensorData {
  if (dtype === 'float32' && y instanceof Float32Array) return new TensorData(dtype, dims, y);
  return TensorData.fromNumbers(dtype, dims, y);
}

export function requireRank(t: TensorData, min: number, what: string): void {
  if (t.rank < min) throw new Error(`${what} should have rank >= ${min} (N, C, spatial...), found shape [${t.dims.join(', ')}]`);
}

export const convAttrs = {
  auto_pad: attr.string('NOTSET'), dilations: attr.ints(), group: attr.int(1), kernel_shape: attr.ints(), pads: attr.ints(),
  strides: attr.ints(),
};
export type ConvAttrs = { auto_pad: string; dilations?: number[]; group: number; kernel_shape?: number[]; pads?: number[]; strides?: number[] };

export function windowAttrs(a: ConvAttrs, kernel: number[], ceil = false): WindowAttrs {
  return { kernel, strides: a.strides, dilations: a.dilations, pads: a.pads, autoPad: a.auto_pad, ceilMode: ceil };
}

/** Kernel spatial dims from W (checked against kernel_shape when both are present). */
export function convKernel(w: TensorData, a: ConvAttrs): number[] {
  const k = w.dims.slice(2);
  if (a.kernel_shape && a.kernel_shape.length && a.kernel_shape.join() !== k.join()) {
    throw new Error(`kernel_shape [${a.kernel_shape}] does not match W's spatial dims [${k}]`);
  }
  return k;
}

export function checkConvRanks(x: TensorData, w: TensorData, what = 'W'): void {
  requireRank(x, 3, 'X');
  if (w.rank !== x.rank) throw new Error(`${what} should have the rank of X (${x.rank}), found shape [${w.dims.join(', ')}]`);
}

/** Conv-family output shape for inference: [N, channels, ...spatial]. */
export function inferConvShape(x: Dim[] | undefined, w: Dim[] | undefined, a: ConvAttrs, channels: (w: Dim[]) => Dim): Dim[] | undefined {
  const rank = x?.length ?? w?.length;
  if (rank === undefined) return undefined;
  const kernel = a.kernel_shape?.length ? a.kernel_shape : w?.slice(2);
  const inSpatial = x ? x.slice(2) : new Array<Dim>(rank - 2).fill(undefined);
  const spatial = kernel && kernel.every((k) => typeof k === 'number')
    ? inferWindowDims(inSpatial, windowAttrs(a, kernel as number[])) : inSpatial.map(() => undefined);
  return [x?.[0], w ? channels(w) : undefined, ...spatial];
}

export interface MatMulPlan {
  batch: number[];
  M: number;
  K: number;
  N: number;
  outDims: number[];
  /** Per output batch: index of the A and B matrix (null = identity). */
  aIdx: Int32Array | null;
  bIdx: Int32Array | null;
  /** A's batch can be folded into M (B has no batch dims). */
  fold: boolean;
}

/** numpy matmul shape rules: 1-D promotion, batch broadcasting. */
export function planMatMul(aDims: readonly number[], bDims: readonly number[]): MatMulPlan {
  if (aDims.length === 0 || bDims.length === 0) throw new Error('MatMul inputs must have rank >= 1, found a scalar');
  const a = aDims.length === 1 ? [1, aDims[0]] : [...aDims];
  const b = bDims.length === 1 ? [bDims[0], 1] : [...bDims];
  const [M, K] = a.slice(-2), [K2, N] = b.slice(-2);
  if (K !== K2) throw new Error(`inner dimensions differ: A is [${aDims.join(', ')}], B is [${bDims.join(', ')}]`);
  const aB = a.slice(0, -2), bB = b.slice(0, -2);
  const batch = broadcastShapes(aB, bB);
  const [aIdx, bIdx] = broadcastIndex([aB, bB], batch);
  const outDims = [...batch];
  if (aDims.length > 1) outDims.push(M);
  if (bDims.length > 1) outDims.push(N);
  return { batch, M, K, N, outDims, aIdx, bIdx, fold: bB.length === 0 };
}

/** Y (zero-filled, [batch, M, N]) += A . B over float arrays per the plan. */
export function runMatMul(p: MatMulPlan, a: FloatArray, b: FloatArray, y: FloatArray): void {
  const { M, K, N } = p;
  const nb = prod(p.batch);
  if (p.fold) {
    gemm(nb * M, N, K, rowMajor(a, 0, K), rowMajor(b, 0, N), y, 0, N);
    return;
  }
  for (let i = 0; i < nb; i++) {
    const ai = p.aIdx ? p.aIdx[i] : i, bi = p.bIdx ? p.bIdx[i] : i;
    gemm(M, N, K, rowMajor(a, ai * M * K, K), rowMajor(b, bi * K * N, N), y, i * M * N, N);
  }
}

/** Shape inference for numpy matmul with symbolic dims. */
export function inferMatMulShape(a: Dim[] | undefined, b: Dim[] | undefined): Dim[] | undefined {
  if (!a || !b || a.length === 0 || b.length === 0) return undefined;
  const aa = a.length === 1 ? [1, a[0]] : a, bb = b.length === 1 ? [b[0], 1] : b;
  const batch = broadcastDims(aa.slice(0, -2), bb.slice(0, -2));
  if (!batch) return undefined;
  const out = [...batch];
  if (a.length > 1) out.push(aa[aa.length - 2]);
  if (b.length > 1) out.push(bb[bb.length - 1]);
  return out;
}

/** Round half to even. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Clamp to an integer type's range (values of other types pass through). */
export function saturate(dtype: DType, v: number): number {
  if (!isInteger(dtype)) return v;
  const [lo, hi] = intRange(dtype);
  return v < lo ? lo : v > hi ? hi : v;
}
