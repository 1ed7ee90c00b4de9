// Unary math and activation functions.
import { attr, defineOp, type OpDef } from '../ir/schema.js';
import { broadcastShapes } from './util.js';
import { type UnaryKernels, binaryOp, inferSame, inferSameShape, unaryOp } from './elementwise-core.js';

/** erf in float64: a positive-term series below 3 (no cancellation), erfc's continued fraction above. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  let r: number;
  if (ax >= 6) r = 1;
  else if (ax < 3) {
    // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))
    const x2 = ax * ax;
    let term = ax, sum = ax;
    for (let n = 1; n < 200 && term > sum * 1e-17; n++) {
      term *= (2 * x2) / (2 * n + 1);
      sum += term;
    }
    r = (2 / Math.sqrt(Math.PI)) * Math.exp(-x2) * sum;
  } else {
    // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated from the tail
    let f = ax;
    for (let k = 60; k >= 1; k--) f = ax + k / 2 / f;
    r = 1 - Math.exp(-ax * ax) / (Math.sqrt(Math.PI) * f);
  }
  return x < 0 ? -r : r;
}

/** Round half to even, keeping the sign of zero. */
export function roundHalfEven(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x), d = x - f;
  const r = d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
  return r === 0 && (x < 0 || Object.is(x, -0)) ? -0 : r;
}

export const sigmoid = (x: number) => {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
};
export const softplus = (x: number) => (x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x)));

function unary(name: string, versions: number[], doc: string, k: UnaryKernels) {
  return defineOp({
    name, versions, attrs: {}, inputs: [1, 1], outputs: [1, 1], doc, infer: inferSame,
    run: (ctx) => [unaryOp(ctx.tensor(0), k)],
  });
}
const float = (f: (x: number) => number): UnaryKernels => ({ float: f });

const math: OpDef<any>[] = [
  unary('Neg', [1, 6, 13], 'y = -x', { float: (x) => -x, int: (x) => -x, big: (x) => -x }),
  unary('Reciprocal', [1, 6, 13], 'y = 1 / x', float((x) => 1 / x)),
  unary('Floor', [1, 6, 13], 'y = floor(x)', float(Math.floor)),
  unary('Ceil', [1, 6, 13], 'y = ceil(x)', float(Math.ceil)),
  unary('Round', [11, 22], 'y = x rounded to the nearest integer, ties to even', float(roundHalfEven)),
  unary('Sqrt', [1, 6, 13], 'y = sqrt(x)', float(Math.sqrt)),
  unary('Exp', [1, 6, 13], 'y = e^x', float(Math.exp)),
  unary('Log', [1, 6, 13], 'y = ln(x)', float(Math.log)),
  unary('Sin', [7, 22], 'y = sin(x)', float(Math.sin)),
  unary('Cos', [7, 22], 'y = cos(x)', float(Math.cos)),
  unary('Tan', [7, 22], 'y = tan(x)', float(Math.tan)),
  unary('Asin', [7, 22], 'y = asin(x)', float(Math.asin)),
  unary('Acos', [7, 22], 'y = acos(x)', float(Math.acos)),
  unary('Atan', [7, 22], 'y = atan(x)', float(Math.atan)),
  unary('Sinh', [9, 22], 'y = sinh(x)', float(Math.sinh)),
  unary('Cosh', [9, 22], 'y = cosh(x)', float(Math.cosh)),
  unary('Asinh', [9, 22], 'y = asinh(x)', float(Math.asinh)),
  unary('Acosh', [9, 22], 'y = acosh(x)', float(Math.acosh)),
  unary('Atanh', [9, 22], 'y = atanh(x)', float(Math.atanh)),
  unary('Erf', [9, 13], 'y = erf(x)', float(erf)),
  unary('Sign', [9, 13], 'y = -1, 0 or 1 by the sign of x (NaN stays NaN)', {
    float: (x) => (x > 0 ? 1 : x < 0 ? -1 : x), int: Math.sign, big: (x) => (x > 0n ? 1n : x < 0n ? -1n : 0n),
  }),
  unary('Sigmoid', [1, 6, 13], 'y = 1 / (1 + e^-x)', float(sigmoid)),
  unary('Tanh', [1, 6, 13], 'y = tanh(x)', float(Math.tanh)),
  unary('Softplus', [1, 22], 'y = ln(1 + e^x)', float(softplus)),
  unary('Softsign', [1, 22], 'y = x / (1 + |x|)', float((x) => x / (1 + Math.abs(x)))),
  unary('HardSwish', [14, 22], 'y = x * max(0, min(1, x/6 + 1/2))', float((x) => x * Math.max(0, Math.min(1, x / 6 + 0.5)))),
  unary('Mish', [18, 22], 'y = x * tanh(softplus(x))', float((x) => x * Math.tanh(softplus(x)))),
];

