import { attr, defineOp, type OpDef } from '../ir/schema.js';
import { type DType, dtypeBits, dtypeKind, intRange, isBig, isEncodedFloat, isInteger } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { normAxis, prod, tensorTypeOf } from './util.js';
import { type FloatArr, floatData, floatOut, floatTensor, inferReduceShape, normAxes, planReduce, splitAxis } from './reduce-core.js';
import { Einsum } from './reduce-einsum.js';

type Kind = 'sum' | 'mean' | 'max' | 'min' | 'prod' | 'l1' | 'l2' | 'logsum' | 'logsumexp' | 'sumsquare';

// ---------------------------------------------------------------------------------------------------------------
// float reductions over an [outer, r, inner] layout, accumulated in float64

/** Sum of x (mode 0), |x| (mode 1) or x² (mode 2) into acc[outer * inner]. */
function sumInto(x: FloatArr, outer: number, r: number, inner: number, mode: 0 | 1 | 2, acc: Float64Array): void {
  if (inner === 1) {
    for (let o = 0; o < outer; o++) {
      const base = o * r;
      let s = 0;
      if (mode === 0) for (let k = 0; k < r; k++) s += x[base + k];
      else if (mode === 1) for (let k = 0; k < r; k++) s += Math.abs(x[base + k]);
      else for (let k = 0; k < r; k++) s += x[base + k] * x[base + k];
      acc[o] = s;
    }
    return;
  }
  acc.fill(0);
  for (let o = 0; o < outer; o++) {
    const ob = o * inner;
    for (let k = 0; k < r; k++) {
      const base = (o * r + k) * inner;
      if (mode === 0) for (let i = 0; i < inner; i++) acc[ob + i] += x[base + i];
      else if (mode === 1) for (let i = 0; i < inner; i++) acc[ob + i] += Math.abs(x[base + i]);
      else for (let i = 0; i < inner; i++) acc[ob + i] += x[base + i] * x[base + i];
    }
  }
}

/** Max (or min) with NaN propagation; `init` is the empty-set result. */
function extremeInto(x: FloatArr, outer: number, r: number, inner: number, isMax: boolean, init: number, acc: Float64Array): void {
  acc.fill(init);
  for (let o = 0; o < outer; o++) {
    const ob = o * inner;
    for (let k = 0; k < r; k++) {
      const base = (o * r + k) * inner;
      for (let i = 0; i < inner; i++) {
        const v = x[base + i], m = acc[ob + i];
        if (isMax ? v > m || v !== v : v < m || v !== v) acc[ob + i] = v;
      }
    }
  }
}

function prodInto(x: FloatArr, outer: number, r: number, inner: number, acc: Float64Array): void {
  acc.fill(1);
  for (let o = 0; o < outer; o++) {
    const ob = o * inner;
    for (let k = 0; k < r; k++) {
      const base = (o * r + k) * inner;
      for (let i = 0; i < inner; i++) acc[ob + i] *= x[base + i];
    }
  }
}

/** log(sum(exp(x))) shifted by the maximum so large inputs do not overflow. */
function logSumExpInto(x: FloatArr, outer: number, r: number, inner: number, acc: Float64Array): void {
  const m = new Float64Array(acc.length);
  extremeInto(x, outer, r, inner, true, -Infinity, m);
  acc.fill(0);
  for (let o = 0; o < outer; o++) {
    const ob = o * inner;
    for (let k = 0; k < r; k++) {
      const base = (o * r + k) * inner;
      for (let i = 0; i < inner; i++) acc[ob + i] += Math.exp(x[base + i] - m[ob + i]);
    }
  }
  for (let j = 0; j < acc.length; j++) acc[j] = Number.isFinite(m[j]) ? m[j] + Math.log(acc[j]) : m[j];
}

