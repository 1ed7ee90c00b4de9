// Linear quantization: QuantizeLinear, DequantizeLinear (per-tensor, per-axis and blocked) and DynamicQuantizeLinear.
import { defineOp, attr, type OpDef } from '../ir/schema.js';
import {
  type DType, type TypedArray, dtypeFromOnnx, dtypeKind, intRange, isFloat, floatToMiniFloat, floatToFloat16,
  float16ToFloat, floatToBfloat16, bfloat16ToFloat,
} from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import type { ValueType } from '../ir/graph.js';
import { normAxis, prod, tensorTypeOf } from './util.js';
import { castTensor } from './cast.js';

const QUANT_TYPES = new Set<DType>([
  'int8', 'uint8', 'int16', 'uint16', 'int32', 'int4', 'uint4', 'int2', 'uint2',
  'float8e4m3fn', 'float8e4m3fnuz', 'float8e5m2', 'float8e5m2fnuz', 'float8e8m0', 'float4e2m1',
]);

/** Round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** A function rounding a float64 value to the precision of a float dtype (identity for float64). */
function rounder(dtype: DType): (x: number) => number {
  switch (dtype) {
    case 'float32': return Math.fround;
    case 'float16': return (x) => float16ToFloat(floatToFloat16(x));
    case 'bfloat16': return (x) => bfloat16ToFloat(floatToBfloat16(x));
    default: return (x) => x;
  }
}

/**
 * For each element of `x` (shape `dims`), the index of its scale/zero point, for the three granularities: a
 * scalar scale (per tensor), a 1-D scale along `axis` (per axis), or a scale of the same rank as x whose `axis`
 * dimension is ceil(dims[axis] / blockSize) (blocked). Returns a function of the flat index.
 */
function scaleIndexer(dims: readonly number[], scale: TensorData, axisAttr: number, blockSize: number): (i: number) => number {
  const rank = dims.length;
  if (blockSize < 0) throw new Error(`block_size must be >= 0, got ${blockSize}`);
  if (blockSize === 0 && (scale.rank === 0 || scale.size === 1)) return () => 0;
  const axis = normAxis(axisAttr, rank);
  const n = dims[axis], inner = prod(dims, axis + 1);
  if (blockSize === 0) {
    if (scale.rank !== 1 || scale.dims[0] !== n) {
      throw new Error(`per-axis scale must be 1-D of length ${n} (dimension ${axis} of the input), got shape [${scale.dims.join(', ')}]`);
    }
    return (i) => Math.floor(i / inner) % n;
  }
  const nb = Math.ceil(n / blockSize);
  const ok = scale.rank === rank && scale.dims.every((d, k) => (k === axis ? d === nb : d === dims[k]));
  if (!ok) {
    const want = dims.map((d, k) => (k === axis ? nb : d));
    throw new Error(`blocked scale must have shape [${want.join(', ')}] for block_size ${blockSize}, got [${scale.dims.join(', ')}]`);
  }
  return (i) => {
    const o = Math.floor(i / (n * inner)), k = Math.floor(i / inner) % n, r = i % inner;
    return (o * nb + Math.floor(k / blockSize)) * inner + r;
  };
}

