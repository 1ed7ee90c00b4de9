// Indexing: Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND, TensorScatter, OneHot, Compress,
// NonZero, Trilu, EyeLike. (Sorting, ranges, rearrangements and Dropout are in shape-select.ts.)
import type { Dim } from '../ir/graph.js';
import { attr, defineOp, type InferContext, type OpDef } from '../ir/schema.js';
import { TensorData, stridesOf } from '../ir/tensor.js';
import { type DType, decodeElement, dtypeFromOnnx, encodeElement, isBig, isEncodedFloat } from '../ir/dtype.js';
import { prod } from './util.js';
import { copyBlock, encodeSlot, inType, intsOf, normAxes, normIndex, slotWidth, slots, tensorOut } from './shape-util.js';

const oneAxis = (axis: number, rank: number) => normAxes([axis], rank, 'axis')[0];

// ---------------------------------------------------------------------------------------------------------------
// Gather family

/** Gather whole slices of `t` along `axis` at `idx` (already normalized); the indices have shape `idxDims`. */
export function gatherAxis(t: TensorData, axis: number, idx: ArrayLike<number>, idxDims: readonly number[]): TensorData {
  const n = t.dims[axis];
  const out = TensorData.zeros(t.dtype, [...t.dims.slice(0, axis), ...idxDims, ...t.dims.slice(axis + 1)]);
  const outer = prod(t.dims, 0, axis), inner = prod(t.dims, axis + 1) * slotWidth(t.dtype);
  const m = idx.length;
  if (inner === 1) {
    const d = slots(out.data), x = slots(t.data);
    for (let o = 0; o < outer; o++) for (let j = 0; j < m; j++) d[o * m + j] = x[o * n + idx[j]];
    return out;
  }
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < m; j++) copyBlock(out.data, (o * m + j) * inner, t.data, (o * n + idx[j]) * inner, inner);
  }
  return out;
}

/** Index tensor values normalized against a dim of size n (negative counts from the end). */
function indexValues(t: TensorData, n: number): Int32Array {
  const v = t.toFloat64();
  const out = new Int32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = normIndex(v[i], n);
  return out;
}

const Gather = defineOp({
  name: 'Gather', versions: [1, 11, 13], attrs: { axis: attr.int(0) }, inputs: [2, 2], outputs: [1, 1],
  doc: 'Take slices along an axis at the given indices',
  infer: (ctx) => {
    const t = inType(ctx, 0), ix = inType(ctx, 1);
    if (!t?.shape || !ix?.shape) return [tensorOut(t?.dtype)];
    const a = oneAxis(ctx.attrs.axis, t.shape.length);
    return [tensorOut(t.dtype, [...t.shape.slice(0, a), ...ix.shape, ...t.shape.slice(a + 1)])];
  },
  run: (ctx) => {
    const t = ctx.tensor(0), ix = ctx.tensor(1);
    const a = oneAxis(ctx.attrs.axis, t.rank);
    return [gatherAxis(t, a, indexValues(ix, t.dims[a]), ix.dims)];
  },
});

/**
 * Visit every element of an index tensor of shape `dims` with the offset into a tensor of strides `st`
 * (excluding `axis`) and the index value: `visit(i, offsetWithoutAxis)`.
 */
function forEachElement(dims: readonly number[], st: readonly number[], axis: number, visit: (i: number, off: number) => void) {
  const r = dims.length, n = prod(dims);
  const counter = new Array<number>(r).fill(0);
  const s = st.map((x, d) => (d === axis ? 0 : x));
  let off = 0;
  for (let i = 0; i < n; i++) {
    visit(i, off);
    for (let d = r - 1; d >= 0; d--) {
      off += s[d];
      if (++counter[d] < dims[d]) break;
      off -= s[d] * dims[d];
      counter[d] = 0;
    }
  }
}

function checkIndexShape(data: TensorData, idx: TensorData, axis: number, what: string) {
  if (idx.rank !== data.rank) throw new Error(`${what} has rank ${idx.rank}, expected the data rank ${data.rank}`);
  idx.dims.forEach((d, i) => {
    if (i !== axis && d > data.dims[i]) throw new Error(`${what} shape [${idx.dims.join(', ')}] exceeds data shape [${data.dims.join(', ')}] on axis ${i}`);
  });
}

