// Variadic broadcasting ops (Sum, Mean, Max, Min), Clip and Where.
import { attr, defineOp, type KernelContext, type OpDef } from '../ir/schema.js';
import { isEncodedFloat } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { broadcastShapes } from './util.js';
import {
  type BinaryKernels, type Slots, binaryOp, broadcastRows, inferBroadcastOp, inferSame, sameTypes, storageClass,
} from './elementwise-core.js';

/** Fold the inputs pairwise with broadcasting; float16 & co are folded in float64 and rounded once at the end. */
function fold(inputs: TensorData[], k: BinaryKernels, mean = false): TensorData {
  if (inputs.length === 0) throw new Error('expected at least one input, found none');
  const dt = sameTypes(inputs);
  const encoded = isEncodedFloat(dt);
  const ts = encoded ? inputs.map((t) => new TensorData('float64', t.dims, t.toFloat64())) : inputs;
  let acc = ts[0];
  for (let i = 1; i < ts.length; i++) acc = binaryOp(acc, ts[i], k);
  if (mean) acc = divideBy(acc, ts.length);
  return encoded ? TensorData.fromNumbers(dt, acc.dims, acc.data as Float64Array) : acc;
}

function divideBy(t: TensorData, n: number): TensorData {
  const c = storageClass(t.dtype);
  if (c !== 'float' && c !== 'int' && c !== 'big') throw new Error(`Mean does not support element type ${t.dtype}`);
  const out = TensorData.zeros(t.dtype, t.dims);
  const X = t.data as Slots, Y = out.data as Slots, bn = BigInt(n);
  for (let i = 0; i < t.size; i++) Y[i] = c === 'big' ? X[i] / bn : c === 'int' ? Math.trunc(X[i] / n) : X[i] / n;
  return out;
}

const inputsOf = (ctx: KernelContext<unknown>) => ctx.inputs.map((_, i) => ctx.tensor(i));

function variadic(name: string, versions: number[], doc: string, k: BinaryKernels, mean = false) {
  return defineOp({
    name, versions, attrs: {}, inputs: [1, Infinity], outputs: [1, 1], doc, infer: inferBroadcastOp(),
    run: (ctx) => [fold(inputsOf(ctx), k, mean)],
  });
}

// Math.max/Math.min propagate NaN, as the spec requires.
const SUM: BinaryKernels = { fast: 'add', float: (x, y) => x + y, int: (x, y) => x + y, big: (x, y) => x + y };
const variadics: OpDef<any>[] = [
  variadic('Sum', [1, 6, 8, 13], 'Elementwise sum of the inputs (broadcasting)', SUM),
  variadic('Mean', [1, 6, 8, 13], 'Elementwise mean of the inputs (broadcasting)', SUM, true),
  variadic('Max', [1, 6, 8, 12, 13], 'Elementwise maximum of the inputs (broadcasting; NaN propagates)', {
    float: Math.max, int: Math.max, big: (x, y) => (x > y ? x : y),
  }),
  variadic('Min', [1, 6, 8, 12, 13], 'Elementwise minimum of the inputs (broadcasting; NaN propagates)', {
    float: Math.min, int: Math.min, big: (x, y) => (x < y ? x : y),
  }),
];

// ---------------------------------------------------------------------------------------------------------------
// Clip

/** y = min(max(x, lo), hi): when lo > hi every element becomes hi, and NaN stays NaN. */
function clip(x: TensorData, lo: number | bigint | undefined, hi: number | bigint | undefined): TensorData {
  const c = storageClass(x.dtype);
  if (c !== 'float' && c !== 'int' && c !== 'big') throw new Error(`Clip does not support element type ${x.dtype}`);
  const encoded = isEncodedFloat(x.dtype);
  const out = encoded ? new TensorData('float64', x.dims, new Float64Array(x.size)) : TensorData.zeros(x.dtype, x.dims);
  const X = encoded ? x.toFloat64() : (x.data as Slots), Y = out.data as Slots;
  for (let i = 0; i < x.size; i++) {
    let v = X[i];
    if (lo !== undefined && v < lo) v = lo;
    if (hi !== undefined && v > hi) v = hi;
    Y[i] = v;
  }
  return encoded ? TensorData.fromNumbers(x.dtype, x.dims, Y as Float64Array) : out;
}

function bound(t: TensorData | undefined, x: TensorData, what: string): number | bigint | undefined {
  if (!t) return undefined;
  if (t.size !== 1) throw new Error(`${what} must be a scalar, found shape [${t.dims.join(', ')}]`);
  if (t.dtype !== x.dtype) throw new Error(`${what} must have the input's element type ${x.dtype}, found ${t.dtype}`);
  return storageClass(t.dtype) === 'big' ? (t.data as BigInt64Array)[0] : t.get(0);
}

const Clip = defineOp({
  name: 'Clip', versions: [1, 6, 11, 12, 13], attrs: { min: attr.float(), max: attr.float() }, inputs: [1, 3],
  outputs: [1, 1], doc: 'y = min(max(x, min), max); min/max are attributes before opset 11, optional inputs after',
  infer: inferSame,
  run: (ctx) => {
    const x = ctx.tensor(0);
    if (ctx.opset < 11) {
      const isBig = storageClass(x.dtype) === 'big';
      const f = (v: number | undefined) => (v === undefined ? undefined : isBig ? BigInt(Math.trunc(v)) : v);
      return [clip(x, f(ctx.attrs.min), f(ctx.attrs.max))];
    }
    return [clip(x, bound(ctx.optionalTensor(1), x, 'min'), bound(ctx.optionalTensor(2), x, 'max'))];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Where

function where(c: TensorData, x: TensorData, y: TensorData): TensorData {
  if (c.dtype !== 'bool') throw new Error(`condition must be bool, found ${c.dtype}`);
  const dt = sameTypes([x, y]);
  if (dt === 'complex64' || dt === 'complex128') throw new Error(`Where does not support ${dt}`);
  const dims = broadcastShapes(c.dims, x.dims, y.dims);
  const out = TensorData.zeros(dt, dims);
  const O = out.data as Slots, C = c.data as Uint8Array, X = x.data as Slots, Y = y.data as Slots;
  broadcastRows(dims, [c.dims, x.dims, y.dims], (len, o, offs, incs) => {
    let ic = offs[0], ix = offs[1], iy = offs[2];
    const sc = incs[0], sx = incs[1], sy = incs[2];
    for (let i = 0; i < len; i++, ic += sc, ix += sx, iy += sy) O[o + i] = C[ic] ? X[ix] : Y[iy];
  });
  return out;
}

const Where = defineOp({
  name: 'Where', versions: [9, 16], attrs: {}, inputs: [3, 3], outputs: [1, 1],
  doc: 'output = condition ? X : Y (3-way broadcasting, any element type)', infer: inferBroadcastOp(undefined, [0, 1, 2], [1, 2]),
  run: (ctx) => [where(ctx.tensor(0), ctx.tensor(1), ctx.tensor(2))],
});

const ops: OpDef<any>[] = [...variadics, Clip, Where];
export default ops;