function checkZeroPoint(zp: TensorData | undefined, scale: TensorData): void {
  if (zp && (zp.size !== scale.size || (zp.rank > 1 && zp.dims.some((d, k) => d !== scale.dims[k])))) {
    throw new Error(`zero point shape [${zp.dims.join(', ')}] must match the scale shape [${scale.dims.join(', ')}]`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// QuantizeLinear

export interface QuantizeOptions {
  axis?: number;
  blockSize?: number;
  saturate?: boolean;
  /** dtype in which x / scale is computed (default: the scale's type). */
  precision?: DType;
}

export function quantizeLinear(x: TensorData, scale: TensorData, zp: TensorData | undefined, outType: DType, o: QuantizeOptions = {}): TensorData {
  if (!QUANT_TYPES.has(outType) || outType === 'int32') throw new Error(`QuantizeLinear cannot produce ${outType}`);
  if (zp && zp.dtype !== outType) throw new Error(`zero point type ${zp.dtype} must equal the output type ${outType}`);
  checkZeroPoint(zp, scale);
  const idx = scaleIndexer(x.dims, scale, o.axis ?? 1, o.blockSize ?? 0);
  const xv = x.toFloat64(), sv = scale.toFloat64(), zv = zp?.toFloat64();
  const round = rounder(o.precision ?? scale.dtype);
  const out = TensorData.zeros(outType, x.dims);
  const d = out.data as TypedArray;
  const n = x.size;
  if (isFloat(outType)) {
    const sat = o.saturate ?? true;
    for (let i = 0; i < n; i++) {
      const k = idx(i);
      d[i] = floatToMiniFloat(outType, round(xv[i] / sv[k]) + (zv ? zv[k] : 0), sat);
    }
    return out;
  }
  const [lo, hi] = intRange(outType);
  for (let i = 0; i < n; i++) {
    const k = idx(i);
    const q = roundHalfEven(round(xv[i] / sv[k])) + (zv ? zv[k] : 0);
    d[i] = Number.isNaN(q) ? 0 : q < lo ? lo : q > hi ? hi : q;
  }
  return out;
}

function quantOutType(zp: DType | undefined, outputDtype: number): DType {
  const attrType = outputDtype ? dtypeFromOnnx(outputDtype) : undefined;
  if (zp && attrType && zp !== attrType) throw new Error(`output_dtype ${attrType} does not match the zero point type ${zp}`);
  return zp ?? attrType ?? 'uint8';
}

const QuantizeLinear = defineOp({
  name: 'QuantizeLinear', versions: [10, 13, 19, 21, 23, 24, 25],
  attrs: { axis: attr.int(1), block_size: attr.int(0), output_dtype: attr.int(0), saturate: attr.int(1), precision: attr.int(0) },
  inputs: [2, 3], outputs: [1, 1],
  doc: 'y = saturate(round_half_even(x / y_scale) + y_zero_point), per tensor, per axis or blocked.',
  infer: (ctx) => {
    const x = tensorTypeOf(ctx.inputTypes[0]);
    const zp = tensorTypeOf(ctx.inputTypes[2]);
    return [{ kind: 'tensor', dtype: quantOutType(zp?.dtype, ctx.attrs.output_dtype), shape: x?.shape }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), scale = ctx.tensor(1), zp = ctx.optionalTensor(2);
    const a = ctx.attrs;
    const outType = quantOutType(zp?.dtype, a.output_dtype);
    return [quantizeLinear(x, scale, zp, outType, {
      axis: ctx.opset >= 13 ? a.axis : 1, blockSize: a.block_size, saturate: a.saturate !== 0,
      precision: a.precision ? dtypeFromOnnx(a.precision) : undefined,
    })];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// DequantizeLinear

export function dequantizeLinear(x: TensorData, scale: TensorData, zp: TensorData | undefined, outType: DType, axis = 1, blockSize = 0): TensorData {
  if (!QUANT_TYPES.has(x.dtype)) throw new Error(`DequantizeLinear cannot read ${x.dtype} input`);
  if (!isFloat(outType) || dtypeKind(outType) !== 'float') throw new Error(`DequantizeLinear output must be a float type, got ${outType}`);
  if (zp && zp.dtype !== x.dtype) throw new Error(`zero point type ${zp.dtype} must equal the input type ${x.dtype}`);
  checkZeroPoint(zp, scale);
  const idx = scaleIndexer(x.dims, scale, axis, blockSize);
  const xv = x.toFloat64(), sv = scale.toFloat64(), zv = zp?.toFloat64();
  const n = x.size;
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const k = idx(i);
    y[i] = (xv[i] - (zv ? zv[k] : 0)) * sv[k];
  }
  return castTensor(new TensorData('float64', x.dims, y), outType);
}

function dequantOutType(scale: DType | undefined, outputDtype: number): DType | undefined {
  return outputDtype ? dtypeFromOnnx(outputDtype) : scale;
}

const DequantizeLinear = defineOp({
  name: 'DequantizeLinear', versions: [10, 13, 19, 21, 23, 24, 25],
  attrs: { axis: attr.int(1), block_size: attr.int(0), output_dtype: attr.int(0) },
  inputs: [2, 3], outputs: [1, 1],
  doc: 'y = (x - x_zero_point) * x_scale, per tensor, per axis or blocked.',
  infer: (ctx) => {
    const x = tensorTypeOf(ctx.inputTypes[0]);
    const dtype = dequantOutType(tensorTypeOf(ctx.inputTypes[1])?.dtype, ctx.attrs.output_dtype);
    return [dtype ? { kind: 'tensor', dtype, shape: x?.shape } : { kind: 'unknown' }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0), scale = ctx.tensor(1), zp = ctx.optionalTensor(2);
    const outType = dequantOutType(scale.dtype, ctx.attrs.output_dtype) as DType;
    return [dequantizeLinear(x, scale, zp, outType, ctx.opset >= 13 ? ctx.attrs.axis : 1, ctx.attrs.block_size)];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// DynamicQuantizeLinear

const DynamicQuantizeLinear = defineOp({
  name: 'DynamicQuantizeLinear', versions: [11], attrs: {}, inputs: [1, 1], outputs: [3, 3],
  doc: 'uint8 quantization of a float tensor with scale and zero point computed from its range.',
  infer: (ctx) => {
    const x = tensorTypeOf(ctx.inputTypes[0]);
    const t = (dtype: DType, shape?: (number | string | undefined)[]): ValueType => ({ kind: 'tensor', dtype, shape });
    return [t('uint8', x?.shape), t('float32', []), t('uint8', [])];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    if (x.dtype !== 'float32') throw new Error(`DynamicQuantizeLinear expects a float32 input, got ${x.dtype}`);
    const xv = x.data as Float32Array;
    let lo = 0, hi = 0;
    for (let i = 0; i < xv.length; i++) {
      const v = xv[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const scale = Math.fround((hi - lo) / 255);
    const zpv = scale === 0 ? 0 : Math.min(255, Math.max(0, roundHalfEven(Math.fround(-lo / scale))));
    const scaleT = TensorData.scalar('float32', scale);
    const zpT = TensorData.scalar('uint8', zpv);
    // an all-zero input has scale 0: every quantized value is the zero point
    const y = scale === 0 ? TensorData.zeros('uint8', x.dims) : quantizeLinear(x, scaleT, zpT, 'uint8');
    return [y, scaleT, zpT];
  },
});

const ops: OpDef<any>[] = [QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear];
export default ops;
