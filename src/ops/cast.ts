// Type conversion: Cast, CastLike and BitCast. `castTensor` is also the conversion used by the quantize family.
import { defineOp, attr, type OpDef } from '../ir/schema.js';
import {
  type DType, type TypedArray, dtypeFromOnnx, dtypeBits, dtypeKind, isBig, isSubByte, allocStorage,
  floatToMiniFloat, floatToFloat16, float16ToFloat, floatToBfloat16, encodeElement,
} from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { packSubByte, unpackSubByte } from '../ir/packing.js';
import type { ValueType } from '../ir/graph.js';
import { tensorTypeOf } from './util.js';

export type RoundMode = 'up' | 'down' | 'nearest';
export interface CastOptions {
  /** float8 targets: clamp out-of-range values to the largest finite value (ONNX default) instead of inf/NaN. */
  saturate?: boolean;
  /** float8e8m0 target: rounding direction. */
  roundMode?: RoundMode;
}

const MINI_FLOATS = new Set<DType>(['float8e4m3fn', 'float8e4m3fnuz', 'float8e5m2', 'float8e5m2fnuz', 'float8e8m0', 'float4e2m1']);

/** Convert a tensor to `to` with ONNX Cast semantics. Returns the input itself when no conversion is needed. */
export function castTensor(t: TensorData, to: DType, opts: CastOptions = {}): TensorData {
  if (t.dtype === to) return t;
  if (dtypeKind(to) === 'complex' || dtypeKind(t.dtype) === 'complex') {
    throw new Error(`Cast between ${t.dtype} and ${to} is not supported (complex types have no ONNX Cast semantics)`);
  }
  if (to === 'string') return TensorData.strings(t.dims, formatAll(t));
  if (t.dtype === 'string') return parseAll(t.data as string[], t.dims, to, opts);
  if (isBig(t.dtype) && (dtypeKind(to) === 'int' || dtypeKind(to) === 'uint')) return castFromBig(t, to);
  const out = TensorData.zeros(to, t.dims);
  const n = t.size;
  // float32 <-> float64 and narrower ints into wider storage: the typed-array copy is exact
  if ((to === 'float32' || to === 'float64') && !isBig(t.dtype)) {
    const src = t.dtype === 'float32' || t.dtype === 'float64' || !(isEncoded(t.dtype)) ? (t.data as ArrayLike<number>) : t.toFloat64();
    (out.data as Float32Array).set(src);
    return out;
  }
  const x = t.toFloat64();
  encodeInto(out.data as TypedArray, to, x, n, opts);
  return out;
}

function isEncoded(d: DType): boolean {
  return d === 'float16' || d === 'bfloat16' || MINI_FLOATS.has(d);
}

function encodeInto(d: TypedArray, to: DType, x: Float64Array, n: number, opts: CastOptions): void {
  if (MINI_FLOATS.has(to)) {
    const sat = opts.saturate ?? true, mode = opts.roundMode ?? 'up';
    for (let i = 0; i < n; i++) d[i] = floatToMiniFloat(to, x[i], sat, mode);
  } else if (to === 'float16') {
    for (let i = 0; i < n; i++) d[i] = floatToFloat16(x[i]);
  } else if (to === 'bfloat16') {
    for (let i = 0; i < n; i++) d[i] = floatToBfloat16(x[i]);
  } else if (to === 'bool') {
    // C++ and numpy: NaN is truthy
    for (let i = 0; i < n; i++) d[i] = x[i] !== 0 ? 1 : 0;
  } else if (isBig(to)) {
    for (let i = 0; i < n; i++) d[i] = encodeElement(to, x[i]) as bigint;
  } else if (isSubByte(to)) {
    for (let i = 0; i < n; i++) d[i] = encodeElement(to, x[i]) as number;
  } else {
    // float -> int: truncate toward zero; out-of-range values wrap like the typed-array store (numpy behaviour)
    for (let i = 0; i < n; i++) {
      const v = x[i];
      d[i] = Number.isFinite(v) ? Math.trunc(v) : 0;
    }
  }
}

