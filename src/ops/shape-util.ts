// Data-movement primitives shared by the shape family. These ops never decode elements: they copy storage slots
// (float16 bit patterns, bigints, strings...) from one array to another, so every element type works unchanged.
import type { Dim, ValueType } from '../ir/graph.js';
import { type DType, type TensorStorage, type TypedArray, dtypeKind, encodeElement } from '../ir/dtype.js';
import { TensorData, stridesOf } from '../ir/tensor.js';
import type { InferContext } from '../ir/schema.js';

/** Storage viewed as a plain indexable array (slot copies only; the slot type is whatever the dtype stores). */
export const slots = (s: TensorStorage) => s as unknown as unknown[];

/** Storage slots per element: complex types interleave (re, im). */
export const slotWidth = (dtype: DType) => (dtypeKind(dtype) === 'complex' ? 2 : 1);

/** Copy `n` consecutive slots; typed arrays use the native block copy for long runs. */
export function copyBlock(dst: TensorStorage, di: number, src: TensorStorage, si: number, n: number): void {
  if (n > 16 && !Array.isArray(src)) {
    (dst as Float32Array).set((src as Float32Array).subarray(si, si + n), di);
    return;
  }
  const d = slots(dst), s = slots(src);
  for (let k = 0; k < n; k++) d[di + k] = s[si + k];
}

/** The storage value of one element of `dtype` for a JS number (the fill value of Pad, OneHot...). */
export function encodeSlot(dtype: DType, v: number): unknown {
  if (dtype === 'string') return '';
  return encodeElement(dtype, v);
}

/**
 * A strided view copied into a new tensor: output element (i_0..i_k) reads input element
 * offset + sum(i_d * strides[d]) (in elements; strides may be 0 or negative). Linear in the output size: adjacent
 * dimensions that are contiguous in the input are merged and contiguous rows are block-copied. This one primitive
 * implements Transpose, Slice, Expand, Tile, DepthToSpace and SpaceToDepth.
 */
export function stridedCopy(t: TensorData, outDims: readonly number[], strides: readonly number[], offset: number): TensorData {
  const out = TensorData.zeros(t.dtype, outDims);
  if (out.size === 0) return out;
  const w = slotWidth(t.dtype);
  let dims = [...outDims], st = [...strides];
  if (w > 1) {
    dims.push(w);
    st = st.map((s) => s * w);
    st.push(1);
    offset *= w;
  }
  // drop size-1 dims, then merge dims whose input layout is contiguous
  const keep = dims.map((d, i) => d !== 1 || i === dims.length - 1);
  dims = dims.filter((_, i) => keep[i]);
  st = st.filter((_, i) => keep[i]);
  const md: number[] = [], ms: number[] = [];
  for (let i = 0; i < dims.length; i++) {
    const k = md.length - 1;
    if (k >= 0 && ms[k] === st[i] * dims[i]) {
      md[k] *= dims[i];
      ms[k] = st[i];
    } else {
      md.push(dims[i]);
      ms.push(st[i]);
    }
  }
  walkRows(md, ms, offset, (dst, src, n, s) => {
    if (s === 1) copyBlock(out.data, dst, t.data, src, n);
    else {
      const d = slots(out.data), x = slots(t.data);
      for (let k = 0; k < n; k++) d[dst + k] = x[src + k * s];
    }
  });
  return out;
}

/**
 * Call `row(dstOffset, srcOffset, n, innerStride)` for every innermost row of a dense output of `dims`, where the
 * source offset of element (i_0..i_k) is offset + sum(i_d * strides[d]).
 */
function walkRows(dims: number[], strides: number[], offset: number, row: (dst: number, src: number, n: number, s: number) => void) {
  const r = dims.length;
  if (r === 0) {
    row(0, offset, 1, 1);
    return;
  }
  const n = dims[r - 1], s = strides[r - 1];
  const counter = new Array<number>(r - 1).fill(0);
  let rows = 1;
  for (let d = 0; d < r - 1; d++) rows *= dims[d];
  let src = offset;
  for (let i = 0, dst = 0; i < rows; i++, dst += n) {
    row(dst, src, n, s);
    for (let d = r - 2; d >= 0; d--) {
      src += strides[d];
      if (++counter[d] < dims[d]) break;
      src -= strides[d] * dims[d];
      counter[d] = 0;
    }
  }
}

/**
 * Per-axis index maps: output element (i_0..i_k) reads input element (maps[0][i_0], ..., maps[k][i_k]), or the
 * `fill` slot value when any map entry is -1. Used by Pad (all modes) and CenterCropPad.
 */
