// Random operators. They draw from ctx.random(), which the executor seeds from the node's `seed` attribute, so a
// seeded node is reproducible within Kiln (but not bit-identical to other runtimes' generators).
import type { Dim, ValueType } from '../ir/graph.js';
import { defineOp, attr, type OpDef, type KernelContext } from '../ir/schema.js';
import { TensorData, MAX_ELEMENTS } from '../ir/tensor.js';
import { type DType, dtypeFromOnnx, isFloat } from '../ir/dtype.js';
import { tensorTypeOf } from './util.js';

const unknown: ValueType = { kind: 'unknown' };

function floatType(code: number, what = 'dtype'): DType {
  const d = dtypeFromOnnx(code);
  if (!isFloat(d) || d.startsWith('float8') || d === 'float4e2m1') {
    throw new Error(`${what} ${code} (${d}) is not a supported output type (expected float16, float, double or bfloat16)`);
  }
  return d;
}

function checkShape(shape: number[] | undefined): number[] {
  if (!shape) throw new Error('the shape attribute is required');
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw new Error(`shape must hold non-negative integers, found [${shape}]`);
  if (shape.reduce((a, b) => a * b, 1) > MAX_ELEMENTS) throw new Error(`shape [${shape}] has too many elements`);
  return shape;
}

/** Standard normal samples by the Box-Muller transform. */
function normals(ctx: KernelContext<unknown>, n: number, mean: number, scale: number): Float64Array {
  const v = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - ctx.random())), th = 2 * Math.PI * ctx.random();
    v[i] = mean + scale * r * Math.cos(th);
    if (i + 1 < n) v[i + 1] = mean + scale * r * Math.sin(th);
  }
  return v;
}

function uniforms(ctx: KernelContext<unknown>, n: number, low: number, high: number): Float64Array {
  if (!(high >= low)) throw new Error(`high (${high}) must be >= low (${low})`);
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = low + (high - low) * ctx.random();
  return v;
}

/** Output type of the *Like ops: the dtype attribute, else the input's type. */
function likeType(code: number | undefined, input: DType): DType {
  return code === undefined ? floatType(dtypeCode(input), 'input type') : floatType(code);
}

function dtypeCode(d: DType): number {
  const codes: Partial<Record<DType, number>> = { float32: 1, float16: 10, float64: 11, bfloat16: 16 };
  const c = codes[d];
  if (c === undefined) throw new Error(`random ops produce float16, float, double or bfloat16, but the input is ${d}; set dtype`);
  return c;
}

const RandomNormal = defineOp({
  name: 'RandomNormal', versions: [1, 22],
  attrs: { dtype: attr.int(1), mean: attr.float(0), scale: attr.float(1), seed: attr.float(), shape: attr.ints() },
  inputs: [0, 0], outputs: [1, 1],
  doc: 'Samples from a normal distribution with the given shape',
  infer: (ctx) => [{ kind: 'tensor', dtype: floatType(ctx.attrs.dtype), shape: ctx.attrs.shape }],
  run: (ctx) => {
    const shape = checkShape(ctx.attrs.shape);
    const n = shape.reduce((a, b) => a * b, 1);
    return [TensorData.fromNumbers(floatType(ctx.attrs.dtype), shape, normals(ctx, n, ctx.attrs.mean, ctx.attrs.scale))];
  },
});

const RandomUniform = defineOp({
  name: 'RandomUniform', versions: [1, 22],
  attrs: { dtype: attr.int(1), high: attr.float(1), low: attr.float(0), seed: attr.float(), shape: attr.ints() },
  inputs: [0, 0], outputs: [1, 1],
  doc: 'Samples from a uniform distribution [low, high) with the given shape',
  infer: (ctx) => [{ kind: 'tensor', dtype: floatType(ctx.attrs.dtype), shape: ctx.attrs.shape }],
  run: (ctx) => {
    const shape = checkShape(ctx.attrs.shape);
    const n = shape.reduce((a, b) => a * b, 1);
    return [TensorData.fromNumbers(floatType(ctx.attrs.dtype), shape, uniforms(ctx, n, ctx.attrs.low, ctx.attrs.high))];
  },
});

function inferLike(ctx: { inputTypes: (ValueType | undefined)[]; attrs: { dtype?: number } }): ValueType[] {
  const t = tensorTypeOf(ctx.inputTypes[0]);
  if (!t) return ctx.attrs.dtype === undefined ? [unknown] : [{ kind: 'tensor', dtype: floatType(ctx.attrs.dtype) }];
  return [{ kind: 'tensor', dtype: likeType(ctx.attrs.dtype, t.dtype), shape: t.shape }];
}

const RandomNormalLike = defineOp({
  name: 'RandomNormalLike', versions: [1, 22],
  attrs: { dtype: attr.int(), mean: attr.float(0), scale: attr.float(1), seed: attr.float() },
  inputs: [1, 1], outputs: [1, 1],
  doc: 'Normal samples with the shape (and by default the type) of the input',
  infer: (ctx) => inferLike(ctx),
  run: (ctx) => {
    const x = ctx.tensor(0);
    const dtype = likeType(ctx.attrs.dtype, x.dtype);
    return [TensorData.fromNumbers(dtype, x.dims, normals(ctx, x.size, ctx.attrs.mean, ctx.attrs.scale))];
  },
});

