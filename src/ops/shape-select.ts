// Data-dependent selection and rearrangement: Unique, TopK, Range, DepthToSpace, SpaceToDepth, ReverseSequence,
// CenterCropPad, Dropout.
import type { Dim } from '../ir/graph.js';
import { attr, defineOp, type OpDef } from '../ir/schema.js';
import { TensorData } from '../ir/tensor.js';
import { type DType, isBig, isEncodedFloat } from '../ir/dtype.js';
import { prod } from './util.js';
import {
  constInts, copyBlock, dimProduct, encodeSlot, inType, int64Tensor, intsOf, mappedCopy, normAxes, slotWidth, slots, stridedCopy,
  tensorOut,
} from './shape-util.js';
import { transpose } from './shape-basic.js';
import { MT19937 } from './shape-mt19937.js';
import { gatherAxis, likeInput0 } from './shape-index.js';

const oneAxis = (axis: number, rank: number) => normAxes([axis], rank, 'axis')[0];

// ---------------------------------------------------------------------------------------------------------------
// Unique, TopK

/** Compare elements i and j of `t` (numbers with NaN last, bigints exactly, strings by code units). */
function comparator(t: TensorData): (i: number, j: number) => number {
  if (t.dtype === 'string' || isBig(t.dtype)) {
    const d = slots(t.data) as (string | bigint)[];
    return (i, j) => (d[i] < d[j] ? -1 : d[i] > d[j] ? 1 : 0);
  }
  if (slotWidth(t.dtype) > 1) throw new Error(`${t.dtype} elements have no order`);
  const v = t.toFloat64();
  return (i, j) => {
    const a = v[i], b = v[j];
    if (a < b) return -1;
    if (a > b) return 1;
    const na = Number.isNaN(a), nb = Number.isNaN(b);
    return na === nb ? 0 : na ? 1 : -1;
  };
}

/** Element keys for equality (decoded so that float16 -0 and +0 match). */
function elementKeys(t: TensorData): unknown[] {
  if (isEncodedFloat(t.dtype)) return Array.from(t.toFloat64());
  return slots(t.data);
}

/** Equality key of a slice; strings are quoted so that separators inside them cannot collide. */
const sliceKey = (xs: unknown[]) => (typeof xs[0] === 'string' ? JSON.stringify(xs) : xs.map(String).join(','));

const Unique = defineOp({
  name: 'Unique', versions: [11], attrs: { sorted: attr.int(1), axis: attr.int() }, inputs: [1, 1], outputs: [1, 4],
  doc: 'Unique elements (or slices along an axis), with first indices, inverse indices and counts',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    let y: Dim[] | undefined = [undefined];
    if (ctx.attrs.axis !== undefined) {
      const shape = t?.shape;
      y = shape ? shape.map((d, i) => (i === oneAxis(ctx.attrs.axis!, shape.length) ? undefined : d)) : undefined;
    }
    const inv = ctx.attrs.axis === undefined ? [t?.shape ? dimProduct(t.shape) : undefined]
      : [t?.shape ? t.shape[oneAxis(ctx.attrs.axis, t.shape.length)] : undefined];
    return [tensorOut(t?.dtype, y), tensorOut('int64', [undefined]), tensorOut('int64', inv), tensorOut('int64', [undefined])]
      .slice(0, Math.max(1, ctx.numOutputs));
  },
  run: (ctx) => {
    let t = ctx.tensor(0);
    if (ctx.attrs.axis === undefined) t = t.reshape([t.size]);
    const a = ctx.attrs.axis === undefined ? 0 : oneAxis(ctx.attrs.axis, t.rank);
    // bring the axis to the front so that slice s is the contiguous run [s*len, (s+1)*len)
    const perm = [a, ...t.dims.map((_, i) => i).filter((i) => i !== a)];
    const front = a === 0 ? t : transpose(t, perm);
    const n = t.dims[a], len = n ? front.size / n : 0;
    const keys = elementKeys(front);
    const ids = new Map<string, number>();
    const first: number[] = [], counts: number[] = [], inverse = new Array<number>(n);
    for (let s = 0; s < n; s++) {
      const key = len === 1 ? String(keys[s]) : sliceKey(keys.slice(s * len, (s + 1) * len));
      let id = ids.get(key);
      if (id === undefined) {
        id = first.length;
        ids.set(key, id);
        first.push(s);
        counts.push(0);
      }
      counts[id]++;
      inverse[s] = id;
    }
    let order = first.map((_, i) => i);
    if (ctx.attrs.sorted !== 0) {
      const cmp = comparator(front);
      order.sort((p, q) => {
        const sp = first[p] * len, sq = first[q] * len;
        for (let e = 0; e < len; e++) {
          const c = cmp(sp + e, sq + e);
          if (c) return c;
        }
        return 0;
      });
    }
    const rank = new Array<number>(order.length);
    order.forEach((id, pos) => { rank[id] = pos; });
    const firstSorted = order.map((id) => first[id]);
    const y = gatherAxis(t, a, firstSorted, [firstSorted.length]);
    order = order.map((id) => counts[id]);
    return [y, int64Tensor([firstSorted.length], firstSorted), int64Tensor([n], inverse.map((id) => rank[id])), int64Tensor([order.length], order)];
  },
});

