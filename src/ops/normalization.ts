import { attr, defineOp, type OpDef } from '../ir/schema.js';
import type { Dim, ValueType } from '../ir/graph.js';
import { type DType, dtypeFromOnnx, isFloat } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { broadcastIndex, normAxis, prod, tensorTypeOf } from './util.js';
import { type FloatArr, type SoftMode, floatData, floatOut, floatTensor, softmaxRows, splitAxis } from './reduce-core.js';
import { NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss } from './norm-loss.js';

const same = (t: ValueType | undefined): ValueType => t ?? { kind: 'unknown' };

function requireFloat(t: TensorData, what = 'input'): void {
  if (!isFloat(t.dtype)) throw new Error(`${what} must be a floating-point tensor, got ${t.dtype}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Softmax / LogSoftmax / Hardmax

function softmaxOp(name: string, mode: SoftMode, doc: string): OpDef<any> {
  return defineOp({
    name, versions: [1, 11, 13], doc,
    // before opset 13 the input is coerced to 2-D at `axis` (default 1); from 13 `axis` is one axis (default -1)
    attrs: { axis: attr.int() },
    inputs: [1, 1], outputs: [1, 1],
    infer: (ctx) => [same(ctx.inputTypes[0])],
    run: (ctx) => {
      const x = ctx.tensor(0);
      requireFloat(x);
      let outer: number, n: number, inner: number;
      if (ctx.opset < 13) {
        const axis = ctx.attrs.axis ?? 1, a = axis < 0 ? axis + x.rank : axis;
        if (!(a >= 0 && a <= x.rank)) throw new Error(`axis ${axis} is out of range for a tensor of rank ${x.rank}`);
        [outer, n, inner] = [prod(x.dims, 0, a), prod(x.dims, a), 1];
      } else {
        [outer, n, inner] = splitAxis(x.dims, normAxis(ctx.attrs.axis ?? -1, x.rank));
      }
      const out = floatOut(x.dtype, x.size);
      softmaxRows(floatData(x), out, outer, n, inner, mode);
      return [floatTensor(x.dtype, x.dims, out)];
    },
  });
}

// ---------------------------------------------------------------------------------------------------------------
// per-channel normalizations over [N, C, spatial...]

/** Mean and (biased) variance of x[base + k*stride], k < n, in float64 (two passes for accuracy). */
function meanVar(x: FloatArr, base: number, n: number, stride = 1): [number, number] {
  let s = 0;
  for (let k = 0; k < n; k++) s += x[base + k * stride];
  const mean = s / n;
  let v = 0;
  for (let k = 0; k < n; k++) {
    const d = x[base + k * stride] - mean;
    v += d * d;
  }
  return [mean, v / n];
}

function channelShape(x: TensorData, what: string): [number, number, number] {
  if (x.rank < 2) throw new Error(`${what} expects an input of shape [N, C, ...], got [${x.dims.join(', ')}]`);
  return [x.dims[0], x.dims[1], prod(x.dims, 2)];
}

function checkParam(p: TensorData, sizes: number[], what: string): void {
  if (!sizes.includes(p.size)) throw new Error(`${what} must have ${sizes.join(' or ')} elements, got shape [${p.dims.join(', ')}]`);
}

function batchNorm(ctx: {
  opset: number; numOutputs: number; tensor(i: number): TensorData;
  attrs: { epsilon: number; momentum: number; training_mode: number; is_test: number };
}): TensorData[] {
  const x = ctx.tensor(0), scale = ctx.tensor(1), bias = ctx.tensor(2), mean = ctx.tensor(3), variance = ctx.tensor(4);
  requireFloat(x);
  const [n, c, sp] = x.rank === 1 ? [x.dims[0], 1, 1] : channelShape(x, 'BatchNormalization');
  const eps = ctx.attrs.epsilon;
  // before opset 9, spatial=0 gives per-element parameters of shape [C, D1, ...]
  const perChannel = scale.size === c;
  for (const [p, nm] of [[scale, 'scale'], [bias, 'B'], [mean, 'input_mean'], [variance, 'input_var']] as const) {
    checkParam(p, perChannel ? [c] : [c * sp], nm);
  }
  const training = ctx.opset >= 14 ? ctx.attrs.training_mode === 1 : ctx.numOutputs > 1 && !(ctx.opset < 7 && ctx.attrs.is_test === 1);
  const xs = floatData(x), s = floatData(scale), b = floatData(bias);
  let m = floatData(mean), v = floatData(variance);
  const outs: TensorData[] = [];
  let batchMean: Float64Array | undefined, batchVar: Float64Array | undefined;
  if (training) {
    const pc = perChannel ? c : c * sp;
    const inner = perChannel ? sp : 1;
    batchMean = new Float64Array(pc);
    batchVar = new Float64Array(pc);
    for (let p = 0; p < pc; p++) {
      let sum = 0;
      const chan = perChannel ? p : Math.floor(p / sp), off = perChannel ? 0 : p % sp;
      for (let i = 0; i < n; i++) for (let k = 0; k < inner; k++) sum += xs[(i * c + chan) * sp + off + k];
      const mu = sum / (n * inner);
      let sq = 0;
      for (let i = 0; i < n; i++) for (let k = 0; k < inner; k++) { const d = xs[(i * c + chan) * sp + off + k] - mu; sq += d * d; }
      batchMean[p] = mu;
      batchVar[p] = sq / (n * inner);
    }
    m = batchMean;
    v = batchVar;
  }
  const y = floatOut(x.dtype, x.size);
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      const base = (i * c + ch) * sp;
      if (perChannel) {
        const k = s[ch] / Math.sqrt(v[ch] + eps), off = b[ch] - m[ch] * k;
        for (let j = 0; j < sp; j++) y[base + j] = xs[base + j] * k + off;
      } else {
        for (let j = 0; j < sp; j++) {
          const p = ch * sp + j;
          y[base + j] = (xs[base + j] - m[p]) / Math.sqrt(v[p] + eps) * s[p] + b[p];
        }
      }
    }
  }
  outs.push(floatTensor(x.dtype, x.dims, y));
  if (training && batchMean && batchVar) {
    const mom = ctx.attrs.momentum;
    const m0 = floatData(mean), v0 = floatData(variance);
    const runMean = batchMean.map((bm, p) => m0[p] * mom + bm * (1 - mom));
    const runVar = batchVar.map((bv, p) => v0[p] * mom + bv * (1 - mom));
    outs.push(TensorData.fromNumbers(mean.dtype, mean.dims, runMean), TensorData.fromNumbers(variance.dtype, variance.dims, runVar));
    if (ctx.opset < 14) {
      outs.push(TensorData.fromNumbers(mean.dtype, mean.dims, batchMean), TensorData.fromNumbers(variance.dtype, variance.dims, batchVar));
    }
  }
  return outs;
}

const BatchNormalization = defineOp({
  name: 'BatchNormalization', versions: [1, 6, 7, 9, 14, 15],
  attrs: { epsilon: attr.float(1e-5), momentum: attr.float(0.9), training_mode: attr.int(0), spatial: attr.int(1), is_test: attr.int(0), consumed_inputs: attr.ints() },
  inputs: [5, 5], outputs: [1, 5],
  doc: 'Batch normalization (inference, or training mode with running statistics outputs)',
  infer: (ctx) => {
    const outs: ValueType[] = [same(ctx.inputTypes[0])];
    for (let i = 1; i < ctx.numOutputs; i++) outs.push(same(ctx.inputTypes[i <= 2 ? i + 2 : i]));
    return outs;
  },
  run: (ctx) => batchNorm(ctx),
});

const InstanceNormalization = defineOp({
  name: 'InstanceNormalization', versions: [1, 6, 22], attrs: { epsilon: attr.float(1e-5) }, inputs: [3, 3], outputs: [1, 1],
  doc: 'Per-instance, per-channel normalization over the spatial axes',
  infer: (ctx) => [same(ctx.inputTypes[0])],
  run: (ctx) => {
    const x = ctx.tensor(0), scale = ctx.tensor(1), bias = ctx.tensor(2);
    requireFloat(x);
    const [n, c, sp] = channelShape(x, 'InstanceNormalization');
    checkParam(scale, [c], 'scale');
    checkParam(bias, [c], 'B');
    const xs = floatData(x), s = floatData(scale), b = floatData(bias);
    const y = floatOut(x.dtype, x.size);
    for (let i = 0; i < n; i++) {
      for (let ch = 0; ch < c; ch++) {
        const base = (i * c + ch) * sp;
        const [mu, v] = meanVar(xs, base, sp);
        const k = s[ch] / Math.sqrt(v + ctx.attrs.epsilon), off = b[ch] - mu * k;
        for (let j = 0; j < sp; j++) y[base + j] = xs[base + j] * k + off;
      }
    }
    return [floatTensor(x.dtype, x.dims, y)];
  },
});

const GroupNormalization = defineOp({
  name: 'GroupNormalization', versions: [18, 21],
  attrs: { epsilon: attr.float(1e-5), num_groups: attr.int(), stash_type: attr.int(1) },
  inputs: [3, 3], outputs: [1, 1],
  doc: 'Normalization over groups of channels (scale/bias per group in opset 18, per channel from 21)',
  infer: (ctx) => [same(ctx.inputTypes[0])],
  run: (ctx) => {
    const x = ctx.tensor(0), scale = ctx.tensor(1), bias = ctx.tensor(2);
    requireFloat(x);
    const [n, c, sp] = channelShape(x, 'GroupNormalization');
    const g = ctx.attrs.num_groups;
    if (g === undefined || !Number.isInteger(g) || g <= 0 || c % g !== 0) {
      throw new Error(`num_groups must be a positive divisor of the channel count ${c}, got ${g}`);
    }
    const perGroup = scale.size === c && c !== g ? false : scale.size === g && c !== g ? true : ctx.opset < 21;
    checkParam(scale, [perGroup ? g : c], 'scale');
    checkParam(bias, [perGroup ? g : c], 'bias');
    const xs = floatData(x), s = floatData(scale), b = floatData(bias);
    const y = floatOut(x.dtype, x.size);
    const cg = c / g, len = cg * sp;
    for (let i = 0; i < n; i++) {
      for (let gi = 0; gi < g; gi++) {
        const base = (i * c + gi * cg) * sp;
        const [mu, v] = meanVar(xs, base, len);
        const inv = 1 / Math.sqrt(v + ctx.attrs.epsilon);
        for (let cc = 0; cc < cg; cc++) {
          const p = perGroup ? gi : gi * cg + cc;
          const k = s[p] * inv, off = b[p] - mu * k, cb = base + cc * sp;
          for (let j = 0; j < sp; j++) y[cb + j] = xs[cb + j] * k + off;
        }
      }
    }
    return [floatTensor(x.dtype, x.dims, y)];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// LayerNormalization / RMSNormalization: normalize rows of prod(dims[axis:]) elements

/** Index of each element's scale/bias value: null when the parameter covers exactly one row (the common case). */
function paramIndex(p: TensorData, x: TensorData, rowLen: number, what: string): Int32Array | null {
  const trailing = x.dims.slice(x.rank - p.rank);
  if (p.size === rowLen && p.rank <= x.rank && p.dims.every((d, i) => d === trailing[i])) return null;
  try {
    return broadcastIndex([p.dims], x.dims)[0];
  } catch {
    throw new Error(`${what} of shape [${p.dims.join(', ')}] does not broadcast to the input shape [${x.dims.join(', ')}]`);
  }
}

function stashType(code: number): DType {
  const d = dtypeFromOnnx(code);
  if (!isFloat(d)) throw new Error(`stash_type must be a floating-point type, got ${d}`);
  return d;
}

function rowNorm(x: TensorData, scale: TensorData, bias: TensorData | undefined, axis: number, eps: number, rms: boolean) {
  requireFloat(x);
  const a = normAxis(axis, x.rank);
  const outer = prod(x.dims, 0, a), n = prod(x.dims, a);
  const si = paramIndex(scale, x, n, 'Scale'), bi = bias ? paramIndex(bias, x, n, 'B') : null;
  const xs = floatData(x), s = floatData(scale), b = bias ? floatData(bias) : undefined;
  const y = floatOut(x.dtype, x.size);
  const means = new Float64Array(outer), invs = new Float64Array(outer);
  for (let o = 0; o < outer; o++) {
    const base = o * n;
    let mu = 0, v: number;
    if (rms) {
      let sq = 0;
      for (let k = 0; k < n; k++) sq += xs[base + k] * xs[base + k];
      v = sq / n;
    } else {
      [mu, v] = meanVar(xs, base, n);
    }
    const inv = 1 / Math.sqrt(v + eps);
    means[o] = mu;
    invs[o] = inv;
    if (!si && !bi) {
      if (b) for (let k = 0; k < n; k++) y[base + k] = (xs[base + k] - mu) * inv * s[k] + b[k];
      else for (let k = 0; k < n; k++) y[base + k] = (xs[base + k] - mu) * inv * s[k];
    } else {
      for (let k = 0; k < n; k++) {
        const j = base + k;
        y[j] = (xs[j] - mu) * inv * s[si ? si[j] : k] + (b ? b[bi ? bi[j] : k] : 0);
      }
    }
  }
  const statDims = x.dims.map((d, i) => (i < a ? d : 1));
  return { y: floatTensor(x.dtype, x.dims, y), means, invs, statDims };
}

const LayerNormalization = defineOp({
  name: 'LayerNormalization', versions: [17],
  attrs: { axis: attr.int(-1), epsilon: attr.float(1e-5), stash_type: attr.int(1) },
  inputs: [2, 3], outputs: [1, 3],
  doc: 'Normalize over the axes from `axis` on, then scale and shift (optional Mean and InvStdDev outputs)',
  infer: (ctx) => {
    const t = tensorTypeOf(ctx.inputTypes[0]);
    if (!t) return [{ kind: 'unknown' }];
    const u = stashType(ctx.attrs.stash_type);
    let statShape: Dim[] | undefined;
    if (t.shape) {
      const a = normAxis(ctx.attrs.axis, t.shape.length);
      statShape = t.shape.map((d, i) => (i < a ? d : 1));
    }
    return [t, { kind: 'tensor', dtype: u, shape: statShape }, { kind: 'tensor', dtype: u, shape: statShape }].slice(0, Math.max(1, ctx.numOutputs)) as ValueType[];
  },
  run: (ctx) => {
    const u = stashType(ctx.attrs.stash_type);
    const r = rowNorm(ctx.tensor(0), ctx.tensor(1), ctx.optionalTensor(2), ctx.attrs.axis, ctx.attrs.epsilon, false);
    const outs = [r.y];
    if (ctx.numOutputs > 1) outs.push(TensorData.fromNumbers(u, r.statDims, r.means));
    if (ctx.numOutputs > 2) outs.push(TensorData.fromNumbers(u, r.statDims, r.invs));
    return outs;
  },
});

const RMSNormalization = defineOp({
  name: 'RMSNormalization', versions: [23],
  attrs: { axis: attr.int(-1), epsilon: attr.float(1e-5), stash_type: attr.int(1) },
  inputs: [2, 2], outputs: [1, 1],
  doc: 'x / sqrt(mean(x²) + epsilon) * scale over the axes from `axis` on',
  infer: (ctx) => [same(ctx.inputTypes[0])],
  run: (ctx) => {
    stashType(ctx.attrs.stash_type);
    return [rowNorm(ctx.tensor(0), ctx.tensor(1), undefined, ctx.attrs.axis, ctx.attrs.epsilon, true).y];
  },
});

// ---------------------------------------------------------------------------------------------------------------
// LpNormalization, MeanVarianceNormalization, LRN

const LpNormalization = defineOp({
  name: 'LpNormalization', versions: [1, 22], attrs: { axis: attr.int(-1), p: attr.int(2) }, inputs: [1, 1], outputs: [1, 1],
  doc: 'x / ||x||_p along an axis (p = 1 or 2; a zero vector stays zero)',
  infer: (ctx) => [same(ctx.inputTypes[0])],
  run: (ctx) => {
    const x = ctx.tensor(0);
    requireFloat(x);
    const p = ctx.attrs.p;
    if (p !== 1 && p !== 2) throw new Error(`p must be 1 or 2, got ${p}`);
    const [outer, n, inner] = splitAxis(x.dims, normAxis(ctx.attrs.axis, x.rank));
    const xs = floatData(x), y = floatOut(x.dtype, x.size);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * n * inner + i;
        let s = 0;
        for (let k = 0; k < n; k++) { const v = xs[base + k * inner]; s += p === 1 ? Math.abs(v) : v * v; }
        const norm = p === 1 ? s : Math.sqrt(s);
        const inv = norm === 0 ? 0 : 1 / norm;
        for (let k = 0; k < n; k++) y[base + k * inner] = xs[base + k * inner] * inv;
      }
    }
    return [floatTensor(x.dtype, x.dims, y)];
  },
});

const MeanVarianceNormalization = defineOp({
  name: 'MeanVarianceNormalization', versions: [9, 13], attrs: { axes: attr.ints([0, 2, 3]) }, inputs: [1, 1], outputs: [1, 1],
  doc: '(x - mean) / (std + 1e-9) over the given axes',
  infer: (ctx) => [same(ctx.inputTypes[0])],
  run: (ctx) => {
    const x = ctx.tensor(0);
    requireFloat(x);
    const axes = [...new Set(ctx.attrs.axes.map((a) => normAxis(a, x.rank)))];
    // per-element mean and variance via the reduction kernels' layout: transpose reduced axes last
    const kept = x.dims.map((_, i) => i).filter((i) => !axes.includes(i));
    const red = prod(axes.map((a) => x.dims[a]));
    const xs = floatData(x);
    const groups = prod(kept.map((i) => x.dims[i]));
    const gIndex = new Int32Array(x.size); // group of each element
    {
      const st = new Array<number>(x.rank).fill(0);
      let acc = 1;
      for (let k = kept.length - 1; k >= 0; k--) { st[kept[k]] = acc; acc *= x.dims[kept[k]]; }
      const counter = new Array<number>(x.rank).fill(0);
      let g = 0;
      for (let j = 0; j < x.size; j++) {
        gIndex[j] = g;
        for (let d = x.rank - 1; d >= 0; d--) {
          counter[d]++;
          g += st[d];
          if (counter[d] < x.dims[d]) break;
          g -= st[d] * x.dims[d];
          counter[d] = 0;
        }
      }
    }
    const sum = new Float64Array(groups), sq = new Float64Array(groups);
    for (let j = 0; j < x.size; j++) sum[gIndex[j]] += xs[j];
    for (let g = 0; g < groups; g++) sum[g] /= red;
    for (let j = 0; j < x.size; j++) { const d = xs[j] - sum[gIndex[j]]; sq[gIndex[j]] += d * d; }
    const y = floatOut(x.dtype, x.size);
    for (let j = 0; j < x.size; j++) y[j] = (xs[j] - sum[gIndex[j]]) / (Math.sqrt(sq[gIndex[j]] / red) + 1e-9);
    return [floatTensor(x.dtype, x.dims, y)];
  },
});

const LRN = defineOp({
  name: 'LRN', versions: [1, 13],
  attrs: { alpha: attr.float(1e-4), beta: attr.float(0.75), bias: attr.float(1), size: attr.int() },
  inputs: [1, 1], outputs: [1, 1],
  doc: 'Local response normalization across channels',
  infer: (ctx) => [same(ctx.inputTypes[0])],
  run: (ctx) => {
    const x = ctx.tensor(0);
    requireFloat(x);
    const size = ctx.attrs.size;
    if (size === undefined || !Number.isInteger(size) || size <= 0) throw new Error(`size must be a positive integer, got ${size}`);
    const [n, c, sp] = channelShape(x, 'LRN');
    const { alpha, beta, bias } = ctx.attrs;
    const lo = Math.floor((size - 1) / 2), hi = Math.ceil((size - 1) / 2);
    const xs = floatData(x), y = floatOut(x.dtype, x.size);
    const prefix = new Float64Array((c + 1) * sp); // prefix sums of squares over channels, per position
    for (let i = 0; i < n; i++) {
      const base = i * c * sp;
      for (let ch = 0; ch < c; ch++) {
        for (let j = 0; j < sp; j++) { const v = xs[base + ch * sp + j]; prefix[(ch + 1) * sp + j] = prefix[ch * sp + j] + v * v; }
      }
      for (let ch = 0; ch < c; ch++) {
        const c0 = Math.max(0, ch - lo), c1 = Math.min(c - 1, ch + hi) + 1;
        for (let j = 0; j < sp; j++) {
          const s = prefix[c1 * sp + j] - prefix[c0 * sp + j];
          const idx = base + ch * sp + j;
          y[idx] = xs[idx] / Math.pow(bias + (alpha / size) * s, beta);
        }
      }
    }
    return [floatTensor(x.dtype, x.dims, y)];
  },
});

const ops: OpDef<any>[] = [
  softmaxOp('Softmax', 'softmax', 'exp(x) / sum(exp(x)) along an axis'),
  softmaxOp('LogSoftmax', 'log', 'log(softmax(x)) along an axis, computed stably'),
  softmaxOp('Hardmax', 'hard', '1 at the first maximum along an axis, 0 elsewhere'),
  BatchNormalization, InstanceNormalization, GroupNormalization, LayerNormalization, RMSNormalization,
  LpNormalization, MeanVarianceNormalization, LRN, NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss,
];
export default ops;
