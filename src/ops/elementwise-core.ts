// Shared machinery of the elementwise family: a broadcasting row walker, unary/binary/comparison engines that
// dispatch on the element type (float32/float64 storage used directly, float16 & co decoded to float64 and rounded
// once, 8..32-bit integers as JS numbers wrapped by the typed-array store, int64/uint64 as exact bigints), and the
// shape inference helpers.
import type { Dim, ValueType } from '../ir/graph.js';
import type { InferContext } from '../ir/schema.js';
import { type DType, dtypeKind, isBig, isEncodedFloat, isSubByte } from '../ir/dtype.js';
import { MAX_ELEMENTS, TensorData } from '../ir/tensor.js';
import { broadcastShapes, broadcastStrides, normAxis, tensorTypeOf } from './util.js';

/** Indexable storage of any element type (typed arrays, bigint arrays, string arrays). */
export type Slots = { [i: number]: any; length: number };

// ---------------------------------------------------------------------------------------------------------------
// broadcasting walk

/**
 * Walks the broadcast of `shapes` to `out` in contiguous output rows. Unit dimensions are dropped and adjacent
 * dimensions that are contiguous for every input are merged, so a same-shape op is one row and "tensor + trailing
 * vector/scalar" is a few long rows. `row(len, o, offs, incs)` gets the row length, its output offset, each input's
 * start offset and each input's step along the row (always 0 or 1). `offs` is reused: read it, don't keep it.
 */
export function broadcastRows(out: readonly number[], shapes: (readonly number[])[],
  row: (len: number, o: number, offs: number[], incs: number[]) => void): void {
  const k = shapes.length;
  let n = 1;
  for (const d of out) n *= d;
  if (n === 0) return;
  const full = shapes.map((s) => broadcastStrides(s, out));
  const sizes: number[] = [];
  const strides: number[][] = [];
  for (let d = out.length - 1; d >= 0; d--) {
    if (out[d] === 1) continue;
    const st = full.map((f) => f[d]);
    const last = sizes.length - 1;
    if (last >= 0 && st.every((s, j) => s === strides[last][j] * sizes[last])) sizes[last] *= out[d];
    else {
      sizes.push(out[d]);
      strides.push(st);
    }
  }
  if (sizes.length === 0) {
    sizes.push(1);
    strides.push(new Array<number>(k).fill(0));
  }
  const len = sizes[0], incs = strides[0], dims = sizes.length;
  const offs = new Array<number>(k).fill(0);
  const counter = new Array<number>(dims).fill(0);
  for (let o = 0; o < n; o += len) {
    row(len, o, offs, incs);
    for (let d = 1; d < dims; d++) {
      const st = strides[d];
      if (++counter[d] < sizes[d]) {
        for (let j = 0; j < k; j++) offs[j] += st[j];
        break;
      }
      counter[d] = 0;
      for (let j = 0; j < k; j++) offs[j] -= st[j] * (sizes[d] - 1);
    }
  }
}