function reduceFloat(kind: Kind, dtype: DType, x: FloatArr, outer: number, r: number, inner: number): Float64Array {
  const acc = new Float64Array(outer * inner);
  const intLike = isInteger(dtype) || dtype === 'bool';
  switch (kind) {
    case 'sum': sumInto(x, outer, r, inner, 0, acc); break;
    case 'mean': sumInto(x, outer, r, inner, 0, acc); for (let j = 0; j < acc.length; j++) acc[j] /= r; break;
    case 'l1': sumInto(x, outer, r, inner, 1, acc); break;
    case 'sumsquare': sumInto(x, outer, r, inner, 2, acc); break;
    case 'l2': sumInto(x, outer, r, inner, 2, acc); for (let j = 0; j < acc.length; j++) acc[j] = Math.sqrt(acc[j]); break;
    case 'logsum': sumInto(x, outer, r, inner, 0, acc); for (let j = 0; j < acc.length; j++) acc[j] = Math.log(acc[j]); break;
    case 'logsumexp': logSumExpInto(x, outer, r, inner, acc); break;
    case 'prod': prodInto(x, outer, r, inner, acc); break;
    case 'max': extremeInto(x, outer, r, inner, true, intLike ? intRange(dtype)[0] : -Infinity, acc); break;
    case 'min': extremeInto(x, outer, r, inner, false, intLike ? intRange(dtype)[1] : Infinity, acc); break;
  }
  return acc;
}

// ---------------------------------------------------------------------------------------------------------------
// exact integer reductions (int64/uint64 always; products and squares of every integer type, which overflow)

function bigLimits(dtype: DType): [bigint, bigint] {
  if (dtype === 'int64') return [-(2n ** 63n), 2n ** 63n - 1n];
  if (dtype === 'uint64') return [0n, 2n ** 64n - 1n];
  const [lo, hi] = intRange(dtype);
  return [BigInt(lo), BigInt(hi)];
}

function reduceBig(kind: Kind, t: TensorData, outer: number, r: number, inner: number, outDims: number[]): TensorData {
  const dtype = t.dtype;
  const d = t.data as ArrayLike<number | bigint>;
  const big = isBig(dtype);
  const wrap64 = dtype === 'uint64' ? (v: bigint) => BigInt.asUintN(64, v) : (v: bigint) => BigInt.asIntN(64, v);
  const [lo, hi] = bigLimits(dtype);
  const out = new Array<bigint>(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let acc = kind === 'prod' ? 1n : kind === 'max' ? lo : kind === 'min' ? hi : 0n;
      for (let k = 0; k < r; k++) {
        const raw = d[(o * r + k) * inner + i];
        const v = big ? (raw as bigint) : BigInt(raw as number);
        switch (kind) {
          case 'sum': case 'mean': acc = wrap64(acc + v); break;
          case 'l1': acc = wrap64(acc + (v < 0n ? -v : v)); break;
          case 'sumsquare': acc = wrap64(acc + v * v); break;
          case 'prod': acc = wrap64(acc * v); break;
          case 'max': if (v > acc) acc = v; break;
          case 'min': if (v < acc) acc = v; break;
          default: throw new Error(`internal: ${kind} has no exact integer form`);
        }
      }
      if (kind === 'mean') acc = r === 0 ? 0n : acc / BigInt(r);
      out[o * inner + i] = acc;
    }
  }
  if (big) return TensorData.fromBigInts(dtype as 'int64' | 'uint64', outDims, out);
  const bits = dtypeBits(dtype);
  const signed = dtypeKind(dtype) === 'int';
  return TensorData.fromNumbers(dtype, outDims, out.map((v) => Number(signed ? BigInt.asIntN(bits, v) : BigInt.asUintN(bits, v))));
}

