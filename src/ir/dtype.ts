// Element types. Names follow onnxruntime's JavaScript API ('float32', 'int64', ...) plus every newer ONNX type.
//
// Inside Kiln a tensor stores one element per array slot, so kernels can index directly:
//   float16/bfloat16 -> Uint16Array of bit patterns, float8*/float4e2m1 -> Uint8Array of bit patterns,
//   int4/int2 -> Int8Array, uint4/uint2 -> Uint8Array (unpacked; packing happens only at the ONNX and public-API
//   edges), bool -> Uint8Array of 0/1, int64/uint64 -> BigInt64Array/BigUint64Array, string -> string[].

export const DTYPES = [
  'float32', 'uint8', 'int8', 'uint16', 'int16', 'int32', 'int64', 'string', 'bool', 'float16', 'float64',
  'uint32', 'uint64', 'complex64', 'complex128', 'bfloat16', 'float8e4m3fn', 'float8e4m3fnuz', 'float8e5m2',
  'float8e5m2fnuz', 'uint4', 'int4', 'float4e2m1', 'float8e8m0', 'uint2', 'int2',
] as const;
export type DType = (typeof DTYPES)[number];

/** ONNX TensorProto.DataType code of each dtype (index in DTYPES + 1). */
export function onnxTypeCode(dtype: DType): number {
  return DTYPES.indexOf(dtype) + 1;
}
export function dtypeFromOnnx(code: number): DType {
  const d = DTYPES[code - 1];
  if (!d) throw new Error(`unknown ONNX element type code ${code} (known: 1..${DTYPES.length})`);
  return d;
}

export type TypedArray =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array;
export type TensorStorage = TypedArray | string[];

type ArrayCtor = { new (n: number): TypedArray; new (b: ArrayBufferLike, off: number, len: number): TypedArray; BYTES_PER_ELEMENT: number };

interface DTypeInfo {
  /** Storage array used inside Kiln (one element per slot). */
  storage: ArrayCtor | 'string';
  /** Bits per element in ONNX raw_data / packed public tensors. */
  bits: number;
  kind: 'float' | 'int' | 'uint' | 'bool' | 'string' | 'complex';
}

const INFO: Record<DType, DTypeInfo> = {
  float32: { storage: Float32Array, bits: 32, kind: 'float' },
  float64: { storage: Float64Array, bits: 64, kind: 'float' },
  float16: { storage: Uint16Array, bits: 16, kind: 'float' },
  bfloat16: { storage: Uint16Array, bits: 16, kind: 'float' },
  float8e4m3fn: { storage: Uint8Array, bits: 8, kind: 'float' },
  float8e4m3fnuz: { storage: Uint8Array, bits: 8, kind: 'float' },
  float8e5m2: { storage: Uint8Array, bits: 8, kind: 'float' },
  float8e5m2fnuz: { storage: Uint8Array, bits: 8, kind: 'float' },
  float8e8m0: { storage: Uint8Array, bits: 8, kind: 'float' },
  float4e2m1: { storage: Uint8Array, bits: 4, kind: 'float' },
  int8: { storage: Int8Array, bits: 8, kind: 'int' },
  uint8: { storage: Uint8Array, bits: 8, kind: 'uint' },
  int16: { storage: Int16Array, bits: 16, kind: 'int' },
  uint16: { storage: Uint16Array, bits: 16, kind: 'uint' },
  int32: { storage: Int32Array, bits: 32, kind: 'int' },
  uint32: { storage: Uint32Array, bits: 32, kind: 'uint' },
  int64: { storage: BigInt64Array, bits: 64, kind: 'int' },
  uint64: { storage: BigUint64Array, bits: 64, kind: 'uint' },
  int4: { storage: Int8Array, bits: 4, kind: 'int' },
  uint4: { storage: Uint8Array, bits: 4, kind: 'uint' },
  int2: { storage: Int8Array, bits: 2, kind: 'int' },
  uint2: { storage: Uint8Array, bits: 2, kind: 'uint' },
  bool: { storage: Uint8Array, bits: 8, kind: 'bool' },
  string: { storage: 'string', bits: 0, kind: 'string' },
  // complex types: storage interleaves (re, im).
  complex64: { storage: Float32Array, bits: 64, kind: 'complex' },
  complex128: { storage: Float64Array, bits: 128, kind: 'complex' },
};

export const dtypeBits = (d: DType) => INFO[d].bits;
export const dtypeKind = (d: DType) => INFO[d].kind;
export const isFloat = (d: DType) => INFO[d].kind === 'float';
export const isInteger = (d: DType) => INFO[d].kind === 'int' || INFO[d].kind === 'uint';
export const isBig = (d: DType) => d === 'int64' || d === 'uint64';
/** Types stored as bit patterns that must be decoded before arithmetic. */
export const isEncodedFloat = (d: DType) => isFloat(d) && d !== 'float32' && d !== 'float64';
export const isSubByte = (d: DType) => INFO[d].bits < 8 && INFO[d].bits > 0;