/** out[o] = f(A[ia], B[ib]) over the broadcast of two storages. */
export function map2(dims: readonly number[], aDims: readonly number[], bDims: readonly number[], out: Slots, A: Slots,
  B: Slots, f: (x: any, y: any) => any): void {
  broadcastRows(dims, [aDims, bDims], (len, o, offs, incs) => {
    let ia = offs[0], ib = offs[1];
    const sa = incs[0], sb = incs[1];
    for (let i = 0; i < len; i++, ia += sa, ib += sb) out[o + i] = f(A[ia], B[ib]);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// float32 fast paths for the ops that dominate CNN/transformer graphs

export type FastOp = 'add' | 'sub' | 'mul' | 'div';

function f32Row(op: FastOp, out: Float32Array, o: number, A: Float32Array, ia: number, sa: number, B: Float32Array,
  ib: number, sb: number, n: number): void {
  if (sa === 1 && sb === 1) {
    switch (op) {
      case 'add': for (let i = 0; i < n; i++) out[o + i] = A[ia + i] + B[ib + i]; return;
      case 'sub': for (let i = 0; i < n; i++) out[o + i] = A[ia + i] - B[ib + i]; return;
      case 'mul': for (let i = 0; i < n; i++) out[o + i] = A[ia + i] * B[ib + i]; return;
      case 'div': for (let i = 0; i < n; i++) out[o + i] = A[ia + i] / B[ib + i]; return;
    }
  }
  if (sa === 1) {
    const y = B[ib];
    switch (op) {
      case 'add': for (let i = 0; i < n; i++) out[o + i] = A[ia + i] + y; return;
      case 'sub': for (let i = 0; i < n; i++) out[o + i] = A[ia + i] - y; return;
      case 'mul': for (let i = 0; i < n; i++) out[o + i] = A[ia + i] * y; return;
      case 'div': for (let i = 0; i < n; i++) out[o + i] = A[ia + i] / y; return;
    }
  }
  const x = A[ia];
  if (sb === 1) {
    switch (op) {
      case 'add': for (let i = 0; i < n; i++) out[o + i] = x + B[ib + i]; return;
      case 'sub': for (let i = 0; i < n; i++) out[o + i] = x - B[ib + i]; return;
      case 'mul': for (let i = 0; i < n; i++) out[o + i] = x * B[ib + i]; return;
      case 'div': for (let i = 0; i < n; i++) out[o + i] = x / B[ib + i]; return;
    }
  }
  const y = B[ib];
  out.fill(op === 'add' ? x + y : op === 'sub' ? x - y : op === 'mul' ? x * y : x / y, o, o + n);
}

function f32Binary(op: FastOp, dims: number[], a: TensorData, b: TensorData): TensorData {
  const out = TensorData.zeros('float32', dims);
  const O = out.data as Float32Array, A = a.data as Float32Array, B = b.data as Float32Array;
  broadcastRows(dims, [a.dims, b.dims], (len, o, offs, incs) => f32Row(op, O, o, A, offs[0], incs[0], B, offs[1], incs[1], len));
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// engines

/** Per-storage-class implementations of an elementwise op; a missing one means the type is not supported. */
export interface Kernels<F extends (...a: any[]) => any, B extends (...a: any[]) => any> {
  /** Any float type, computed in float64 (float32/float64 read directly, the others decoded and rounded once). */
  float?: F;
  /** 8..32-bit integers as JS numbers; the typed-array store wraps the result like a C cast. */
  int?: F;
  /** int64/uint64 as bigints; the store wraps to 64 bits. */
  big?: B;
  /** bool as 0/1. */
  bool?: F;
}
export type UnaryKernels = Kernels<(x: number) => number, (x: bigint) => bigint>;
export type BinaryKernels = Kernels<(x: number, y: number) => number, (x: bigint, y: bigint) => bigint> & { fast?: FastOp };

export type StorageClass = 'float' | 'int' | 'big' | 'bool' | 'other';

export function storageClass(dtype: DType): StorageClass {
  if (isBig(dtype)) return 'big';
  if (isSubByte(dtype)) return 'other'; // would need wrapping to 4/2 bits, and no arithmetic op allows these types
  const kind = dtypeKind(dtype);
  if (kind === 'float') return 'float';
  if (kind === 'int' || kind === 'uint') return 'int';
  if (kind === 'bool') return 'bool';
  return 'other';
}

function pick<K extends Kernels<any, any>>(k: K, dtype: DType): K['float'] | K['big'] {
  const c = storageClass(dtype);
  const f = c === 'other' ? undefined : k[c];
  if (!f) throw new Error(`element type ${dtype} is not supported (expected ${supported(k)})`);
  return f;
}

function supported(k: Kernels<any, any>): string {
  const s: string[] = [];
  if (k.float) s.push('a float type');
  if (k.int && k.big) s.push('an integer type');
  else if (k.int) s.push('an integer type of at most 32 bits');
  else if (k.big) s.push('int64/uint64');
  if (k.bool) s.push('bool');
  return s.join(' or ');
}

/** A float64 scratch buffer for `dims`, refusing absurd sizes like TensorData.zeros. */
export function scratch64(dims: readonly number[]): Float64Array {
  const n = dims.reduce((p, q) => p * q, 1);
  if (n > MAX_ELEMENTS) {
    throw new Error(`refusing to allocate ${n} elements for shape [${dims.join(', ')}] (limit ${MAX_ELEMENTS})`);
  }
  return new Float64Array(n);
}

/** Encode float64 results into a tensor of `dtype` (rounding once for float16 & co). */
function fromFloat64(dtype: DType, dims: readonly number[], v: Float64Array): TensorData {
  return dtype === 'float64' ? new TensorData('float64', dims, v) : TensorData.fromNumbers(dtype, dims, v);
}

/** Elementwise unary op; `outType` (default the input's type) may be bool for predicates returning 0/1. */
export function unaryOp(t: TensorData, k: UnaryKernels, outType: DType = t.dtype): TensorData {
  const f = pick(k, t.dtype) as (x: any) => any;
  const n = t.size;
  if (isEncodedFloat(t.dtype)) {
    const x = t.toFloat64(), y = new Float64Array(n);
    for (let i = 0; i < n; i++) y[i] = f(x[i]);
    return fromFloat64(outType, t.dims, y);
  }
  const out = TensorData.zeros(outType, t.dims);
  const X = t.data as Slots, Y = out.data as Slots;
  if (isEncodedFloat(outType)) throw new Error(`unaryOp: cannot store ${t.dtype} results as ${outType}`);
  for (let i = 0; i < n; i++) Y[i] = f(X[i]);
  return out;
}

export function sameTypes(tensors: TensorData[]): DType {
  const dt = tensors[0].dtype;
  for (const t of tensors) {
    if (t.dtype !== dt) {
      throw new Error(`expected all inputs to have the same element type, found ${tensors.map((x) => x.dtype).join(', ')}`);
    }
  }
  return dt;
}

/** Broadcasting binary op whose output has the inputs' (common) element type. */
export function binaryOp(a: TensorData, b: TensorData, k: BinaryKernels): TensorData {
  const dt = sameTypes([a, b]);
  const dims = broadcastShapes(a.dims, b.dims);
  if (k.fast && dt === 'float32') return f32Binary(k.fast, dims, a, b);
  const f = pick(k, dt) as (x: any, y: any) => any;
  if (isEncodedFloat(dt)) {
    const out = scratch64(dims);
    map2(dims, a.dims, b.dims, out, a.toFloat64(), b.toFloat64(), f);
    return fromFloat64(dt, dims, out);
  }
  const out = TensorData.zeros(dt, dims);
  map2(dims, a.dims, b.dims, out.data as Slots, a.data as Slots, b.data as Slots, f);
  return out;
}

/** Broadcasting comparison producing bool; works on numbers, bigints (exact) and strings alike. */
export function compareOp(a: TensorData, b: TensorData, cmp: (x: any, y: any) => boolean, strings = false): TensorData {
  const dt = sameTypes([a, b]);
  if (dt === 'string' ? !strings : storageClass(dt) === 'other') {
    throw new Error(`element type ${dt} is not supported by this comparison`);
  }
  const dims = broadcastShapes(a.dims, b.dims);
  const out = TensorData.zeros('bool', dims);
  const decode = isEncodedFloat(dt);
  const A = decode ? a.toFloat64() : (a.data as Slots), B = decode ? b.toFloat64() : (b.data as Slots);
  map2(dims, a.dims, b.dims, out.data as Slots, A, B, (x, y) => (cmp(x, y) ? 1 : 0));
  return out;
}

/**
 * Opset < 7 binary ops broadcast only when `broadcast=1`, aligning B with A starting at `axis` (default: trailing).
 * Returns B with trailing unit dims added so that numpy broadcasting gives the same result.
 */
export function legacyBroadcast(a: TensorData, b: TensorData, opset: number,
  attrs: { broadcast?: number; axis?: number }): TensorData {
  if (opset >= 7 || attrs.broadcast !== 1 || attrs.axis === undefined) return b;
  const axis = normAxis(attrs.axis, a.rank);
  const pad = a.rank - axis - b.rank;
  if (pad < 0) throw new Error(`legacy broadcast: B of rank ${b.rank} does not fit into A of rank ${a.rank} at axis ${attrs.axis}`);
  return b.reshape([...b.dims, ...new Array<number>(pad).fill(1)]);
}

// ---------------------------------------------------------------------------------------------------------------
// inference

/** Numpy broadcast of static shapes: a known dim > 1 wins over symbols; differing symbols give undefined. */
export function inferBroadcast(...shapes: (Dim[] | undefined)[]): Dim[] | undefined {
  if (shapes.some((s) => s === undefined)) return undefined;
  const ss = shapes as Dim[][];
  const rank = Math.max(0, ...ss.map((s) => s.length));
  const out: Dim[] = [];
  for (let o = 0; o < rank; o++) {
    const ds = ss.filter((s) => s.length >= rank - o).map((s) => s[s.length - rank + o]);
    const nums = [...new Set(ds.filter((d): d is number => typeof d === 'number' && d !== 1))];
    if (nums.length > 1) throw new Error(`cannot broadcast dimension ${nums[0]} with ${nums[1]}`);
    if (nums.length === 1) {
      out.push(nums[0]);
      continue;
    }
    const rest = ds.filter((d) => d !== 1);
    if (rest.length === 0) out.push(1);
    else if (rest.every((d) => typeof d === 'string' && d === rest[0])) out.push(rest[0]);
    else out.push(undefined);
  }
  return out;
}

const UNKNOWN: ValueType = { kind: 'unknown' };

/** Output = input 0's type (unary ops, activations). */
export function inferSame(ctx: InferContext<unknown>): ValueType[] {
  const t = tensorTypeOf(ctx.inputTypes[0]);
  return [t ? { kind: 'tensor', dtype: t.dtype, shape: t.shape } : UNKNOWN];
}

/** Output of input 0's shape with a fixed element type (IsNaN, IsInf). */
export function inferSameShape(dtype: DType) {
  return (ctx: InferContext<unknown>): ValueType[] => {
    const t = tensorTypeOf(ctx.inputTypes[0]);
    return [{ kind: 'tensor', dtype, shape: t?.shape }];
  };
}

/**
 * Broadcast over the inputs in `which` (default all); element type `dtype`, or that of the first known input
 * among `typeFrom` (default `which`).
 */
export function inferBroadcastOp(dtype?: DType, which?: number[], typeFrom?: number[]) {
  return (ctx: InferContext<any>): ValueType[] => {
    const idx = which ?? ctx.inputTypes.map((_, i) => i);
    const types = idx.map((i) => tensorTypeOf(ctx.inputTypes[i]));
    const typed = (typeFrom ?? idx).map((i) => tensorTypeOf(ctx.inputTypes[i])).find((t) => t);
    const dt = dtype ?? typed?.dtype;
    if (!dt) return [UNKNOWN];
    if (types.some((t) => !t)) return [{ kind: 'tensor', dtype: dt }];
    if (ctx.opset < 7 && ctx.attrs.broadcast === 1) return [{ kind: 'tensor', dtype: dt, shape: types[0]?.shape }];
    return [{ kind: 'tensor', dtype: dt, shape: inferBroadcast(...types.map((t) => t?.shape)) }];
  };
}
