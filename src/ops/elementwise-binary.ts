// Binary elementwise ops with numpy broadcasting: arithmetic, Pow, Mod, bit shifts, bitwise and logical ops and
// comparisons.
import { attr, defineOp, type OpDef } from '../ir/schema.js';
import { type DType, dtypeBits, dtypeKind, encodeElement, isEncodedFloat, isFloat } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { broadcastShapes } from './util.js';
import {
  type BinaryKernels, type Slots, binaryOp, compareOp, inferBroadcastOp, inferSame, legacyBroadcast, map2, scratch64,
  storageClass, unaryOp,
} from './elementwise-core.js';

// Before opset 7 these ops broadcast only with broadcast=1 (B aligned with A at `axis`).
const LEGACY = { broadcast: attr.int(0), axis: attr.int() };

function arith(name: string, versions: number[], doc: string, k: BinaryKernels) {
  return defineOp({
    name, versions, attrs: LEGACY, inputs: [2, 2], outputs: [1, 1], doc, infer: inferBroadcastOp(),
    run: (ctx) => {
      const a = ctx.tensor(0);
      return [binaryOp(a, legacyBroadcast(a, ctx.tensor(1), ctx.opset, ctx.attrs), k)];
    },
  });
}

function compare(name: string, versions: number[], doc: string, cmp: (x: any, y: any) => boolean, strings = false) {
  return defineOp({
    name, versions, attrs: LEGACY, inputs: [2, 2], outputs: [1, 1], doc, infer: inferBroadcastOp('bool'),
    run: (ctx) => {
      const a = ctx.tensor(0);
      return [compareOp(a, legacyBroadcast(a, ctx.tensor(1), ctx.opset, ctx.attrs), cmp, strings)];
    },
  });
}

// Integer division by zero is undefined behaviour in C; Kiln yields 0 rather than failing the whole model.
const arithmetic: OpDef<any>[] = [
  arith('Add', [1, 6, 7, 13, 14], 'C = A + B', {
    fast: 'add', float: (x, y) => x + y, int: (x, y) => x + y, big: (x, y) => x + y,
  }),
  arith('Sub', [1, 6, 7, 13, 14], 'C = A - B', {
    fast: 'sub', float: (x, y) => x - y, int: (x, y) => x - y, big: (x, y) => x - y,
  }),
  arith('Mul', [1, 6, 7, 13, 14], 'C = A * B', {
    fast: 'mul', float: (x, y) => x * y, int: Math.imul, big: (x, y) => x * y,
  }),
  arith('Div', [1, 6, 7, 13, 14], 'C = A / B (integers truncate toward zero)', {
    fast: 'div', float: (x, y) => x / y, int: (x, y) => (y === 0 ? 0 : Math.trunc(x / y)),
    big: (x, y) => (y === 0n ? 0n : x / y),
  }),
  arith('And', [1, 7], 'C = A and B', { bool: (x, y) => x & y }),
  arith('Or', [1, 7], 'C = A or B', { bool: (x, y) => x | y }),
  arith('Xor', [1, 7], 'C = A xor B', { bool: (x, y) => x ^ y }),
];

const bitwise: OpDef<any>[] = [
  arith('BitwiseAnd', [18], 'C = A & B', { int: (x, y) => x & y, big: (x, y) => x & y }),
  arith('BitwiseOr', [18], 'C = A | B', { int: (x, y) => x | y, big: (x, y) => x | y }),
  arith('BitwiseXor', [18], 'C = A ^ B', { int: (x, y) => x ^ y, big: (x, y) => x ^ y }),
  defineOp({
    name: 'BitwiseNot', versions: [18], attrs: {}, inputs: [1, 1], outputs: [1, 1], doc: 'Y = ~X', infer: inferSame,
    run: (ctx) => [unaryOp(ctx.tensor(0), { int: (x) => ~x, big: (x) => ~x })],
  }),
];

const comparisons: OpDef<any>[] = [
  compare('Equal', [1, 7, 11, 13, 19], 'C = (A == B)', (x, y) => x === y, true),
  compare('Greater', [1, 7, 9, 13], 'C = (A > B)', (x, y) => x > y),
  compare('Less', [1, 7, 9, 13], 'C = (A < B)', (x, y) => x < y),
  compare('GreaterOrEqual', [12, 16], 'C = (A >= B)', (x, y) => x >= y),
  compare('LessOrEqual', [12, 16], 'C = (A <= B)', (x, y) => x <= y),
];

// ---------------------------------------------------------------------------------------------------------------
// Pow: base and exponent may have different types; the output has the base's type.

/** C's pow: pow(1, y) = 1 and pow(-1, +-inf) = 1, where JS gives NaN. */
function powF(x: number, y: number): number {
  if (x === 1 || y === 0) return 1;
  if (x === -1 && (y === Infinity || y === -Infinity)) return 1;
  return Math.pow(x, y);
}

/** Integer power with negative exponents truncating like 1/x^n (only +-1 survive). */
function negIntPow(x: number, odd: boolean): number {
  return x === 1 ? 1 : x === -1 ? (odd ? -1 : 1) : 0;
}

/** x^e modulo 2^32 (exact wrap for every integer type of at most 32 bits). */
function powInt(x: number, e: number): number {
  if (e < 0) return negIntPow(x, e % 2 !== 0);
  let r = 1, base = x | 0;
  for (let k = Math.trunc(e); k > 0; k = Math.floor(k / 2)) {
    if (k % 2) r = Math.imul(r, base);
    base = Math.imul(base, base);
  }
  return r;
}

