// Helpers shared by the reduction and normalization kernels: float views of tensors, [outer, n, inner] splits
// around an axis, transposition, and the reduction planner (which axes collapse, and how the data is laid out).
import type { Dim } from '../ir/graph.js';
import type { DType, TypedArray } from '../ir/dtype.js';
import { TensorData, MAX_ELEMENTS, stridesOf } from '../ir/tensor.js';
import { normAxis, prod } from './util.js';

export type FloatArr = Float32Array | Float64Array;

/** The elements of a numeric tensor as floats: the tensor's own array for float32/float64, else decoded. */
export function floatData(t: TensorData): FloatArr {
  if (t.dtype === 'float32') return t.data as Float32Array;
  if (t.dtype === 'float64') return t.data as Float64Array;
  return t.toFloat64();
}

/** Wrap computed floats as a tensor of `dtype`, rounding once (no copy when the array already has that type). */
export function floatTensor(dtype: DType, dims: readonly number[], values: FloatArr): TensorData {
  if ((dtype === 'float32' && values instanceof Float32Array) || (dtype === 'float64' && values instanceof Float64Array)) {
    return new TensorData(dtype, dims, values);
  }
  return TensorData.fromNumbers(dtype, dims, values);
}

/** A new output array for computing `n` floats that end up as `dtype` (float32 is written directly). */
export function floatOut(dtype: DType, n: number): FloatArr {
  if (n > MAX_ELEMENTS) throw new Error(`refusing to allocate ${n} elements (limit ${MAX_ELEMENTS})`);
  return dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
}

/** View `dims` as [outer, n, inner] around `axis`. */
export function splitAxis(dims: readonly number[], axis: number): [number, number, number] {
  return [prod(dims, 0, axis), dims[axis] ?? 1, prod(dims, axis + 1)];
}

/** Transpose a tensor: output axis i is input axis perm[i]. */
export function transposeData(t: TensorData, perm: readonly number[]): TensorData {
  const rank = t.rank;
  const outDims = perm.map((p) => t.dims[p]);
  const out = TensorData.zeros(t.dtype, outDims);
  const src = t.data as TypedArray, dst = out.data as TypedArray;
  const inStrides = stridesOf(t.dims);
  const st = perm.map((p) => inStrides[p]);
  const n = out.size;
  if (n === 0) return out;
  // copy one output row (the last output axis) per odometer step
  const last = rank - 1, len = rank ? outDims[last] : 1, ls = rank ? st[last] : 0;
  const counter = new Array<number>(rank).fill(0);
  let off = 0;
  for (let i = 0; i < n; i += len) {
    for (let k = 0; k < len; k++) dst[i + k] = src[off + k * ls];
    for (let d = last - 1; d >= 0; d--) {
      counter[d]++;
      off += st[d];
      if (counter[d] < outDims[d]) break;
      off -= st[d] * outDims[d];
      counter[d] = 0;
    }
  }
  return out;
}

/** Normalize a list of axes (possibly negative) against `rank`, rejecting duplicates. */
export function normAxes(axes: readonly number[], rank: number): number[] {
  const r = axes.map((a) => normAxis(a, rank, 'reduction axis'));
  if (new Set(r).size !== r.length) throw new Error(`axes [${axes.join(', ')}] contain a duplicate`);
  return r;
}

export interface ReducePlan {
  outDims: number[];
  /** The data to reduce, laid out as [outer, r, inner]; the output is [outer, inner] in order. */
  data: TensorData;
  outer: number;
  r: number;
  inner: number;
}

/**
 * Plan a reduction of `t` over `axes` (already normalized). Contiguous reduced axes are reduced in place; other
 * patterns transpose the kept axes to the front first (a linear copy).
 */