const TopK = defineOp({
  name: 'TopK', versions: [1, 10, 11, 24], attrs: { axis: attr.int(-1), k: attr.int(), largest: attr.int(1), sorted: attr.int(1) },
  inputs: [1, 2], outputs: [2, 2],
  doc: 'The k largest (or smallest) elements along an axis and their indices (ties: lower index first)',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    const k = ctx.opset < 10 ? ctx.attrs.k : constInts(ctx, 1)?.[0];
    const shape = t?.shape ? t.shape.map((d, i) => (i === oneAxis(ctx.attrs.axis, t.shape!.length) ? k : d)) : undefined;
    return [tensorOut(t?.dtype, shape), tensorOut('int64', shape)];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const a = oneAxis(ctx.attrs.axis, t.rank);
    let k: number;
    if (ctx.opset < 10) {
      if (ctx.attrs.k === undefined) throw new Error('TopK-1 needs the k attribute');
      k = ctx.attrs.k;
    } else {
      const kT = ctx.tensor(1);
      if (kT.size !== 1) throw new Error(`k must hold one value, found ${kT.size}`);
      k = intsOf(kT)[0];
    }
    const n = t.dims[a];
    if (!(k >= 0 && k <= n)) throw new Error(`k = ${k} is outside [0, ${n}] for axis ${a} of shape [${t.dims.join(', ')}]`);
    const largest = ctx.opset < 11 || ctx.attrs.largest !== 0;
    const dims = [...t.dims];
    dims[a] = k;
    const vals = TensorData.zeros(t.dtype, dims), idxOut = TensorData.zeros('int64', dims);
    const cmp = comparator(t);
    const outer = prod(t.dims, 0, a), inner = prod(t.dims, a + 1);
    const d = slots(vals.data), x = slots(t.data), di = idxOut.data as BigInt64Array;
    const cand = new Array<number>(n);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * n * inner + i;
        for (let j = 0; j < n; j++) cand[j] = j;
        cand.sort((p, q) => {
          const c = cmp(base + p * inner, base + q * inner);
          return (largest ? -c : c) || p - q;
        });
        for (let j = 0; j < k; j++) {
          const dst = (o * k + j) * inner + i;
          d[dst] = x[base + cand[j] * inner];
          di[dst] = BigInt(cand[j]);
        }
      }
    }
    return [vals, idxOut];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Range