/** Reduce `x` over `axes` (undefined or empty = all axes, or none with `noop`). */
export function reduce(kind: Kind, x: TensorData, axes: readonly number[] | undefined, keepdims: boolean, noop: boolean): TensorData {
  if (x.dtype === 'string' || dtypeKind(x.dtype) === 'complex') throw new Error(`expected a numeric tensor, got ${x.dtype}`);
  const all = !axes || axes.length === 0;
  const ax = all ? (noop ? [] : x.dims.map((_, i) => i)) : normAxes(axes, x.rank);
  const plan = planReduce(x, ax, keepdims);
  const { outer, r, inner, outDims } = plan;
  const exactInt = isInteger(x.dtype) && ['sum', 'mean', 'max', 'min', 'prod', 'l1', 'sumsquare'].includes(kind);
  if (exactInt && (isBig(x.dtype) || kind === 'prod' || kind === 'sumsquare')) return reduceBig(kind, plan.data, outer, r, inner, outDims);
  const acc = reduceFloat(kind, x.dtype, floatData(plan.data), outer, r, inner);
  return TensorData.fromNumbers(x.dtype, outDims, acc);
}

function reduceOp(name: string, kind: Kind, versions: number[], axesInputFrom: number, doc: string): OpDef<any> {
  const axesOf = (opset: number, attrAxes: number[] | undefined, input: TensorData | undefined) =>
    opset >= axesInputFrom ? input?.toNumberArray() : attrAxes;
  return defineOp({
    name, versions, doc,
    attrs: { axes: attr.ints(), keepdims: attr.int(1), noop_with_empty_axes: attr.int(0) },
    inputs: [1, 2], outputs: [1, 1],
    infer: (ctx) => {
      const t = tensorTypeOf(ctx.inputTypes[0]);
      if (!t) return [{ kind: 'unknown' }];
      const axesGiven = ctx.opset >= axesInputFrom && !!ctx.node.inputs[1];
      const axes = axesGiven ? ctx.constant(1)?.toNumberArray() : axesOf(ctx.opset, ctx.attrs.axes, undefined) ?? [];
      const noop = ctx.opset >= axesInputFrom && ctx.attrs.noop_with_empty_axes === 1;
      return [{ kind: 'tensor', dtype: t.dtype, shape: inferReduceShape(t.shape, axes, ctx.attrs.keepdims !== 0, noop) }];
    },
    run: (ctx) => {
      const axes = axesOf(ctx.opset, ctx.attrs.axes, ctx.optionalTensor(1));
      const noop = ctx.opset >= axesInputFrom && ctx.attrs.noop_with_empty_axes === 1;
      return [reduce(kind, ctx.tensor(0), axes, ctx.attrs.keepdims !== 0, noop)];
    },
  });
}

const V18 = [1, 11, 13, 18];
const MAXMIN = [1, 11, 12, 13, 18, 20];
const reductions = [
  reduceOp('ReduceSum', 'sum', [1, 11, 13], 13, 'Sum over the given axes'),
  reduceOp('ReduceMean', 'mean', V18, 18, 'Mean over the given axes'),
  reduceOp('ReduceMax', 'max', MAXMIN, 18, 'Maximum over the given axes (-inf or the type minimum for an empty set)'),
  reduceOp('ReduceMin', 'min', MAXMIN, 18, 'Minimum over the given axes (+inf or the type maximum for an empty set)'),
  reduceOp('ReduceProd', 'prod', V18, 18, 'Product over the given axes'),
  reduceOp('ReduceL1', 'l1', V18, 18, 'Sum of absolute values over the given axes'),
  reduceOp('ReduceL2', 'l2', V18, 18, 'Euclidean norm over the given axes'),
  reduceOp('ReduceLogSum', 'logsum', V18, 18, 'log(sum(x)) over the given axes'),
  reduceOp('ReduceLogSumExp', 'logsumexp', V18, 18, 'log(sum(exp(x))) over the given axes, computed stably'),
  reduceOp('ReduceSumSquare', 'sumsquare', V18, 18, 'Sum of squares over the given axes'),
];

// ---------------------------------------------------------------------------------------------------------------
// ArgMax / ArgMin

