// Integer and quantized convolution / matrix multiply. Zero points are subtracted in float64 (exact for the 8/16-bit
// integer types), the products accumulate exactly in the float64 GEMM, and the QLinear ops requantize with
// round-half-to-even and saturation to the output type.
import type { Dim, ValueType } from '../ir/graph.js';
import { defineOp, type OpDef } from '../ir/schema.js';
import { TensorData } from '../ir/tensor.js';
import { isInteger, type DType } from '../ir/dtype.js';
import { broadcastIndex, broadcastShapes, prod, tensorTypeOf } from './util.js';
import { convForward } from './nn-conv.js';
import { resolveWindow } from './nn-window.js';
import {
  checkConvRanks, convAttrs, convKernel, inferConvShape, inferMatMulShape, planMatMul, roundHalfEven, runMatMul, saturate,
  windowAttrs, type ConvAttrs,
} from './nn-common.js';

const unknown: ValueType = { kind: 'unknown' };

/**
 * x - zp in float64. zp is a scalar, a 1-D vector along `axis` of x (per-channel / per-row / per-column), or a
 * tensor that broadcasts to x.
 */
function centered(x: TensorData, zp: TensorData | undefined, axis: number, what: string): Float64Array {
  const v = x.dtype === 'float64' ? Float64Array.from(x.toFloat64()) : x.toFloat64();
  if (!zp) return v;
  const z = zp.toFloat64();
  if (z.length === 1) {
    for (let i = 0; i < v.length; i++) v[i] -= z[0];
    return v;
  }
  if (zp.rank === 1 && axis >= 0 && axis < x.rank && z.length === x.dims[axis]) {
    const inner = prod(x.dims, axis + 1), n = x.dims[axis];
    for (let i = 0; i < v.length; i++) v[i] -= z[Math.floor(i / inner) % n];
    return v;
  }
  const b = broadcastShapes(x.dims, zp.dims);
  if (b.join() !== x.dims.join()) throw new Error(`${what} of shape [${zp.dims.join(', ')}] does not match input shape [${x.dims.join(', ')}]`);
  const [idx] = broadcastIndex([zp.dims], x.dims);
  for (let i = 0; i < v.length; i++) v[i] -= z[idx ? idx[i] : i];
  return v;
}

/** A scale or zero point as a vector of `n` values (a scalar is repeated). */
function perIndex(t: TensorData, n: number, what: string): Float64Array {
  const v = t.toFloat64();
  if (v.length === 1) return new Float64Array(n).fill(v[0]);
  if (v.length === n) return v;
  throw new Error(`${what} should be a scalar or have ${n} elements, found shape [${t.dims.join(', ')}]`);
}

/** Requantize: saturate(round(v) + zp) for integer outputs; float8 outputs are encoded (saturating) unrounded. */
function requantize(dtype: DType, v: number, zp: number): number {
  return isInteger(dtype) ? saturate(dtype, roundHalfEven(v) + zp) : v + zp;
}

function integerConv(x: Float64Array, xt: TensorData, w: Float64Array, wt: TensorData, a: ConvAttrs) {
  checkConvRanks(xt, wt);
  const win = resolveWindow(xt.dims.slice(2), windowAttrs(a, convKernel(wt, a)));
  const outDims = [xt.dims[0], wt.dims[0], ...win.outDims];
  const y = new Float64Array(prod(outDims));
  convForward(x, xt.dims, w, wt.dims, undefined, win, a.group, y);
  return { y, outDims };
}

const ConvInteger = defineOp({
  name: 'ConvInteger', versions: [10], attrs: convAttrs, inputs: [2, 4], outputs: [1, 1],
  doc: 'Integer convolution with zero points, accumulating to int32',
  infer: (ctx) => {
    const x = tensorTypeOf(ctx.inputTypes[0]), w = tensorTypeOf(ctx.inputTypes[1]);
    if (!x) return [unknown];
    return [{ kind: 'tensor', dtype: 'int32', shape: inferConvShape(x.shape, w?.shape, ctx.attrs, (wd) => wd[0]) }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), w = ctx.tensor(1);
    const xc = centered(x, ctx.optionalTensor(2), 1, 'x_zero_point'), wc = centered(w, ctx.optionalTensor(3), 0, 'w_zero_point');
    const { y, outDims } = integerConv(xc, x, wc, w, ctx.attrs);
    return [TensorData.fromNumbers('int32', outDims, y)];
  },
});