const Range = defineOp({
  name: 'Range', versions: [11, 27], attrs: {}, inputs: [3, 3], outputs: [1, 1],
  doc: 'start, start + delta, ... up to (excluding) limit',
  infer: (ctx) => {
    const dtype = inType(ctx, 0)?.dtype;
    const [s, l, d] = [0, 1, 2].map((i) => ctx.constant(i)?.toNumberArray()[0]);
    const n = s !== undefined && l !== undefined && d !== undefined && d !== 0 ? Math.max(Math.ceil((l - s) / d), 0) : undefined;
    return [tensorOut(dtype, [n])];
  },
  run: (ctx) => {
    const [st, lt, dt] = [ctx.tensor(0), ctx.tensor(1), ctx.tensor(2)];
    for (const x of [st, lt, dt]) {
      if (x.size !== 1) throw new Error(`start, limit and delta must be scalars, found shape [${x.dims.join(', ')}]`);
      if (x.dtype !== st.dtype) throw new Error(`start, limit and delta must share one type, found ${st.dtype} and ${x.dtype}`);
    }
    if (isBig(st.dtype)) {
      const [s, l, d] = [st, lt, dt].map((x) => (x.data as BigInt64Array)[0]);
      if (d === 0n) throw new Error('delta cannot be 0');
      const diff = l - s;
      // ceil division on bigints
      let n = diff / d;
      if (n * d !== diff && (diff > 0n) === (d > 0n)) n += 1n;
      if (n < 0n) n = 0n;
      if (n > 2n ** 31n) throw new Error(`range of ${n} elements is too large`);
      const out = TensorData.zeros(st.dtype, [Number(n)]);
      const o = out.data as BigInt64Array;
      for (let i = 0; i < o.length; i++) o[i] = s + BigInt(i) * d;
      return [out];
    }
    const [s, l, d] = [st, lt, dt].map((x) => x.toNumberArray()[0]);
    if (d === 0 || Number.isNaN(d)) throw new Error(`delta must be non-zero, found ${d}`);
    const n = Math.max(Math.ceil((l - s) / d), 0);
    if (!Number.isFinite(n)) throw new Error(`range from ${s} to ${l} by ${d} is unbounded`);
    const v = new Float64Array(n);
    for (let i = 0; i < n; i++) v[i] = s + i * d;
    return [TensorData.fromNumbers(st.dtype, [n], v)];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// DepthToSpace, SpaceToDepth, ReverseSequence, CenterCropPad

function nchw(t: TensorData): [number, number, number, number] {
  if (t.rank !== 4) throw new Error(`input must be 4-D [N, C, H, W], found shape [${t.dims.join(', ')}]`);
  return t.dims as [number, number, number, number];
}

const DepthToSpace = defineOp({
  name: 'DepthToSpace', versions: [1, 11, 13], attrs: { blocksize: attr.int(), mode: attr.string('DCR') }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Move channel blocks into spatial blocks (DCR or CRD order)',
  infer: (ctx) => {
    const t = inType(ctx, 0), b = ctx.attrs.blocksize;
    const s = t?.shape;
    if (!s || s.length !== 4 || !b) return [tensorOut(t?.dtype, [undefined, undefined, undefined, undefined])];
    const m = (d: Dim, f: number) => (typeof d === 'number' ? d * f : undefined);
    return [tensorOut(t.dtype, [s[0], typeof s[1] === 'number' ? s[1] / (b * b) : undefined, m(s[2], b), m(s[3], b)])];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const [n, c, h, w] = nchw(t);
    const b = ctx.attrs.blocksize;
    if (!b || b < 1 || c % (b * b) !== 0) throw new Error(`channels ${c} must be divisible by blocksize^2 (blocksize ${b})`);
    const c2 = c / (b * b), sc = h * w;
    // output viewed as [N, C', H, b, W, b]
    const [sCh, sI, sJ] = ctx.attrs.mode === 'CRD' ? [b * b * sc, b * sc, sc] : ctx.attrs.mode === 'DCR' ? [sc, b * c2 * sc, c2 * sc]
      : (() => { throw new Error(`unknown mode '${ctx.attrs.mode}' (expected DCR or CRD)`); })();
    const out = stridedCopy(t, [n, c2, h, b, w, b], [c * sc, sCh, w, sI, 1, sJ], 0);
    return [out.reshape([n, c2, h * b, w * b])];
  },
});

const SpaceToDepth = defineOp({
  name: 'SpaceToDepth', versions: [1, 13], attrs: { blocksize: attr.int() }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Move spatial blocks into channels',
  infer: (ctx) => {
    const t = inType(ctx, 0), b = ctx.attrs.blocksize;
    const s = t?.shape;
    if (!s || s.length !== 4 || !b) return [tensorOut(t?.dtype, [undefined, undefined, undefined, undefined])];
    const dv = (d: Dim) => (typeof d === 'number' ? d / b : undefined);
    return [tensorOut(t.dtype, [s[0], typeof s[1] === 'number' ? s[1] * b * b : undefined, dv(s[2]), dv(s[3])])];
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    const [n, c, h, w] = nchw(t);
    const b = ctx.attrs.blocksize;
    if (!b || b < 1 || h % b !== 0 || w % b !== 0) throw new Error(`height ${h} and width ${w} must be divisible by blocksize ${b}`);
    const h2 = h / b, w2 = w / b;
    // output viewed as [N, b(i), b(j), C, H', W']
    const out = stridedCopy(t, [n, b, b, c, h2, w2], [c * h * w, w, 1, h * w, b * w, b], 0);
    return [out.reshape([n, c * b * b, h2, w2])];
  },
});

const ReverseSequence = defineOp({
  name: 'ReverseSequence', versions: [10], attrs: { batch_axis: attr.int(1), time_axis: attr.int(0) }, inputs: [2, 2], outputs: [1, 1],
  doc: 'Reverse the first seq_len[b] time steps of each batch entry',
  infer: likeInput0,
  run: (ctx) => {
    const t = ctx.tensor(0), lens = intsOf(ctx.tensor(1));
    const ba = ctx.attrs.batch_axis, ta = ctx.attrs.time_axis;
    if (t.rank < 2) throw new Error(`input must have rank >= 2, found shape [${t.dims.join(', ')}]`);
    if (!((ba === 0 && ta === 1) || (ba === 1 && ta === 0))) throw new Error(`batch_axis ${ba} and time_axis ${ta} must be 0 and 1`);
    const B = t.dims[ba], T = t.dims[ta];
    if (lens.length !== B) throw new Error(`sequence_lens has ${lens.length} entries for batch size ${B}`);
    const inner = prod(t.dims, 2) * slotWidth(t.dtype);
    const at = (tt: number, b: number) => (ta === 0 ? tt * B + b : b * T + tt) * inner;
    const out = TensorData.zeros(t.dtype, t.dims);
    for (let b = 0; b < B; b++) {
      const len = lens[b];
      if (!(len >= 0 && len <= T)) throw new Error(`sequence length ${len} of batch ${b} is outside [0, ${T}]`);
      for (let tt = 0; tt < T; tt++) copyBlock(out.data, at(tt, b), t.data, at(tt < len ? len - 1 - tt : tt, b), inner);
    }
    return [out];
  },
});

const CenterCropPad = defineOp({
  name: 'CenterCropPad', versions: [18], attrs: { axes: attr.ints() }, inputs: [2, 2], outputs: [1, 1],
  doc: 'Center-crop or zero-pad the given axes to a target shape',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    const shape = constInts(ctx, 1);
    if (!t?.shape) return [tensorOut(t?.dtype)];
    const axes = normAxes(ctx.attrs.axes ?? t.shape.map((_, i) => i), t.shape.length);
    const out: Dim[] = [...t.shape];
    axes.forEach((a, i) => { out[a] = shape ? shape[i] : undefined; });
    return [tensorOut(t.dtype, out)];
  },
  run: (ctx) => {
    const t = ctx.tensor(0), target = intsOf(ctx.tensor(1));
    const axes = normAxes(ctx.attrs.axes ?? t.dims.map((_, i) => i), t.rank);
    if (target.length !== axes.length) throw new Error(`shape has ${target.length} entries for ${axes.length} axes`);
    const maps = t.dims.map((d) => Int32Array.from({ length: d }, (_, i) => i));
    axes.forEach((a, i) => {
      const d = t.dims[a], s = target[i];
      if (!(Number.isInteger(s) && s >= 0)) throw new Error(`target size ${s} for axis ${a} is invalid`);
      // pad: floor(extra / 2) before; crop: start at floor(excess / 2)
      const shift = s >= d ? -Math.floor((s - d) / 2) : Math.floor((d - s) / 2);
      maps[a] = Int32Array.from({ length: s }, (_, j) => {
        const src = j + shift;
        return src >= 0 && src < d ? src : -1;
      });
    });
    return [mappedCopy(t, maps, encodeSlot(t.dtype, 0))];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Dropout

const Dropout = defineOp({
  name: 'Dropout', versions: [1, 6, 7, 10, 12, 13, 22], attrs: { ratio: attr.float(0.5), seed: attr.int(), is_test: attr.int(0) },
  inputs: [1, 3], outputs: [1, 2],
  doc: 'Identity at inference; in training mode zeroes elements with probability ratio and rescales the rest',
  infer: (ctx) => {
    const t = inType(ctx, 0);
    const maskType = ctx.opset >= 10 ? 'bool' : t?.dtype;
    return [tensorOut(t?.dtype, t?.shape), tensorOut(maskType, t?.shape)].slice(0, Math.max(1, ctx.numOutputs));
  },
  run: (ctx) => {
    const t = ctx.tensor(0);
    let ratio = ctx.attrs.ratio, training = ctx.opset < 7 && ctx.attrs.is_test === 0;
    if (ctx.opset >= 12) {
      const r = ctx.optionalTensor(1), tm = ctx.optionalTensor(2);
      if (r) ratio = r.toNumberArray()[0];
      training = tm ? tm.toNumberArray()[0] !== 0 : false;
    }
    if (!(ratio >= 0 && ratio < 1)) throw new Error(`ratio must be in [0, 1), found ${ratio}`);
    const maskType: DType = ctx.opset >= 10 ? 'bool' : t.dtype;
    const wantMask = ctx.wantsOutput(1);
    if (!training || ratio === 0) {
      if (!wantMask) return [t];
      const mask = TensorData.zeros(maskType, t.dims);
      slots(mask.data).fill(encodeSlot(maskType, 1), 0, mask.size);
      return [t, mask];
    }
    const rng = ctx.attrs.seed !== undefined ? new MT19937(ctx.attrs.seed) : undefined;
    const x = t.toFloat64(), y = new Float64Array(t.size), keep = new Float64Array(t.size);
    const scale = 1 / (1 - ratio);
    for (let i = 0; i < t.size; i++) {
      const u = rng ? rng.random() : ctx.random();
      keep[i] = u >= ratio ? 1 : 0;
      y[i] = keep[i] ? x[i] * scale : 0;
    }
    const out = TensorData.fromNumbers(t.dtype, t.dims, y);
    return wantMask ? [out, TensorData.fromNumbers(maskType, t.dims, keep)] : [out];
  },
});

const ops: OpDef<any>[] = [Unique, TopK, Range, DepthToSpace, SpaceToDepth, ReverseSequence, CenterCropPad, Dropout];
export default ops;