function argReduce(x: TensorData, axis: number, keepdims: boolean, last: boolean, isMax: boolean): TensorData {
  const a = normAxis(axis, x.rank);
  if (x.dtype === 'string') throw new Error('expected a numeric tensor, got string');
  const [outer, n, inner] = splitAxis(x.dims, a);
  const outDims = x.dims.flatMap((d, i) => (i !== a ? [d] : keepdims ? [1] : []));
  if (n === 0 && outer * inner > 0) throw new Error(`cannot take the arg${isMax ? 'max' : 'min'} over axis ${axis} of size 0`);
  // bigint arrays compare exactly with < and >, so int64 needs no conversion
  const src = (isEncodedFloat(x.dtype) ? x.toFloat64() : x.data) as ArrayLike<number | bigint>;
  const out = new BigInt64Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * n * inner + i;
      let best = src[base], bi = 0;
      let bestNaN = best !== best;
      for (let k = 1; k < n; k++) {
        const v = src[base + k * inner];
        if (v !== v) {
          if (!bestNaN || last) { best = v; bi = k; bestNaN = true; }
          continue;
        }
        if (bestNaN) continue;
        if (isMax ? v > best || (last && v === best) : v < best || (last && v === best)) { best = v; bi = k; }
      }
      out[o * inner + i] = BigInt(bi);
    }
  }
  return new TensorData('int64', outDims, out);
}

function argOp(name: string, isMax: boolean): OpDef<any> {
  return defineOp({
    name, versions: [1, 11, 12, 13], doc: `Index of the ${isMax ? 'largest' : 'smallest'} element along an axis (int64)`,
    attrs: { axis: attr.int(0), keepdims: attr.int(1), select_last_index: attr.int(0) },
    inputs: [1, 1], outputs: [1, 1],
    infer: (ctx) => {
      const t = tensorTypeOf(ctx.inputTypes[0]);
      return [{ kind: 'tensor', dtype: 'int64', shape: inferReduceShape(t?.shape, [ctx.attrs.axis], ctx.attrs.keepdims !== 0, false) }];
    },
    run: (ctx) => [argReduce(ctx.tensor(0), ctx.attrs.axis, ctx.attrs.keepdims !== 0, ctx.attrs.select_last_index === 1, isMax)],
  });
}

// ---------------------------------------------------------------------------------------------------------------
// CumSum / CumProd

function scanAxis(x: TensorData, axisT: TensorData, isProd: boolean, exclusive: boolean, reverse: boolean): TensorData {
  if (axisT.size !== 1) throw new Error(`axis must be a scalar or 1-element tensor, got shape [${axisT.dims.join(', ')}]`);
  if (x.dtype === 'string' || x.dtype === 'bool') throw new Error(`expected a numeric tensor, got ${x.dtype}`);
  const a = normAxis(axisT.toNumberArray()[0], x.rank);
  const [outer, n, inner] = splitAxis(x.dims, a);
  const step = reverse ? -1 : 1;
  const first = reverse ? n - 1 : 0;
  if (isBig(x.dtype)) {
    const src = x.data as BigInt64Array;
    const out = TensorData.zeros(x.dtype, x.dims);
    const dst = out.data as BigInt64Array;
    const wrap = x.dtype === 'uint64' ? (v: bigint) => BigInt.asUintN(64, v) : (v: bigint) => BigInt.asIntN(64, v);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let acc = isProd ? 1n : 0n;
        for (let k = 0, j = first; k < n; k++, j += step) {
          const idx = (o * n + j) * inner + i;
          const v = src[idx];
          if (!exclusive) acc = wrap(isProd ? acc * v : acc + v);
          dst[idx] = acc;
          if (exclusive) acc = wrap(isProd ? acc * v : acc + v);
        }
      }
    }
    return out;
  }
  const src = floatData(x);
  const res = new Float64Array(x.size);
  const intWrap = isInteger(x.dtype) && isProd; // keep integer products within the type while scanning
  const bits = dtypeBits(x.dtype), signed = dtypeKind(x.dtype) === 'int';
  const mulWrap = (p: number, v: number) => Number(signed ? BigInt.asIntN(bits, BigInt(p) * BigInt(v)) : BigInt.asUintN(bits, BigInt(p) * BigInt(v)));
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let acc = isProd ? 1 : 0;
      for (let k = 0, j = first; k < n; k++, j += step) {
        const idx = (o * n + j) * inner + i;
        const v = src[idx];
        if (!exclusive) acc = isProd ? (intWrap ? mulWrap(acc, v) : acc * v) : acc + v;
        res[idx] = acc;
        if (exclusive) acc = isProd ? (intWrap ? mulWrap(acc, v) : acc * v) : acc + v;
      }
    }
  }
  return TensorData.fromNumbers(x.dtype, x.dims, res);
}