function castFromBig(t: TensorData, to: DType): TensorData {
  const src = t.data as BigInt64Array | BigUint64Array;
  const out = TensorData.zeros(to, t.dims);
  const d = out.data as TypedArray;
  const bits = dtypeBits(to);
  const signed = dtypeKind(to) === 'int';
  for (let i = 0; i < src.length; i++) {
    const w = signed ? BigInt.asIntN(bits, src[i]) : BigInt.asUintN(bits, src[i]);
    d[i] = (isBig(to) ? w : Number(w)) as never;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// strings: numpy-like formatting (shortest round-trip repr of the source precision) and parsing

function formatAll(t: TensorData): string[] {
  const out = new Array<string>(t.size);
  const d = t.data;
  if (t.dtype === 'bool') for (let i = 0; i < t.size; i++) out[i] = d[i] ? 'True' : 'False';
  else if (dtypeKind(t.dtype) !== 'float') for (let i = 0; i < t.size; i++) out[i] = String(d[i]);
  else {
    const prec = t.dtype === 'float64' ? 'double' : t.dtype === 'float16' ? 'half' : 'single';
    for (let i = 0; i < t.size; i++) out[i] = formatFloat(t.get(i), prec);
  }
  return out;
}

/** numpy's repr of a float: shortest round-trip digits, positional for 1e-4 <= |x| < 1e16, else scientific. */
export function formatFloat(x: number, precision: 'double' | 'single' | 'half' = 'double'): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const v = shortest(x, precision);
  const [mant, expStr] = v.toExponential().split('e');
  const exp = Number(expStr);
  const neg = mant.startsWith('-');
  const digits = mant.replace('-', '').replace('.', '');
  const sign = neg ? '-' : '';
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intLen = exp + 1;
  if (digits.length <= intLen) return `${sign}${digits}${'0'.repeat(intLen - digits.length)}.0`;
  return `${sign}${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
}

/** The double holding the shortest decimal that rounds back to `x` in the given precision. */
function shortest(x: number, precision: 'double' | 'single' | 'half'): number {
  if (precision === 'double') return x;
  const same = precision === 'single' ? (y: number) => Math.fround(y) === x : (y: number) => float16ToFloat(floatToFloat16(y)) === x;
  for (let p = 1; p < 17; p++) {
    const y = Number(x.toPrecision(p));
    if (same(y)) return y;
  }
  return x;
}

const NUMBER_RE = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const INT_RE = /^[+-]?\d+$/;

/** Parse a numeric string as Cast does: plain or scientific notation, and case-insensitive INF/-INF/NaN. */
export function parseNumber(s: string): number {
  const v = s.trim();
  const low = v.toLowerCase();
  if (low === 'inf' || low === '+inf' || low === 'infinity' || low === '+infinity') return Infinity;
  if (low === '-inf' || low === '-infinity') return -Infinity;
  if (low === 'nan' || low === '+nan' || low === '-nan') return NaN;
  if (!NUMBER_RE.test(v)) throw new Error(`cannot convert the string '${s}' to a number`);
  return Number(v);
}

function parseAll(strs: string[], dims: readonly number[], to: DType, opts: CastOptions): TensorData {
  if (to === 'bool') {
    // numpy: a non-empty string is not necessarily true; ONNX implementations parse the number
    return TensorData.fromNumbers('bool', dims, strs.map((s) => {
      const low = s.trim().toLowerCase();
      if (low === 'true') return 1;
      if (low === 'false') return 0;
      return parseNumber(s) !== 0 ? 1 : 0;
    }));
  }
  if (isBig(to)) {
    const vals = strs.map((s) => (INT_RE.test(s.trim()) ? BigInt(s.trim()) : BigInt(Math.trunc(finiteOrZero(parseNumber(s))))));
    return TensorData.fromBigInts(to as 'int64' | 'uint64', dims, vals);
  }
  const x = Float64Array.from(strs, parseNumber);
  if (to === 'float32' || to === 'float64') return TensorData.fromNumbers(to, dims, x);
  const out = TensorData.zeros(to, dims);
  encodeInto(out.data as TypedArray, to, x, x.length, opts);
  return out;
}

const finiteOrZero = (x: number) => (Number.isFinite(x) ? x : 0);

// ---------------------------------------------------------------------------------------------------------------
// BitCast

/** Reinterpret the bits of `t` as `to` (same bit width; little-endian bytes). */
export function bitCast(t: TensorData, to: DType): TensorData {
  if (t.dtype === 'string' || to === 'string') throw new Error(`BitCast does not support string tensors (from ${t.dtype} to ${to})`);
  const bits = dtypeBits(t.dtype);
  if (bits !== dtypeBits(to)) {
    throw new Error(`BitCast needs types of the same bit width, got ${t.dtype} (${bits} bits) and ${to} (${dtypeBits(to)} bits)`);
  }
  if (t.dtype === to) return t;
  if (isSubByte(to)) return new TensorData(to, t.dims, unpackSubByte(to, packSubByte(t.dtype, t.data as Uint8Array), t.size));
  const src = t.data as TypedArray;
  const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength).slice();
  const out = allocStorage(to, t.size) as TypedArray;
  new Uint8Array(out.buffer).set(bytes);
  if (to === 'bool') for (let i = 0; i < out.length; i++) out[i] = out[i] ? 1 : 0;
  return new TensorData(to, t.dims, out);
}

// ---------------------------------------------------------------------------------------------------------------
// ops

const castAttrs = { to: attr.int(), saturate: attr.int(1), round_mode: attr.string('up') };
const likeAttrs = { saturate: attr.int(1), round_mode: attr.string('up') };

function optsOf(a: { saturate: number; round_mode: string }, opset: number): CastOptions {
  const mode = a.round_mode;
  if (opset >= 25 && mode !== 'up' && mode !== 'down' && mode !== 'nearest') {
    throw new Error(`round_mode must be 'up', 'down' or 'nearest', got '${mode}'`);
  }
  return { saturate: opset < 19 || a.saturate !== 0, roundMode: opset >= 25 ? (mode as RoundMode) : 'up' };
}

function targetOf(to: number | undefined): DType {
  if (to === undefined) throw new Error("the required attribute 'to' is missing");
  return dtypeFromOnnx(to);
}

const sameShape = (t: ValueType | undefined, dtype: DType): ValueType[] => [{ kind: 'tensor', dtype, shape: tensorTypeOf(t)?.shape }];

const Cast = defineOp({
  name: 'Cast', versions: [1, 6, 9, 13, 19, 21, 23, 24, 25], attrs: castAttrs, inputs: [1, 1], outputs: [1, 1],
  doc: 'Convert elements to the type given by `to` (strings, float8/float4/e8m0 with saturate and round_mode).',
  infer: (ctx) => sameShape(ctx.inputTypes[0], targetOf(ctx.attrs.to)),
  run: (ctx) => [castTensor(ctx.tensor(0), targetOf(ctx.attrs.to), optsOf(ctx.attrs, ctx.opset))],
});

const CastLike = defineOp({
  name: 'CastLike', versions: [15, 19, 21, 23, 24, 25], attrs: likeAttrs, inputs: [2, 2], outputs: [1, 1],
  doc: 'Convert elements to the element type of the second input.',
  infer: (ctx) => {
    const like = tensorTypeOf(ctx.inputTypes[1]);
    return like ? sameShape(ctx.inputTypes[0], like.dtype) : [{ kind: 'unknown' }];
  },
  run: (ctx) => [castTensor(ctx.tensor(0), ctx.tensor(1).dtype, optsOf(ctx.attrs, ctx.opset))],
});

const BitCast = defineOp({
  name: 'BitCast', versions: [26], attrs: { to: attr.int() }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Reinterpret the bits of each element as the type given by `to` (same bit width).',
  infer: (ctx) => sameShape(ctx.inputTypes[0], targetOf(ctx.attrs.to)),
  run: (ctx) => [bitCast(ctx.tensor(0), targetOf(ctx.attrs.to))],
});

const ops: OpDef<any>[] = [Cast, CastLike, BitCast];
export default ops;