/** x^e modulo 2^64. */
function powBig(x: bigint, e: bigint): bigint {
  if (e < 0n) return BigInt(negIntPow(Number(x), (e & 1n) === 1n));
  let r = 1n, base = BigInt.asUintN(64, x);
  for (let k = e; k > 0n; k >>= 1n) {
    if (k & 1n) r = BigInt.asUintN(64, r * base);
    base = BigInt.asUintN(64, base * base);
  }
  return r;
}

function pow(a: TensorData, b: TensorData): TensorData {
  const ca = storageClass(a.dtype), cb = storageClass(b.dtype);
  if (ca === 'other' || ca === 'bool' || cb === 'other' || cb === 'bool') {
    throw new Error(`Pow needs numeric base and exponent, found ${a.dtype} and ${b.dtype}`);
  }
  const dims = broadcastShapes(a.dims, b.dims);
  const floatExp = () => (isEncodedFloat(b.dtype) ? b.toFloat64() : (b.data as Slots));
  if (ca === 'float') {
    if (isEncodedFloat(a.dtype)) {
      const out = scratch64(dims);
      map2(dims, a.dims, b.dims, out, a.toFloat64(), floatExp(), (x, y) => powF(x, Number(y)));
      return TensorData.fromNumbers(a.dtype, dims, out);
    }
    const out = TensorData.zeros(a.dtype, dims);
    map2(dims, a.dims, b.dims, out.data as Slots, a.data as Slots, floatExp(), (x, y) => powF(x, Number(y)));
    return out;
  }
  const out = TensorData.zeros(a.dtype, dims);
  const O = out.data as Slots, A = a.data as Slots, B = floatExp();
  if (ca === 'int') {
    if (cb === 'int') map2(dims, a.dims, b.dims, O, A, B, powInt);
    else if (cb === 'big') map2(dims, a.dims, b.dims, O, A, B, (x, e) => Number(BigInt.asIntN(32, powBig(BigInt(x), e))));
    else map2(dims, a.dims, b.dims, O, A, B, powF); // the store truncates toward zero like a C cast
  } else {
    const dt: DType = a.dtype;
    if (cb === 'float') map2(dims, a.dims, b.dims, O, A, B, (x, y) => encodeElement(dt, powF(Number(x), y)));
    else map2(dims, a.dims, b.dims, O, A, B, (x, e) => powBig(x, BigInt(e)));
  }
  return out;
}

const Pow = defineOp({
  name: 'Pow', versions: [1, 7, 12, 13, 15], attrs: LEGACY, inputs: [2, 2], outputs: [1, 1],
  doc: 'Z = X ^ Y (output has the base type)', infer: inferBroadcastOp(undefined, [0, 1], [0]),
  run: (ctx) => {
    const a = ctx.tensor(0);
    return [pow(a, legacyBroadcast(a, ctx.tensor(1), ctx.opset, ctx.attrs))];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Mod and BitShift

const FMOD: BinaryKernels = {
  float: (x, y) => x % y, int: (x, y) => (y === 0 ? 0 : x % y), big: (x, y) => (y === 0n ? 0n : x % y),
};
// fmod=0: the remainder takes the divisor's sign (Python's %).
const PYMOD: BinaryKernels = {
  int: (x, y) => {
    if (y === 0) return 0;
    const r = x % y;
    return r !== 0 && r < 0 !== y < 0 ? r + y : r;
  },
  big: (x, y) => {
    if (y === 0n) return 0n;
    const r = x % y;
    return r !== 0n && r < 0n !== y < 0n ? r + y : r;
  },
};

const Mod = defineOp({
  name: 'Mod', versions: [10, 13], attrs: { fmod: attr.int(0) }, inputs: [2, 2], outputs: [1, 1],
  doc: 'C = A mod B (fmod=0: sign of the divisor, integers only; fmod=1: sign of the dividend, like C fmod)',
  infer: inferBroadcastOp(),
  run: (ctx) => {
    const a = ctx.tensor(0), b = ctx.tensor(1);
    const fmod = ctx.attrs.fmod;
    if (fmod !== 0 && fmod !== 1) throw new Error(`fmod must be 0 or 1, found ${fmod}`);
    if (fmod === 0 && isFloat(a.dtype)) throw new Error(`fmod must be 1 for floating-point inputs (${a.dtype}), found 0`);
    return [binaryOp(a, b, fmod ? FMOD : PYMOD)];
  },
});

const BitShift = defineOp({
  name: 'BitShift', versions: [11], attrs: { direction: attr.string() }, inputs: [2, 2], outputs: [1, 1],
  doc: "Z = X << Y or X >> Y (direction 'LEFT' or 'RIGHT'), unsigned integers; shifts past the width give 0",
  infer: inferBroadcastOp(),
  run: (ctx) => {
    const a = ctx.tensor(0), b = ctx.tensor(1);
    const dir = ctx.attrs.direction;
    if (dir !== 'LEFT' && dir !== 'RIGHT') throw new Error(`direction must be 'LEFT' or 'RIGHT', found '${dir}'`);
    if (dtypeKind(a.dtype) !== 'uint') throw new Error(`BitShift needs an unsigned integer type, found ${a.dtype}`);
    const bits = dtypeBits(a.dtype), wide = BigInt(bits);
    // Multiplying/dividing by powers of two is exact in float64, and the typed-array store wraps.
    const k: BinaryKernels = dir === 'LEFT'
      ? { int: (x, s) => (s >= bits ? 0 : x * 2 ** s), big: (x, s) => (s >= wide ? 0n : x << s) }
      : { int: (x, s) => (s >= bits ? 0 : Math.floor(x / 2 ** s)), big: (x, s) => (s >= wide ? 0n : x >> s) };
    return [binaryOp(a, b, k)];
  },
});

const ops: OpDef<any>[] = [...arithmetic, ...bitwise, ...comparisons, Pow, Mod, BitShift];
export default ops;