const IsNaN = defineOp({
  name: 'IsNaN', versions: [9, 13, 20], attrs: {}, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = (x is NaN), as bool', infer: inferSameShape('bool'),
  run: (ctx) => [unaryOp(ctx.tensor(0), float((x) => (x !== x ? 1 : 0)), 'bool')],
});

const IsInf = defineOp({
  name: 'IsInf', versions: [10, 20], attrs: { detect_negative: attr.int(1), detect_positive: attr.int(1) },
  inputs: [1, 1], outputs: [1, 1], doc: 'y = (x is +inf or -inf, as selected), as bool', infer: inferSameShape('bool'),
  run: (ctx) => {
    const neg = ctx.attrs.detect_negative !== 0, pos = ctx.attrs.detect_positive !== 0;
    return [unaryOp(ctx.tensor(0), float((x) => ((x === Infinity && pos) || (x === -Infinity && neg) ? 1 : 0)), 'bool')];
  },
});

const Not = defineOp({
  name: 'Not', versions: [1], attrs: {}, inputs: [1, 1], outputs: [1, 1], doc: 'y = logical not x', infer: inferSame,
  run: (ctx) => [unaryOp(ctx.tensor(0), { bool: (x) => (x ? 0 : 1) })],
});

// ---------------------------------------------------------------------------------------------------------------
// activations with attributes