const GatherElements = defineOp({
  name: 'GatherElements', versions: [11, 13], attrs: { axis: attr.int(0) }, inputs: [2, 2], outputs: [1, 1],
  doc: 'out[i][j][k] = data[index[i][j][k]][j][k] (for axis 0)',
  infer: (ctx) => [tensorOut(inType(ctx, 0)?.dtype, inType(ctx, 1)?.shape)],
  run: (ctx) => {
    const t = ctx.tensor(0), ix = ctx.tensor(1);
    const a = oneAxis(ctx.attrs.axis, t.rank);
    checkIndexShape(t, ix, a, 'indices');
    const idx = indexValues(ix, t.dims[a]);
    const st = stridesOf(t.dims);
    const out = TensorData.zeros(t.dtype, ix.dims);
    const w = slotWidth(t.dtype), d = slots(out.data), x = slots(t.data);
    forEachElement(ix.dims, st, a, (i, off) => {
      const src = (off + idx[i] * st[a]) * w;
      for (let c = 0; c < w; c++) d[i * w + c] = x[src + c];
    });
    return [out];
  },
});

interface NdPlan { batch: number; tuples: number; k: number; block: number; offsets: Int32Array }

/** Offsets (in elements, within one batch) of the slices addressed by GatherND/ScatterND index tuples. */
function ndPlan(data: TensorData, ix: TensorData, batchDims: number): NdPlan {
  const b = batchDims;
  if (ix.rank < 1) throw new Error('indices must have rank >= 1');
  const k = ix.dims[ix.rank - 1];
  if (b < 0 || b >= Math.min(data.rank, ix.rank)) throw new Error(`batch_dims ${b} must be less than the ranks of data and indices`);
  for (let i = 0; i < b; i++) {
    if (data.dims[i] !== ix.dims[i]) throw new Error(`batch dimension ${i} differs: data ${data.dims[i]}, indices ${ix.dims[i]}`);
  }
  if (k > data.rank - b) throw new Error(`index tuples of length ${k} exceed the ${data.rank - b} indexable dims of data`);
  const st = stridesOf(data.dims);
  const batch = prod(data.dims, 0, b), tuples = prod(ix.dims, b, ix.rank - 1);
  const v = ix.toFloat64();
  const offsets = new Int32Array(batch * tuples);
  for (let j = 0; j < batch * tuples; j++) {
    let off = 0;
    for (let q = 0; q < k; q++) off += normIndex(v[j * k + q], data.dims[b + q]) * st[b + q];
    offsets[j] = off;
  }
  return { batch, tuples, k, block: prod(data.dims, b + k), offsets };
}