const QLinearConv = defineOp({
  name: 'QLinearConv', versions: [10], attrs: convAttrs, inputs: [8, 9], outputs: [1, 1],
  doc: 'Quantized convolution: integer accumulation, requantized with round-half-even and saturation',
  infer: (ctx) => {
    const x = tensorTypeOf(ctx.inputTypes[0]), w = tensorTypeOf(ctx.inputTypes[3]);
    if (!x) return [unknown];
    const dtype = tensorTypeOf(ctx.inputTypes[7])?.dtype ?? x.dtype;
    return [{ kind: 'tensor', dtype, shape: inferConvShape(x.shape, w?.shape, ctx.attrs, (wd) => wd[0]) }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), w = ctx.tensor(3), yzpT = ctx.optionalTensor(7), b = ctx.optionalTensor(8);
    const M = w.dims[0];
    const xs = perIndex(ctx.tensor(1), 1, 'x_scale')[0], ws = perIndex(ctx.tensor(4), M, 'w_scale');
    const ys = perIndex(ctx.tensor(6), 1, 'y_scale')[0];
    const xc = centered(x, ctx.tensor(2), 1, 'x_zero_point'), wc = centered(w, ctx.tensor(5), 0, 'w_zero_point');
    const { y, outDims } = integerConv(xc, x, wc, w, ctx.attrs);
    const bias = b ? perIndex(b, M, 'B') : undefined;
    const dtype = yzpT?.dtype ?? x.dtype, yzp = yzpT ? perIndex(yzpT, 1, 'y_zero_point')[0] : 0;
    const G = prod(outDims, 2);
    for (let i = 0; i < y.length; i++) {
      const m = Math.floor(i / G) % M;
      y[i] = requantize(dtype, (y[i] + (bias ? bias[m] : 0)) * ((xs * ws[m]) / ys), yzp);
    }
    return [TensorData.fromNumbers(dtype, outDims, y)];
  },
});

function inferQMatMul(a: ValueType | undefined, b: ValueType | undefined, dtype: DType | undefined): ValueType {
  const at = tensorTypeOf(a), bt = tensorTypeOf(b);
  if (!dtype) return unknown;
  const shape: Dim[] | undefined = at && bt ? inferMatMulShape(at.shape, bt.shape) : undefined;
  return { kind: 'tensor', dtype, shape };
}

/** Integer matmul of zero-point-centered operands (per-row zero points for A, per-column for B). */
function integerMatMul(a: TensorData, azp: TensorData | undefined, b: TensorData, bzp: TensorData | undefined) {
  const p = planMatMul(a.dims, b.dims);
  const ac = centered(a, azp, a.rank >= 2 ? a.rank - 2 : -1, 'a_zero_point');
  const bc = centered(b, bzp, b.rank >= 2 ? b.rank - 1 : -1, 'b_zero_point');
  const y = new Float64Array(prod(p.outDims));
  runMatMul(p, ac, bc, y);
  return { y, p };
}

const MatMulInteger = defineOp({
  name: 'MatMulInteger', versions: [10], attrs: {}, inputs: [2, 4], outputs: [1, 1],
  doc: 'Integer matrix product with zero points, accumulating to int32',
  infer: (ctx) => [inferQMatMul(ctx.inputTypes[0], ctx.inputTypes[1], 'int32')],
  run: (ctx) => {
    const { y, p } = integerMatMul(ctx.tensor(0), ctx.optionalTensor(2), ctx.tensor(1), ctx.optionalTensor(3));
    return [TensorData.fromNumbers('int32', p.outDims, y)];
  },
});

const QLinearMatMul = defineOp({
  name: 'QLinearMatMul', versions: [10, 21], attrs: {}, inputs: [8, 8], outputs: [1, 1],
  doc: 'Quantized matrix product: integer accumulation, requantized with round-half-even and saturation',
  infer: (ctx) => [inferQMatMul(ctx.inputTypes[0], ctx.inputTypes[3], tensorTypeOf(ctx.inputTypes[7])?.dtype)],
  run: (ctx) => {
    const a = ctx.tensor(0), b = ctx.tensor(3), yzpT = ctx.tensor(7);
    const { y, p } = integerMatMul(a, ctx.tensor(2), b, ctx.tensor(5));
    const as = perIndex(ctx.tensor(1), p.M, 'a_scale'), bs = perIndex(ctx.tensor(4), p.N, 'b_scale');
    const ys = perIndex(ctx.tensor(6), p.N, 'y_scale'), yzp = perIndex(yzpT, p.N, 'y_zero_point');
    const MN = p.M * p.N;
    for (let t = 0; t < y.length; t++) {
      const i = Math.floor((t % MN) / p.N), j = t % p.N;
      y[t] = requantize(yzpT.dtype, (y[t] * as[i] * bs[j]) / ys[j], yzp[j]);
    }
    return [TensorData.fromNumbers(yzpT.dtype, p.outDims, y)];
  },
});

const ops: OpDef<any>[] = [ConvInteger, QLinearConv, MatMulInteger, QLinearMatMul];
export default ops;
