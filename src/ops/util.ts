// Small helpers shared by the reference kernels and their shape inference.
import type { Dim, ValueType } from '../ir/graph.js';
import type { DType } from '../ir/dtype.js';
import { TensorData, stridesOf } from '../ir/tensor.js';

/** Normalize a possibly negative axis against `rank`, with a clear error when out of range. */
export function normAxis(axis: number, rank: number, what = 'axis'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!(a >= 0 && a < Math.max(rank, 1))) throw new Error(`${what} ${axis} is out of range for a tensor of rank ${rank}`);
  return a;
}

/** Numpy-style broadcast of several shapes. */
export function broadcastShapes(...shapes: (readonly number[])[]): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i];
      if (d === out[o] || d === 1) continue;
      if (out[o] === 1) out[o] = d;
      else throw new Error(`shapes ${shapes.map((x) => `[${x.join(',')}]`).join(' and ')} cannot be broadcast together`);
    }
  }
  return out;
}

/** Strides of `shape` viewed as broadcast to `out` (0 along broadcast dimensions). */
export function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const st = stridesOf(shape);
  const r = new Array<number>(out.length).fill(0);
  for (let i = 0; i < shape.length; i++) {
    const o = out.length - shape.length + i;
    r[o] = shape[i] === 1 && out[o] !== 1 ? 0 : st[i];
  }
  return r;
}

/**
 * For each output element of the broadcast of `shapes`, the flat index into each input. Returned as one
 * Int32Array per input (fast path for the common "same shape" case returns null for that input).
 */
export function broadcastIndex(shapes: (readonly number[])[], out: readonly number[]): (Int32Array | null)[] {
  const n = out.reduce((a, b) => a * b, 1);
  return shapes.map((s) => {
    const same = s.length === out.length && s.every((d, i) => d === out[i]);
    if (same) return null;
    const st = broadcastStrides(s, out);
    const idx = new Int32Array(n);
    const rank = out.length;
    const counter = new Array<number>(rank).fill(0);
    let off = 0;
    for (let i = 0; i < n; i++) {
      idx[i] = off;
      for (let d = rank - 1; d >= 0; d--) {
        counter[d]++;
        off += st[d];
        if (counter[d] < out[d]) break;
        off -= st[d] * out[d];
        counter[d] = 0;
      }
    }
    return idx;
  });
}

/** Broadcast of static shapes with symbolic/unknown dims, for inference. */
export function broadcastDims(...shapes: (Dim[] | undefined)[]): Dim[] | undefined {
  if (shapes.some((s) => s === undefined)) return undefined;
  const ss = shapes as Dim[][];
  const rank = Math.max(0, ...ss.map((s) => s.length));
  const out: Dim[] = new Array(rank).fill(1);
  for (const s of ss) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i];
      if (d === 1) continue;
      if (out[o] === 1) out[o] = d;
      else if (d !== out[o]) out[o] = typeof d === 'number' && typeof out[o] === 'number' ? (() => { throw new Error(`cannot broadcast dimension ${out[o]} with ${d}`); })() : undefined;
    }
  }
  return out;
}

/** The static type of input i if it is a tensor. */
export function tensorTypeOf(t: ValueType | undefined): { dtype: DType; shape?: Dim[] } | undefined {
  return t && t.kind === 'tensor' ? t : undefined;
}

/** Map every element through `f` (computed in float64), producing `outType` (default: input's type). */
export function mapUnary(t: TensorData, f: (x: number) => number, outType: DType = t.dtype): TensorData {
  const x = t.toFloat64();
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = f(x[i]);
  return TensorData.fromNumbers(outType, t.dims, y);
}

/** Broadcasting binary map computed in float64. */
export function mapBinary(a: TensorData, b: TensorData, f: (x: number, y: number) => number, outType: DType = a.dtype): TensorData {
  const dims = broadcastShapes(a.dims, b.dims);
  const [ia, ib] = broadcastIndex([a.dims, b.dims], dims);
  const x = a.toFloat64(), y = b.toFloat64();
  const n = dims.reduce((p, q) => p * q, 1);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = f(x[ia ? ia[i] : i], y[ib ? ib[i] : i]);
  return TensorData.fromNumbers(outType, dims, out);
}

/** Product of dims[from..to). */
export function prod(dims: readonly number[], from = 0, to = dims.length): number {
  let p = 1;
  for (let i = from; i < to; i++) p *= dims[i];
  return p;
}