/** A zero-filled storage array for `n` elements of `dtype`. */
export function allocStorage(dtype: DType, n: number): TensorStorage {
  const s = INFO[dtype].storage;
  if (s === 'string') return new Array<string>(n).fill('');
  return new s(INFO[dtype].kind === 'complex' ? n * 2 : n);
}

export function storageCtor(dtype: DType): ArrayCtor | 'string' {
  return INFO[dtype].storage;
}

/** Integer range of an integer dtype, as numbers (int64 bounds are approximate). */
export function intRange(dtype: DType): [number, number] {
  const b = INFO[dtype].bits;
  if (INFO[dtype].kind === 'uint') return [0, 2 ** b - 1];
  if (INFO[dtype].kind === 'int') return [-(2 ** (b - 1)), 2 ** (b - 1) - 1];
  if (dtype === 'bool') return [0, 1];
  throw new Error(`intRange: ${dtype} is not an integer type`);
}

// ---------------------------------------------------------------------------------------------------------------
// float16 / bfloat16

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function float16ToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Round-to-nearest-even float -> float16 bits. */
export function floatToFloat16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let man = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = man >> shift;
    const rem = man & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (man >> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++;
  return sign | r;
}

export function bfloat16ToFloat(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

export function floatToBfloat16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff; // quiet NaN
  const lsb = (b >>> 16) & 1;
  return ((b + 0x7fff + lsb) >>> 16) & 0xffff;
}

// ---------------------------------------------------------------------------------------------------------------
// float8 / float4 / e8m0: decoded through 256-entry tables; encoded by round-to-nearest-even over the finite
// values, then the format's overflow rule (ONNX Cast `saturate`).

interface MiniFloat {
  decode: Float64Array; // code -> value
  positives: { v: number; code: number }[]; // finite values >= 0 sorted ascending (codes without sign bit)
  signBit: number;
  nan: number; // canonical NaN code (-1: none)
  inf: number; // +inf code (-1: none)
  uz: boolean; // 'unsigned zero' formats: no -0, NaN at 0x80
}

function miniFloat(ebits: number, mbits: number, bias: number, kind: 'fn' | 'fnuz' | 'ieee' | 'fp4'): MiniFloat {
  const total = 1 + ebits + mbits;
  const n = 1 << total;
  const signBit = 1 << (total - 1);
  const decode = new Float64Array(n);
  const emax = (1 << ebits) - 1;
  for (let c = 0; c < n; c++) {
    const s = c & signBit ? -1 : 1;
    const e = (c >> mbits) & emax;
    const m = c & ((1 << mbits) - 1);
    let v: number;
    if (kind === 'fnuz' && c === signBit) v = NaN;
    else if (kind === 'ieee' && e === emax) v = m ? NaN : s * Infinity;
    else if (kind === 'fn' && e === emax && m === (1 << mbits) - 1) v = NaN;
    else if (e === 0) v = s * m * 2 ** (1 - bias - mbits);
    else v = s * (1 + m / (1 << mbits)) * 2 ** (e - bias);
    decode[c] = v;
  }
  const positives: { v: number; code: number }[] = [];
  for (let c = 0; c < signBit; c++) if (Number.isFinite(decode[c])) positives.push({ v: decode[c], code: c });
  positives.sort((a, b) => a.v - b.v);
  const nan = kind === 'fnuz' ? signBit : kind === 'fp4' ? -1 : kind === 'ieee' ? (emax << mbits) | 1 | (1 << (mbits - 1)) : signBit - 1;
  const inf = kind === 'ieee' ? emax << mbits : -1;
  return { decode, positives, signBit, nan: kind === 'fn' ? signBit - 1 : nan, inf, uz: kind === 'fnuz' };
}

const FORMATS: Record<string, MiniFloat> = {
  float8e4m3fn: miniFloat(4, 3, 7, 'fn'),
  float8e4m3fnuz: miniFloat(4, 3, 8, 'fnuz'),
  float8e5m2: miniFloat(5, 2, 15, 'ieee'),
  float8e5m2fnuz: miniFloat(5, 2, 16, 'fnuz'),
  float4e2m1: miniFloat(2, 1, 1, 'fp4'),
};

export function miniFloatToFloat(dtype: DType, code: number): number {
  if (dtype === 'float8e8m0') return code === 0xff ? NaN : 2 ** (code - 127);
  return FORMATS[dtype].decode[code];
}

/**
 * Encode `x` into a float8/float4 code with round-to-nearest-even. `saturate` follows ONNX Cast: out-of-range
 * values clamp to the largest finite value instead of becoming inf/NaN (float4e2m1 always saturates).
 */