const GatherND = defineOp({
  name: 'GatherND', versions: [11, 12, 13], attrs: { batch_dims: attr.int(0) }, inputs: [2, 2], outputs: [1, 1],
  doc: 'Gather slices addressed by index tuples in the last dimension of indices',
  infer: (ctx) => {
    const t = inType(ctx, 0), ix = inType(ctx, 1);
    const k = ix?.shape?.[ix.shape.length - 1];
    if (!t?.shape || !ix?.shape || typeof k !== 'number') return [tensorOut(t?.dtype)];
    return [tensorOut(t.dtype, [...ix.shape.slice(0, -1), ...t.shape.slice(ctx.attrs.batch_dims + k)])];
  },
  run: (ctx) => {
    const t = ctx.tensor(0), ix = ctx.tensor(1);
    const p = ndPlan(t, ix, ctx.attrs.batch_dims);
    const out = TensorData.zeros(t.dtype, [...ix.dims.slice(0, -1), ...t.dims.slice(ctx.attrs.batch_dims + p.k)]);
    const w = slotWidth(t.dtype), bs = p.block * w, batchSize = prod(t.dims, ctx.attrs.batch_dims) * w;
    for (let b = 0; b < p.batch; b++) {
      for (let j = 0; j < p.tuples; j++) {
        const q = b * p.tuples + j;
        copyBlock(out.data, q * bs, t.data, b * batchSize + p.offsets[q] * w, bs);
      }
    }
    return [out];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Scatter family

type Reducer = (d: unknown[], i: number, v: unknown) => void;

/** Combine an update into a storage slot by `reduction`, exactly in the element type. */
function reducer(dtype: DType, reduction: string): Reducer {
  if (reduction === 'none') return (d, i, v) => { d[i] = v; };
  if (!['add', 'mul', 'max', 'min'].includes(reduction)) throw new Error(`unknown reduction '${reduction}' (expected none, add, mul, max or min)`);
  if (dtype === 'string' || dtype === 'complex64' || dtype === 'complex128') throw new Error(`reduction '${reduction}' is not defined for ${dtype}`);
  if (isBig(dtype)) {
    const f = { add: (a: bigint, b: bigint) => a + b, mul: (a: bigint, b: bigint) => a * b, max: (a: bigint, b: bigint) => (a > b ? a : b), min: (a: bigint, b: bigint) => (a < b ? a : b) }[reduction]!;
    return (d, i, v) => { d[i] = BigInt.asIntN(64, f(d[i] as bigint, v as bigint)); };
  }
  const f = { add: (a: number, b: number) => a + b, mul: (a: number, b: number) => a * b, max: Math.max, min: Math.min }[reduction]!;
  if (dtype === 'bool') return (d, i, v) => { d[i] = f(d[i] as number, v as number) ? 1 : 0; };
  if (isEncodedFloat(dtype)) {
    const st = scratch(dtype);
    return (d, i, v) => {
      st[0] = d[i] as number;
      st[1] = v as number;
      d[i] = encodeElement(dtype, f(decodeElement(dtype, st, 0), decodeElement(dtype, st, 1)));
    };
  }
  // typed-array stores wrap/round like the element type
  return (d, i, v) => { d[i] = f(d[i] as number, v as number); };
}
/** A two-slot scratch storage of `dtype` for decoding encoded floats. */
const scratch = (dtype: DType) => TensorData.zeros(dtype, [2]).data as Uint16Array;

/** Output type = input 0's type (scatters and other same-shape ops). */
export const likeInput0 = (ctx: InferContext<unknown>) => [tensorOut(inType(ctx, 0)?.dtype, inType(ctx, 0)?.shape)];

/** A copy of t whose storage the kernel may write. */
const cloneTensor = (t: TensorData) => new TensorData(t.dtype, t.dims, t.data.slice());

function scatterElements(t: TensorData, ix: TensorData, upd: TensorData, axis: number, reduction: string): TensorData {
  const a = oneAxis(axis, t.rank);
  checkIndexShape(t, ix, a, 'indices');
  if (upd.dims.length !== ix.dims.length || upd.dims.some((d, i) => d !== ix.dims[i])) {
    throw new Error(`updates shape [${upd.dims.join(', ')}] must equal indices shape [${ix.dims.join(', ')}]`);
  }
  if (upd.dtype !== t.dtype) throw new Error(`updates have type ${upd.dtype}, expected the data type ${t.dtype}`);
  const idx = indexValues(ix, t.dims[a]);
  const st = stridesOf(t.dims);
  const out = cloneTensor(t);
  const w = slotWidth(t.dtype), d = slots(out.data), u = slots(upd.data);
  const red = reducer(t.dtype, reduction);
  forEachElement(ix.dims, st, a, (i, off) => {
    const dst = (off + idx[i] * st[a]) * w;
    for (let c = 0; c < w; c++) red(d, dst + c, u[i * w + c]);
  });
  return out;
}

const Scatter = defineOp({
  name: 'Scatter', versions: [9, 11], attrs: { axis: attr.int(0) }, inputs: [3, 3], outputs: [1, 1],
  doc: 'Deprecated alias of ScatterElements (no reduction)',
  infer: likeInput0,
  run: (ctx) => [scatterElements(ctx.tensor(0), ctx.tensor(1), ctx.tensor(2), ctx.attrs.axis, 'none')],
});

const ScatterElements = defineOp({
  name: 'ScatterElements', versions: [11, 13, 16, 18], attrs: { axis: attr.int(0), reduction: attr.string('none') },
  inputs: [3, 3], outputs: [1, 1],
  doc: 'Write updates into a copy of data at per-element indices along an axis (optionally reducing)',
  infer: likeInput0,
  run: (ctx) => [scatterElements(ctx.tensor(0), ctx.tensor(1), ctx.tensor(2), ctx.attrs.axis, ctx.attrs.reduction)],
});

const ScatterND = defineOp({
  name: 'ScatterND', versions: [11, 13, 16, 18], attrs: { reduction: attr.string('none') }, inputs: [3, 3], outputs: [1, 1],
  doc: 'Write update slices into a copy of data at index tuples (optionally reducing)',
  infer: likeInput0,
  run: (ctx) => {
    const t = ctx.tensor(0), ix = ctx.tensor(1), upd = ctx.tensor(2);
    const p = ndPlan(t, ix, 0);
    const want = [...ix.dims.slice(0, -1), ...t.dims.slice(p.k)];
    if (upd.dims.length !== want.length || upd.dims.some((d, i) => d !== want[i])) {
      throw new Error(`updates shape [${upd.dims.join(', ')}] must be [${want.join(', ')}]`);
    }
    if (upd.dtype !== t.dtype) throw new Error(`updates have type ${upd.dtype}, expected the data type ${t.dtype}`);
    const out = cloneTensor(t);
    const w = slotWidth(t.dtype), bs = p.block * w, d = slots(out.data), u = slots(upd.data);
    const red = reducer(t.dtype, ctx.attrs.reduction);
    for (let j = 0; j < p.tuples; j++) {
      const dst = p.offsets[j] * w;
      if (ctx.attrs.reduction === 'none') copyBlock(out.data, dst, upd.data, j * bs, bs);
      else for (let c = 0; c < bs; c++) red(d, dst + c, u[j * bs + c]);
    }
    return [out];
  },
});

const TensorScatter = defineOp({
  name: 'TensorScatter', versions: [24], attrs: { axis: attr.int(-2), mode: attr.string('linear') }, inputs: [2, 3], outputs: [1, 1],
  doc: 'KV-cache update: write update along the sequence axis at per-batch write indices (linear or circular)',
  infer: likeInput0,
  run: (ctx) => {
    const cache = ctx.tensor(0), upd = ctx.tensor(1), wi = ctx.optionalTensor(2);
    const r = cache.rank;
    const a = oneAxis(ctx.attrs.axis, r);
    if (a === 0) throw new Error('axis cannot be the batch axis 0');
    if (ctx.attrs.mode !== 'linear' && ctx.attrs.mode !== 'circular') throw new Error(`unknown mode '${ctx.attrs.mode}' (expected linear or circular)`);
    if (upd.rank !== r || upd.dims.some((d, i) => i !== a && d !== cache.dims[i])) {
      throw new Error(`update shape [${upd.dims.join(', ')}] must match past_cache [${cache.dims.join(', ')}] except on axis ${a}`);
    }
    if (upd.dtype !== cache.dtype) throw new Error(`update has type ${upd.dtype}, expected ${cache.dtype}`);
    const batch = cache.dims[0], maxSeq = cache.dims[a], seq = upd.dims[a];
    const starts = wi ? intsOf(wi) : new Array<number>(batch).fill(0);
    if (starts.length !== batch) throw new Error(`write_indices has ${starts.length} entries for batch size ${batch}`);
    const mid = prod(cache.dims, 1, a), inner = prod(cache.dims, a + 1) * slotWidth(cache.dtype);
    const out = cloneTensor(cache);
    for (let b = 0; b < batch; b++) {
      for (let s = 0; s < seq; s++) {
        let dst = starts[b] + s;
        if (ctx.attrs.mode === 'circular') dst = ((dst % maxSeq) + maxSeq) % maxSeq;
        else if (!(dst >= 0 && dst < maxSeq)) throw new Error(`write position ${dst} of batch ${b} is outside the cache length ${maxSeq}`);
        for (let m = 0; m < mid; m++) {
          const row = b * mid + m;
          copyBlock(out.data, (row * maxSeq + dst) * inner, upd.data, (row * seq + s) * inner, inner);
        }
      }
    }
    return [out];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// OneHot, Compress, NonZero, Trilu, EyeLike

const OneHot = defineOp({
  name: 'OneHot', versions: [9, 11], attrs: { axis: attr.int(-1) }, inputs: [3, 3], outputs: [1, 1],
  doc: 'One-hot encoding of indices along a new axis (values = [off, on])',
  infer: (ctx) => {
    const ix = inType(ctx, 0), vals = inType(ctx, 2);
    if (!ix?.shape) return [tensorOut(vals?.dtype)];
    const depth = ctx.constant(1);
    const a = oneAxis(ctx.attrs.axis, ix.shape.length + 1);
    const out: Dim[] = [...ix.shape];
    out.splice(a, 0, depth ? Math.trunc(depth.toNumberArray()[0]) : undefined);
    return [tensorOut(vals?.dtype, out)];
  },
  run: (ctx) => {
    const ix = ctx.tensor(0), depthT = ctx.tensor(1), vals = ctx.tensor(2);
    if (depthT.size !== 1) throw new Error(`depth must hold one value, found ${depthT.size}`);
    if (vals.size !== 2) throw new Error(`values must hold [off_value, on_value], found ${vals.size} elements`);
    const depth = Math.trunc(depthT.toNumberArray()[0]);
    if (!(depth >= 1)) throw new Error(`depth must be positive, found ${depth}`);
    const a = oneAxis(ctx.attrs.axis, ix.rank + 1);
    const dims = [...ix.dims];
    dims.splice(a, 0, depth);
    const out = TensorData.zeros(vals.dtype, dims);
    const d = slots(out.data), v = slots(vals.data);
    d.fill(v[0], 0, out.size);
    const inner = prod(ix.dims, a), outer = prod(ix.dims, 0, a);
    const x = ix.toFloat64();
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let k = Math.trunc(x[o * inner + i]);
        if (k < 0) k += depth;
        if (k >= 0 && k < depth) d[(o * depth + k) * inner + i] = v[1];
      }
    }
    return [out];
  },
});

/** Per-element "is non-zero" test for any element type (decoding float16 etc. so that -0 counts as zero). */
function truthiness(t: TensorData): (i: number) => boolean {
  const d = slots(t.data);
  if (t.dtype === 'string') return (i) => d[i] !== '';
  if (isBig(t.dtype)) return (i) => d[i] !== 0n;
  if (isEncodedFloat(t.dtype)) return (i) => decodeElement(t.dtype, t.data, i) !== 0;
  if (slotWidth(t.dtype) > 1) return (i) => d[2 * i] !== 0 || d[2 * i + 1] !== 0;
  return (i) => d[i] !== 0;
}

const Compress = defineOp({
  name: 'Compress', versions: [9, 11], attrs: { axis: attr.int() }, inputs: [2, 2], outputs: [1, 1],
  doc: 'Select slices along an axis (or of the flattened tensor) where condition is true',
  infer: (ctx) => {
    const t = inType(ctx, 0), cond = ctx.constant(1);
    let kept: number | undefined;
    if (cond) {
      const on = truthiness(cond);
      kept = 0;
      for (let i = 0; i < cond.size; i++) if (on(i)) kept++;
    }
    if (ctx.attrs.axis === undefined) return [tensorOut(t?.dtype, [kept])];
    if (!t?.shape) return [tensorOut(t?.dtype)];
    const a = oneAxis(ctx.attrs.axis, t.shape.length);
    return [tensorOut(t.dtype, t.shape.map((d, i) => (i === a ? kept : d)))];
  },
  run: (ctx) => {
    let t = ctx.tensor(0);
    const cond = ctx.tensor(1);
    if (cond.rank !== 1) throw new Error(`condition must be 1-D, found shape [${cond.dims.join(', ')}]`);
    if (ctx.attrs.axis === undefined) t = t.reshape([t.size]);
    const a = ctx.attrs.axis === undefined ? 0 : oneAxis(ctx.attrs.axis, t.rank);
    if (cond.size > t.dims[a]) throw new Error(`condition has ${cond.size} entries for an axis of size ${t.dims[a]}`);
    const on = truthiness(cond);
    const idx: number[] = [];
    for (let i = 0; i < cond.size; i++) if (on(i)) idx.push(i);
    return [gatherAxis(t, a, idx, [idx.length])];
  },
});

const NonZero = defineOp({
  name: 'NonZero', versions: [9, 13], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'Indices of the non-zero elements, as [rank, count] int64',
  infer: (ctx) => {
    const shape = inType(ctx, 0)?.shape;
    return [tensorOut('int64', [shape ? shape.length : undefined, undefined])];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const on = truthiness(t);
    const hits: number[] = [];
    for (let i = 0; i < t.size; i++) if (on(i)) hits.push(i);
    const r = t.rank, st = stridesOf(t.dims);
    const out = TensorData.zeros('int64', [r, hits.length]);
    const d = out.data as BigInt64Array;
    hits.forEach((flat, j) => {
      for (let k = 0; k < r; k++) {
        d[k * hits.length + j] = BigInt(Math.floor(flat / st[k]) % t.dims[k]);
      }
    });
    return [out];
  },
});

const Trilu = defineOp({
  name: 'Trilu', versions: [14], attrs: { upper: attr.int(1) }, inputs: [1, 2], outputs: [1, 1],
  doc: 'Keep the upper (or lower) triangle of the last two dims, shifted by diagonal k',
  infer: likeInput0,
  run: (ctx) => {
    const t = ctx.tensor(0);
    if (t.rank < 2) throw new Error(`input must have rank >= 2, found shape [${t.dims.join(', ')}]`);
    const kT = ctx.optionalTensor(1);
    const k = kT ? intsOf(kT)[0] : 0;
    const rows = t.dims[t.rank - 2], cols = t.dims[t.rank - 1];
    const out = TensorData.zeros(t.dtype, t.dims);
    const w = slotWidth(t.dtype), upper = ctx.attrs.upper !== 0;
    const mats = prod(t.dims, 0, t.rank - 2);
    for (let m = 0; m < mats; m++) {
      for (let i = 0; i < rows; i++) {
        // kept columns: j >= i + k (upper) or j <= i + k (lower)
        const from = upper ? Math.min(Math.max(i + k, 0), cols) : 0;
        const to = upper ? cols : Math.min(Math.max(i + k + 1, 0), cols);
        const base = (m * rows + i) * cols;
        if (to > from) copyBlock(out.data, (base + from) * w, t.data, (base + from) * w, (to - from) * w);
      }
    }
    return [out];
  },
});

const EyeLike = defineOp({
  name: 'EyeLike', versions: [9, 22], attrs: { dtype: attr.int(), k: attr.int(0) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'A 2-D identity-like tensor with ones on diagonal k',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    const dtype = ctx.attrs.dtype !== undefined ? dtypeFromOnnx(ctx.attrs.dtype) : t?.dtype;
    return [tensorOut(dtype, t?.shape ?? [undefined, undefined])];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    if (t.rank !== 2) throw new Error(`input must be 2-D, found shape [${t.dims.join(', ')}]`);
    const dtype = ctx.attrs.dtype !== undefined ? dtypeFromOnnx(ctx.attrs.dtype) : t.dtype;
    if (dtype === 'string') throw new Error('EyeLike cannot produce a string tensor');
    const out = TensorData.zeros(dtype, t.dims);
    const [rows, cols] = t.dims, k = ctx.attrs.k, d = slots(out.data), one = encodeSlot(dtype, 1);
    const w = slotWidth(dtype);
    for (let i = 0; i < rows; i++) {
      const j = i + k;
      if (j >= 0 && j < cols) d[(i * cols + j) * w] = one;
    }
    return [out];
  },
});

const ops: OpDef<any>[] = [
  Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND, TensorScatter, OneHot, Compress, NonZero,
  Trilu, EyeLike,
];
export default ops;