const LeakyRelu = defineOp({
  name: 'LeakyRelu', versions: [1, 6, 16], attrs: { alpha: attr.float(0.01) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = x < 0 ? alpha * x : x', infer: inferSame,
  run: (ctx) => {
    const a = ctx.attrs.alpha;
    return [unaryOp(ctx.tensor(0), float((x) => (x < 0 ? a * x : x)))];
  },
});

const PRelu = defineOp({
  name: 'PRelu', versions: [1, 6, 7, 9, 16], attrs: {}, inputs: [2, 2], outputs: [1, 1],
  doc: 'y = x < 0 ? slope * x : x, slope broadcast to x', infer: inferSame,
  run: (ctx) => {
    const x = ctx.tensor(0), slope = ctx.tensor(1);
    const dims = broadcastShapes(x.dims, slope.dims);
    if (dims.length !== x.rank || dims.some((d, i) => d !== x.dims[i])) {
      throw new Error(`slope of shape [${slope.dims.join(', ')}] must broadcast to X's shape [${x.dims.join(', ')}]`);
    }
    return [binaryOp(x, slope, {
      float: (v, s) => (v < 0 ? s * v : v), int: (v, s) => (v < 0 ? Math.imul(v, s) : v), big: (v, s) => (v < 0n ? v * s : v),
    })];
  },
});

const Elu = defineOp({
  name: 'Elu', versions: [1, 6, 22], attrs: { alpha: attr.float(1) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = x < 0 ? alpha * (e^x - 1) : x', infer: inferSame,
  run: (ctx) => {
    const a = ctx.attrs.alpha;
    return [unaryOp(ctx.tensor(0), float((x) => (x < 0 ? a * Math.expm1(x) : x)))];
  },
});

const Selu = defineOp({
  name: 'Selu', versions: [1, 6, 22],
  attrs: { alpha: attr.float(1.67326319217681884765625), gamma: attr.float(1.05070102214813232421875) },
  inputs: [1, 1], outputs: [1, 1], doc: 'y = gamma * (x > 0 ? x : alpha * (e^x - 1))', infer: inferSame,
  run: (ctx) => {
    const { alpha, gamma } = ctx.attrs;
    return [unaryOp(ctx.tensor(0), float((x) => gamma * (x > 0 ? x : alpha * Math.expm1(x))))];
  },
});

const Celu = defineOp({
  name: 'Celu', versions: [12], attrs: { alpha: attr.float(1) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = max(0, x) + min(0, alpha * (e^(x/alpha) - 1))', infer: inferSame,
  run: (ctx) => {
    const a = ctx.attrs.alpha;
    if (a === 0) throw new Error('alpha must be non-zero, found 0');
    return [unaryOp(ctx.tensor(0), float((x) => Math.max(0, x) + Math.min(0, a * Math.expm1(x / a))))];
  },
});

const HardSigmoid = defineOp({
  name: 'HardSigmoid', versions: [1, 6, 22], attrs: { alpha: attr.float(0.2), beta: attr.float(0.5) },
  inputs: [1, 1], outputs: [1, 1], doc: 'y = max(0, min(1, alpha * x + beta))', infer: inferSame,
  run: (ctx) => {
    const { alpha, beta } = ctx.attrs;
    return [unaryOp(ctx.tensor(0), float((x) => Math.max(0, Math.min(1, alpha * x + beta))))];
  },
});

const ThresholdedRelu = defineOp({
  name: 'ThresholdedRelu', versions: [10, 22], attrs: { alpha: attr.float(1) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = x > alpha ? x : 0', infer: inferSame,
  run: (ctx) => {
    const a = ctx.attrs.alpha;
    return [unaryOp(ctx.tensor(0), float((x) => (x > a ? x : 0)))];
  },
});

const Shrink = defineOp({
  name: 'Shrink', versions: [9], attrs: { bias: attr.float(0), lambd: attr.float(0.5) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = x < -lambd ? x + bias : x > lambd ? x - bias : 0', infer: inferSame,
  run: (ctx) => {
    const { bias, lambd } = ctx.attrs;
    const f = (x: number) => (x < -lambd ? x + bias : x > lambd ? x - bias : 0);
    const b = BigInt(Math.trunc(bias));
    return [unaryOp(ctx.tensor(0), {
      float: f, int: f, big: (x) => (Number(x) < -lambd ? x + b : Number(x) > lambd ? x - b : 0n),
    })];
  },
});

const Gelu = defineOp({
  name: 'Gelu', versions: [20], attrs: { approximate: attr.string('none') }, inputs: [1, 1], outputs: [1, 1],
  doc: "y = x * Phi(x) (approximate='tanh': the tanh approximation)", infer: inferSame,
  run: (ctx) => {
    const mode = ctx.attrs.approximate;
    if (mode === 'none') return [unaryOp(ctx.tensor(0), float((x) => 0.5 * x * (1 + erf(x / Math.SQRT2))))];
    if (mode !== 'tanh') throw new Error(`approximate must be 'none' or 'tanh', found '${mode}'`);
    const c = Math.sqrt(2 / Math.PI);
    return [unaryOp(ctx.tensor(0), float((x) => 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x)))))];
  },
});

const Swish = defineOp({
  name: 'Swish', versions: [24], attrs: { alpha: attr.float(1) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'y = x * sigmoid(alpha * x)', infer: inferSame,
  run: (ctx) => {
    const a = ctx.attrs.alpha;
    return [unaryOp(ctx.tensor(0), float((x) => x * sigmoid(a * x)))];
  },
});

const ops: OpDef<any>[] = [
  ...math, IsNaN, IsInf, Not, LeakyRelu, PRelu, Elu, Selu, Celu, HardSigmoid, ThresholdedRelu, Shrink, Gelu, Swish,
];
export default ops;