export function floatToMiniFloat(dtype: DType, x: number, saturate = true, roundMode: 'up' | 'down' | 'nearest' = 'up'): number {
  if (dtype === 'float8e8m0') return floatToE8M0(x, saturate, roundMode);
  const f = FORMATS[dtype];
  if (!f) throw new Error(`floatToMiniFloat: ${dtype} is not a float8/float4 type`);
  // float4e2m1 has no NaN: the ONNX reference (and its conformance outputs) encode NaN as 0b1000
  if (Number.isNaN(x)) return f.nan >= 0 ? f.nan : f.signBit;
  const neg = x < 0 || Object.is(x, -0);
  const a = Math.abs(x);
  const P = f.positives;
  const max = P[P.length - 1];
  const sign = (code: number) => (neg && !(f.uz && code === 0) ? code | f.signBit : code);
  const overflow = () => {
    if (f.nan < 0) return sign(max.code); // float4e2m1 has neither inf nor NaN
    if (saturate) return sign(max.code);
    if (f.inf >= 0) return sign(f.inf);
    return f.uz ? f.nan : sign(f.nan);
  };
  if (a === Infinity) return overflow();
  const ulp = max.v - P[P.length - 2].v;
  if (a > max.v + ulp / 2 || (a === max.v + ulp / 2 && max.code & 1)) return overflow();
  if (a >= max.v) return sign(max.code);
  // binary search for the first value >= a
  let lo = 0, hi = P.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (P[mid].v < a) lo = mid + 1;
    else hi = mid;
  }
  if (P[lo].v === a || lo === 0) return sign(P[lo].code);
  const below = P[lo - 1], above = P[lo];
  const d1 = a - below.v, d2 = above.v - a;
  const pick = d1 < d2 ? below : d2 < d1 ? above : below.code & 1 ? above : below;
  return sign(pick.code);
}

function floatToE8M0(x: number, saturate: boolean, mode: 'up' | 'down' | 'nearest'): number {
  if (Number.isNaN(x)) return 0xff;
  if (!Number.isFinite(x)) return saturate ? 0xfe : 0xff;
  const a = Math.abs(x);
  if (a === 0) return 0;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const exact = 2 ** e === a;
  if (!exact) {
    if (mode === 'up') e++;
    else if (mode === 'nearest' && a >= 1.5 * 2 ** e) e++;
  }
  const code = e + 127;
  if (code > 254) return saturate ? 0xfe : 0xff;
  if (code < 0) return 0;
  return code;
}

// ---------------------------------------------------------------------------------------------------------------
// Generic element access for reference kernels.

/** Decode the element at `i` of a storage array of `dtype` to a JS number (bigints are converted). */
export function decodeElement(dtype: DType, data: TensorStorage, i: number): number {
  const v = data[i];
  switch (dtype) {
    case 'float16': return float16ToFloat(v as number);
    case 'bfloat16': return bfloat16ToFloat(v as number);
    case 'float8e4m3fn': case 'float8e4m3fnuz': case 'float8e5m2': case 'float8e5m2fnuz': case 'float4e2m1': case 'float8e8m0':
      return miniFloatToFloat(dtype, v as number);
    case 'string': throw new Error('cannot read a string tensor as numbers');
    default: return typeof v === 'bigint' ? Number(v) : (v as number);
  }
}

/** Encode a JS number as an element of `dtype` (C-style conversion: floats round to nearest even, ints wrap). */
export function encodeElement(dtype: DType, x: number): number | bigint {
  switch (dtype) {
    case 'float32': case 'float64': return x;
    case 'float16': return floatToFloat16(x);
    case 'bfloat16': return floatToBfloat16(x);
    case 'float8e4m3fn': case 'float8e4m3fnuz': case 'float8e5m2': case 'float8e5m2fnuz': case 'float4e2m1': case 'float8e8m0':
      return floatToMiniFloat(dtype, x);
    case 'bool': return x !== 0 && !Number.isNaN(x) ? 1 : 0;
    case 'int64': return Number.isFinite(x) ? BigInt.asIntN(64, BigInt(Math.trunc(x))) : x !== x ? 0n : x > 0 ? 0x7fffffffffffffffn : -0x8000000000000000n;
    case 'uint64': return Number.isFinite(x) ? BigInt.asUintN(64, BigInt(Math.trunc(x))) : 0n;
    case 'int4': return wrapInt(x, 4, true);
    case 'uint4': return wrapInt(x, 4, false);
    case 'int2': return wrapInt(x, 2, true);
    case 'uint2': return wrapInt(x, 2, false);
    case 'string': throw new Error('cannot encode a number as a string element');
    default: return Number.isFinite(x) ? Math.trunc(x) : 0; // typed array assignment wraps
  }
}

function wrapInt(x: number, bits: number, signed: boolean): number {
  if (!Number.isFinite(x)) return 0;
  const m = 2 ** bits;
  let v = ((Math.trunc(x) % m) + m) % m;
  if (signed && v >= m / 2) v -= m;
  return v;
}