function scanOp(name: string, versions: number[], isProd: boolean): OpDef<any> {
  return defineOp({
    name, versions, doc: `Cumulative ${isProd ? 'product' : 'sum'} along an axis (optionally exclusive / reversed)`,
    attrs: { exclusive: attr.int(0), reverse: attr.int(0) },
    inputs: [2, 2], outputs: [1, 1],
    infer: (ctx) => [ctx.inputTypes[0] ?? { kind: 'unknown' }],
    run: (ctx) => [scanAxis(ctx.tensor(0), ctx.tensor(1), isProd, ctx.attrs.exclusive === 1, ctx.attrs.reverse === 1)],
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Det: LU decomposition with partial pivoting, per matrix of the batch

function determinants(x: TensorData): TensorData {
  if (x.rank < 2 || x.dims[x.rank - 1] !== x.dims[x.rank - 2]) {
    throw new Error(`expected a tensor of shape [..., M, M], got [${x.dims.join(', ')}]`);
  }
  const m = x.dims[x.rank - 1];
  const batch = prod(x.dims, 0, x.rank - 2);
  const src = floatData(x);
  const out = floatOut(x.dtype, batch);
  const a = new Float64Array(m * m);
  for (let b = 0; b < batch; b++) {
    for (let j = 0; j < m * m; j++) a[j] = src[b * m * m + j];
    let det = 1;
    for (let c = 0; c < m && det !== 0; c++) {
      let p = c;
      for (let r = c + 1; r < m; r++) if (Math.abs(a[r * m + c]) > Math.abs(a[p * m + c])) p = r;
      const pivot = a[p * m + c];
      if (pivot === 0) { det = 0; break; }
      if (p !== c) {
        for (let j = 0; j < m; j++) { const t = a[c * m + j]; a[c * m + j] = a[p * m + j]; a[p * m + j] = t; }
        det = -det;
      }
      det *= pivot;
      for (let r = c + 1; r < m; r++) {
        const f = a[r * m + c] / pivot;
        if (f === 0) continue;
        for (let j = c + 1; j < m; j++) a[r * m + j] -= f * a[c * m + j];
      }
    }
    out[b] = det;
  }
  return floatTensor(x.dtype, x.dims.slice(0, -2), out);
}

const Det = defineOp({
  name: 'Det', versions: [11, 22], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'Determinant of each square matrix in the batch [..., M, M]',
  infer: (ctx) => {
    const t = tensorTypeOf(ctx.inputTypes[0]);
    if (!t) return [{ kind: 'unknown' }];
    return [{ kind: 'tensor', dtype: t.dtype, shape: t.shape && t.shape.length >= 2 ? t.shape.slice(0, -2) : undefined }];
  },
  run: (ctx) => [determinants(ctx.tensor(0))],
});

const ops: OpDef<any>[] = [
  ...reductions, argOp('ArgMax', true), argOp('ArgMin', false),
  scanOp('CumSum', [11, 14], false), scanOp('CumProd', [26], true), Det, Einsum,
];
export default ops;
