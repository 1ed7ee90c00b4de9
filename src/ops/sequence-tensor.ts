// Axis-wise tensor plumbing shared by the sequence and control-flow kernels: taking one slice along an axis,
// stacking slices along a new axis, concatenating and splitting. Works for every storage type (typed arrays and
// string[]), copying contiguous runs.
import type { TensorStorage, TypedArray } from '../ir/dtype.js';
import { TensorData, sameDims } from '../ir/tensor.js';
import { normAxis, prod } from './util.js';

/** Copy n elements of src starting at srcOff into dst at dstOff. */
export function copyRange(src: TensorStorage, srcOff: number, dst: TensorStorage, dstOff: number, n: number): void {
  if (n <= 0) return;
  if (Array.isArray(src)) {
    const d = dst as string[];
    for (let i = 0; i < n; i++) d[dstOff + i] = src[srcOff + i];
    return;
  }
  (dst as TypedArray).set((src as TypedArray).subarray(srcOff, srcOff + n) as never, dstOff);
}

function elemWidth(t: TensorData): number {
  // complex tensors store (re, im) pairs
  return t.data.length === t.size ? 1 : 2;
}

/** The slice t[..., index, ...] along `axis`, with that axis removed. */
export function sliceAxis(t: TensorData, axis: number, index: number): TensorData {
  const dims = t.dims;
  if (!(index >= 0 && index < dims[axis])) throw new Error(`index ${index} is out of range for axis ${axis} of size ${dims[axis]}`);
  const outer = prod(dims, 0, axis), len = dims[axis], w = elemWidth(t);
  const inner = prod(dims, axis + 1) * w;
  const outDims = [...dims.slice(0, axis), ...dims.slice(axis + 1)];
  const out = TensorData.zeros(t.dtype, outDims);
  for (let o = 0; o < outer; o++) copyRange(t.data, (o * len + index) * inner, out.data, o * inner, inner);
  return out;
}

/** Stack equally shaped tensors along a new axis `axis` (0..rank). `what` names the items in errors. */
export function stackAxis(items: readonly TensorData[], axis: number, what = 'item'): TensorData {
  if (items.length === 0) throw new Error(`cannot stack an empty list of ${what}s`);
  const first = items[0];
  for (let i = 1; i < items.length; i++) {
    const t = items[i];
    if (t.dtype !== first.dtype || !sameDims(t.dims, first.dims)) {
      throw new Error(`${what} ${i} is ${t.dtype}[${t.dims.join(', ')}] but ${what} 0 is ` +
        `${first.dtype}[${first.dims.join(', ')}]; all must match`);
    }
  }
  const outer = prod(first.dims, 0, axis), inner = prod(first.dims, axis) * elemWidth(first), n = items.length;
  const out = TensorData.zeros(first.dtype, [...first.dims.slice(0, axis), n, ...first.dims.slice(axis)]);
  for (let k = 0; k < n; k++) {
    const src = items[k].data;
    for (let o = 0; o < outer; o++) copyRange(src, o * inner, out.data, (o * n + k) * inner, inner);
  }
  return out;
}

/** Concatenate tensors along an existing axis (already normalized). */
export function concatAxis(items: readonly TensorData[], axis: number, what = 'item'): TensorData {
  if (items.length === 0) throw new Error(`cannot concatenate an empty list of ${what}s`);
  const first = items[0];
  const rank = first.rank;
  let total = 0;
  items.forEach((t, i) => {
    const ok = t.dtype === first.dtype && t.rank === rank && t.dims.every((d, j) => j === axis || d === first.dims[j]);
    if (!ok) {
      throw new Error(`${what} ${i} is ${t.dtype}[${t.dims.join(', ')}], which cannot be concatenated on axis ${axis} with ` +
        `${what} 0 (${first.dtype}[${first.dims.join(', ')}])`);
    }
    total += t.dims[axis];
  });
  const outer = prod(first.dims, 0, axis), inner = prod(first.dims, axis + 1) * elemWidth(first);
  const outDims = [...first.dims];
  outDims[axis] = total;
  const out = TensorData.zeros(first.dtype, outDims);
  const row = total * inner;
  let off = 0;
  for (const t of items) {
    const chunk = t.dims[axis] * inner;
    for (let o = 0; o < outer; o++) copyRange(t.data, o * chunk, out.data, o * row + off, chunk);
    off += chunk;
  }
  return out;
}

/** Split along `axis` into parts of the given lengths (which must sum to the axis size). */
export function splitAxis(t: TensorData, axis: number, lengths: readonly number[]): TensorData[] {
  const len = t.dims[axis];
  const w = elemWidth(t);
  const outer = prod(t.dims, 0, axis), inner = prod(t.dims, axis + 1) * w;
  const parts: TensorData[] = [];
  let start = 0;
  for (const l of lengths) {
    const dims = [...t.dims];
    dims[axis] = l;
    const out = TensorData.zeros(t.dtype, dims);
    for (let o = 0; o < outer; o++) copyRange(t.data, (o * len + start) * inner, out.data, o * l * inner, l * inner);
    parts.push(out);
    start += l;
  }
  return parts;
}

/** Normalize an axis for stacking into a result of rank `rank + 1`. */
export function normNewAxis(axis: number, rank: number, what = 'axis'): number {
  return normAxis(axis, rank + 1, what);
}