const RandomUniformLike = defineOp({
  name: 'RandomUniformLike', versions: [1, 22],
  attrs: { dtype: attr.int(), high: attr.float(1), low: attr.float(0), seed: attr.float() },
  inputs: [1, 1], outputs: [1, 1],
  doc: 'Uniform samples with the shape (and by default the type) of the input',
  infer: (ctx) => inferLike(ctx),
  run: (ctx) => {
    const x = ctx.tensor(0);
    const dtype = likeType(ctx.attrs.dtype, x.dtype);
    return [TensorData.fromNumbers(dtype, x.dims, uniforms(ctx, x.size, ctx.attrs.low, ctx.attrs.high))];
  },
});

const Multinomial = defineOp({
  name: 'Multinomial', versions: [7, 22],
  attrs: { dtype: attr.int(6), sample_size: attr.int(1), seed: attr.float() },
  inputs: [1, 1], outputs: [1, 1],
  doc: 'Class indices sampled from unnormalized log-probabilities [batch, classes] -> [batch, sample_size]',
  infer: (ctx) => {
    const t = tensorTypeOf(ctx.inputTypes[0]);
    const dtype = ctx.attrs.dtype === 7 ? 'int64' : 'int32';
    const batch: Dim = t?.shape?.[0];
    return [{ kind: 'tensor', dtype, shape: [batch, ctx.attrs.sample_size] }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    if (x.rank !== 2) throw new Error(`Multinomial input must be 2-D [batch, classes], found [${x.dims}]`);
    if (ctx.attrs.dtype !== 6 && ctx.attrs.dtype !== 7) throw new Error(`Multinomial dtype must be 6 (int32) or 7 (int64), found ${ctx.attrs.dtype}`);
    const S = ctx.attrs.sample_size;
    if (!(Number.isInteger(S) && S >= 0)) throw new Error(`sample_size must be a non-negative integer, found ${S}`);
    const [B, K] = x.dims;
    if (K === 0) throw new Error('Multinomial needs at least one class');
    if (B * S > MAX_ELEMENTS) throw new Error(`Multinomial output [${B}, ${S}] is too large`);
    const v = x.toFloat64();
    const out = new Float64Array(B * S);
    const cum = new Float64Array(K);
    for (let b = 0; b < B; b++) {
      let max = -Infinity;
      for (let k = 0; k < K; k++) max = Math.max(max, v[b * K + k]);
      let total = 0;
      for (let k = 0; k < K; k++) { total += max === -Infinity ? 0 : Math.exp(v[b * K + k] - max); cum[k] = total; }
      for (let s = 0; s < S; s++) {
        const u = ctx.random() * total;
        let lo = 0, hi = K - 1; // first k with cum[k] > u
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (cum[mid] > u) hi = mid;
          else lo = mid + 1;
        }
        out[b * S + s] = lo;
      }
    }
    return [TensorData.fromNumbers(ctx.attrs.dtype === 7 ? 'int64' : 'int32', [B, S], out)];
  },
});

const Bernoulli = defineOp({
  name: 'Bernoulli', versions: [15, 22], attrs: { dtype: attr.int(), seed: attr.float() }, inputs: [1, 1], outputs: [1, 1],
  doc: 'Draws 0/1 with the probabilities given by the input',
  infer: (ctx) => {
    const t = tensorTypeOf(ctx.inputTypes[0]);
    const dtype = ctx.attrs.dtype !== undefined ? dtypeFromOnnx(ctx.attrs.dtype) : t?.dtype;
    if (!dtype) return [unknown];
    return [{ kind: 'tensor', dtype, shape: t?.shape }];
  },
  run: (ctx) => {
    const x = ctx.tensor(0);
    if (!isFloat(x.dtype)) throw new Error(`Bernoulli input must hold probabilities as floats, found ${x.dtype}`);
    const dtype = ctx.attrs.dtype !== undefined ? dtypeFromOnnx(ctx.attrs.dtype) : x.dtype;
    if (dtype === 'string') throw new Error('Bernoulli cannot produce strings');
    const p = x.toFloat64();
    const out = new Float64Array(x.size);
    for (let i = 0; i < out.length; i++) {
      if (!(p[i] >= 0 && p[i] <= 1)) throw new Error(`Bernoulli probabilities must be in [0, 1], found ${p[i]} at ${i}`);
      out[i] = ctx.random() < p[i] ? 1 : 0;
    }
    return [TensorData.fromNumbers(dtype, x.dims, out)];
  },
});

const ops: OpDef<any>[] = [RandomNormal, RandomUniform, RandomNormalLike, RandomUniformLike, Multinomial, Bernoulli];
export default ops;