export function mappedCopy(t: TensorData, maps: Int32Array[], fill: unknown): TensorData {
  const outDims = maps.map((m) => m.length);
  const out = TensorData.zeros(t.dtype, outDims);
  if (out.size === 0) return out;
  const w = slotWidth(t.dtype);
  const inStr = stridesOf(t.dims);
  // per-axis source offsets in slots (-1 = outside)
  const offs = maps.map((m, d) => Int32Array.from(m, (v) => (v < 0 ? -1 : v * inStr[d] * w)));
  const r = outDims.length;
  const d = slots(out.data), x = slots(t.data);
  if (r === 0) {
    for (let k = 0; k < w; k++) d[k] = x[k];
    return out;
  }
  const inner = offs[r - 1];
  const n = inner.length;
  const contiguous = inner.every((v, i) => v >= 0 && v === inner[0] + i * w);
  const counter = new Array<number>(r - 1).fill(0);
  const rows = out.size / n;
  for (let row = 0, dst = 0; row < rows; row++, dst += n * w) {
    let base = 0, outside = false;
    for (let k = 0; k < r - 1; k++) {
      const o = offs[k][counter[k]];
      if (o < 0) outside = true;
      base += o;
    }
    if (outside) {
      for (let k = 0; k < n * w; k++) d[dst + k] = w > 1 ? 0 : fill;
    } else if (contiguous) {
      copyBlock(out.data, dst, t.data, base + inner[0], n * w);
    } else {
      for (let i = 0; i < n; i++) {
        const o = inner[i];
        for (let c = 0; c < w; c++) d[dst + i * w + c] = o < 0 ? (w > 1 ? 0 : fill) : x[base + o + c];
      }
    }
    for (let k = r - 2; k >= 0; k--) {
      if (++counter[k] < outDims[k]) break;
      counter[k] = 0;
    }
  }
  return out;
}

/** Integer values of a small index/shape tensor (int32/int64, or any numeric type), as JS numbers. */
export function intsOf(t: TensorData): number[] {
  return t.toNumberArray().map((v) => Math.trunc(v));
}

/** Normalize index `i` against a dimension of size `n` (negative counts from the end), with a bounds check. */
export function normIndex(i: number, n: number, what = 'index'): number {
  const j = i < 0 ? i + n : i;
  if (!(j >= 0 && j < n)) throw new Error(`${what} ${i} is out of bounds for a dimension of size ${n}`);
  return j;
}

/** Normalize a list of axes against `rank`, rejecting duplicates. */
export function normAxes(axes: readonly number[], rank: number, what = 'axes'): number[] {
  const out = axes.map((a) => {
    const b = a < 0 ? a + rank : a;
    if (!(b >= 0 && b < rank)) throw new Error(`${what} entry ${a} is out of range for rank ${rank}`);
    return b;
  });
  if (new Set(out).size !== out.length) throw new Error(`${what} [${axes.join(', ')}] contains a repeated axis`);
  return out;
}

/** A dense tensor from storage slots already of the right type. */
export function fromSlots(dtype: DType, dims: readonly number[], values: unknown[]): TensorData {
  const t = TensorData.zeros(dtype, dims);
  const d = slots(t.data);
  for (let i = 0; i < values.length; i++) d[i] = values[i];
  return t;
}

/** int64 tensor from JS integers. */
export function int64Tensor(dims: readonly number[], values: ArrayLike<number>): TensorData {
  const t = TensorData.zeros('int64', dims);
  const d = t.data as BigInt64Array;
  for (let i = 0; i < values.length; i++) d[i] = BigInt(values[i]);
  return t;
}

export function isTyped(s: TensorStorage): s is TypedArray {
  return !Array.isArray(s);
}

// ---------------------------------------------------------------------------------------------------------------
// inference helpers

export const UNKNOWN: ValueType = { kind: 'unknown' };

/** Input i's tensor type, or undefined. */
export function inType(ctx: InferContext<unknown>, i: number): { dtype: DType; shape?: Dim[] } | undefined {
  const t = ctx.inputTypes[i];
  return t && t.kind === 'tensor' ? t : undefined;
}

/** A tensor output type; unknown when the dtype is not known. */
export function tensorOut(dtype: DType | undefined, shape?: Dim[]): ValueType {
  return dtype ? { kind: 'tensor', dtype, shape } : UNKNOWN;
}

/** Product of dims, or undefined when any is not a known number. */
export function dimProduct(dims: readonly Dim[]): number | undefined {
  let p = 1;
  for (const d of dims) {
    if (typeof d !== 'number') return undefined;
    p *= d;
  }
  return p;
}

/** Integer values of a constant input, when known. */
export function constInts(ctx: InferContext<unknown>, i: number): number[] | undefined {
  const c = ctx.constant(i);
  return c ? intsOf(c) : undefined;
}