export function planReduce(t: TensorData, axes: readonly number[], keepdims: boolean): ReducePlan {
  const red = new Array<boolean>(t.rank).fill(false);
  for (const a of axes) red[a] = true;
  const outDims: number[] = [];
  t.dims.forEach((d, i) => {
    if (!red[i]) outDims.push(d);
    else if (keepdims) outDims.push(1);
  });
  // blocks of adjacent axes with the same role, ignoring size-1 axes (they do not affect the layout)
  const blocks: { size: number; red: boolean }[] = [];
  t.dims.forEach((d, i) => {
    if (d === 1) return;
    const last = blocks[blocks.length - 1];
    if (last && last.red === red[i]) last.size *= d;
    else blocks.push({ size: d, red: red[i] });
  });
  const nRed = blocks.filter((b) => b.red).length;
  if (nRed === 0) return { outDims, data: t, outer: t.size, r: 1, inner: 1 };
  if (nRed === 1) {
    const k = blocks.findIndex((b) => b.red);
    const outer = blocks.slice(0, k).reduce((p, b) => p * b.size, 1);
    const inner = blocks.slice(k + 1).reduce((p, b) => p * b.size, 1);
    return { outDims, data: t, outer, r: blocks[k].size, inner };
  }
  const kept = t.dims.map((_, i) => i).filter((i) => !red[i]);
  const perm = [...kept, ...t.dims.map((_, i) => i).filter((i) => red[i])];
  return { outDims, data: transposeData(t, perm), outer: prod(kept.map((i) => t.dims[i])), r: prod(axes.map((a) => t.dims[a])), inner: 1 };
}

/** Output shape of a reduction for inference (undefined entries where unknown). */
export function inferReduceShape(shape: Dim[] | undefined, axes: number[] | undefined, keepdims: boolean, noop: boolean): Dim[] | undefined {
  if (!shape) return undefined;
  if (axes === undefined) return keepdims ? shape.map(() => undefined) : undefined;
  if (axes.length === 0) return noop ? shape : keepdims ? shape.map(() => 1) : [];
  const red = new Set(normAxes(axes, shape.length));
  const out: Dim[] = [];
  shape.forEach((d, i) => {
    if (!red.has(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}

export type SoftMode = 'softmax' | 'log' | 'hard';

/** Softmax-like map over the middle axis of [outer, n, inner]; computed in float64, written once. */
export function softmaxRows(x: FloatArr, out: FloatArr, outer: number, n: number, inner: number, mode: SoftMode): void {
  const row = new Float64Array(n);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * n * inner + i;
      // the contiguous case (inner = 1, the last axis) is the hot one: keep its loops free of strides
      if (inner === 1) softmaxRow(x, out, base, n, mode, row);
      else {
        for (let k = 0; k < n; k++) row[k] = x[base + k * inner];
        softmaxRow(row, row, 0, n, mode, row);
        for (let k = 0; k < n; k++) out[base + k * inner] = row[k];
      }
    }
  }
}

/** One softmax row at x[base..base+n) into out; `tmp` (n floats) may alias x and out only when base is 0. */
function softmaxRow(x: FloatArr, out: FloatArr, base: number, n: number, mode: SoftMode, tmp: Float64Array): void {
  let m = -Infinity, arg = 0;
  for (let k = 0; k < n; k++) {
    const v = x[base + k];
    if (v > m || v !== v) { m = v; arg = k; if (v !== v) break; }
  }
  if (mode === 'hard') {
    for (let k = 0; k < n; k++) out[base + k] = k === arg ? 1 : 0;
    return;
  }
  let s = 0;
  if (mode === 'softmax') {
    for (let k = 0; k < n; k++) {
      const e = Math.exp(x[base + k] - m);
      tmp[k] = e;
      s += e;
    }
    const inv = 1 / s;
    for (let k = 0; k < n; k++) out[base + k] = tmp[k] * inv;
  } else {
    for (let k = 0; k < n; k++) s += Math.exp(x[base + k] - m);
    const shift = m + Math.log(s);
    for (let k = 0; k < n; k++) out[base + k] = x[base + k] - shift;
  }
}
