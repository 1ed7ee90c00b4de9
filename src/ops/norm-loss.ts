// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss over [N, C, d1, ...] inputs and [N, d1, ...] targets.
import { attr, defineOp, type InferContext } from '../ir/schema.js';
import type { ValueType } from '../ir/graph.js';
import { isFloat, isInteger } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { prod, tensorTypeOf } from './util.js';
import { type FloatArr, floatData, floatOut, floatTensor, softmaxRows } from './reduce-core.js';

type Reduction = 'none' | 'sum' | 'mean';

function reductionOf(r: string): Reduction {
  if (r !== 'none' && r !== 'sum' && r !== 'mean') throw new Error(`reduction must be 'none', 'sum' or 'mean', got '${r}'`);
  return r;
}

/** The loss from log-probabilities `logp` of shape `dims` ([N, C, ...]) and integer targets. */
function nllLoss(logp: FloatArr, dims: readonly number[], target: TensorData, weight: TensorData | undefined,
  ignore: number | undefined, reduction: Reduction): { values: Float64Array; dims: number[] } {
  if (dims.length < 2) throw new Error(`input must have shape [N, C, ...], got [${dims.join(', ')}]`);
  const n = dims[0], c = dims[1], d = prod(dims, 2);
  const tdims = [n, ...dims.slice(2)];
  if (!isInteger(target.dtype)) throw new Error(`target must be an integer tensor, got ${target.dtype}`);
  if (target.rank !== tdims.length || target.dims.some((x, i) => x !== tdims[i])) {
    throw new Error(`target must have shape [${tdims.join(', ')}] for an input of shape [${dims.join(', ')}], got [${target.dims.join(', ')}]`);
  }
  if (weight && (weight.rank !== 1 || weight.size !== c)) throw new Error(`weight must have shape [${c}], got [${weight.dims.join(', ')}]`);
  const t = target.toFloat64();
  const w = weight ? floatData(weight) : undefined;
  const loss = new Float64Array(n * d);
  let wsum = 0;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < d; k++) {
      const j = i * d + k;
      const cls = t[j];
      if (cls === ignore) continue;
      if (!(cls >= 0 && cls < c)) throw new Error(`target value ${cls} is outside the class range [0, ${c})`);
      const wt = w ? w[cls] : 1;
      loss[j] = -logp[(i * c + cls) * d + k] * wt;
      wsum += wt;
    }
  }
  if (reduction === 'none') return { values: loss, dims: tdims };
  let s = 0;
  for (let j = 0; j < loss.length; j++) s += loss[j];
  return { values: Float64Array.of(reduction === 'sum' ? s : s / wsum), dims: [] };
}

function lossShape(ctx: InferContext<{ reduction: string }>): ValueType {
  const x = tensorTypeOf(ctx.inputTypes[0]);
  if (!x) return { kind: 'unknown' };
  if (ctx.attrs.reduction !== 'none') return { kind: 'tensor', dtype: x.dtype, shape: [] };
  const t = tensorTypeOf(ctx.inputTypes[1]);
  return { kind: 'tensor', dtype: x.dtype, shape: t?.shape ?? (x.shape ? [x.shape[0], ...x.shape.slice(2)] : undefined) };
}

export const NegativeLogLikelihoodLoss = defineOp({
  name: 'NegativeLogLikelihoodLoss', versions: [12, 13, 22],
  attrs: { ignore_index: attr.int(), reduction: attr.string('mean') },
  inputs: [2, 3], outputs: [1, 1],
  doc: 'Negative log-likelihood loss from log-probabilities (weights, ignore_index, none/sum/mean)',
  infer: (ctx) => [lossShape(ctx)],
  run: (ctx) => {
    const x = ctx.tensor(0);
    if (!isFloat(x.dtype)) throw new Error(`input must be a floating-point tensor, got ${x.dtype}`);
    const r = nllLoss(floatData(x), x.dims, ctx.tensor(1), ctx.optionalTensor(2), ctx.attrs.ignore_index, reductionOf(ctx.attrs.reduction));
    return [TensorData.fromNumbers(x.dtype, r.dims, r.values)];
  },
});

export const SoftmaxCrossEntropyLoss = defineOp({
  name: 'SoftmaxCrossEntropyLoss', versions: [12, 13],
  attrs: { ignore_index: attr.int(), reduction: attr.string('mean') },
  inputs: [2, 3], outputs: [1, 2],
  doc: 'Cross-entropy of softmax(scores) along axis 1 against integer labels (optional log_prob output)',
  infer: (ctx) => [lossShape(ctx), ctx.inputTypes[0] ?? { kind: 'unknown' }].slice(0, Math.max(1, ctx.numOutputs)),
  run: (ctx) => {
    const x = ctx.tensor(0);
    if (!isFloat(x.dtype)) throw new Error(`scores must be a floating-point tensor, got ${x.dtype}`);
    if (x.rank < 2) throw new Error(`scores must have shape [N, C, ...], got [${x.dims.join(', ')}]`);
    const logp = new Float64Array(x.size);
    softmaxRows(floatData(x), logp, x.dims[0], x.dims[1], prod(x.dims, 2), 'log');
    const r = nllLoss(logp, x.dims, ctx.tensor(1), ctx.optionalTensor(2), ctx.attrs.ignore_index, reductionOf(ctx.attrs.reduction));
    const outs = [TensorData.fromNumbers(x.dtype, r.dims, r.values)];
    if (ctx.numOutputs > 1) {
      const lp = floatOut(x.dtype, x.size);
      lp.set(logp);
      outs.push(floatTensor(x.dtype, x.dims, lp));
    }
    return outs;
  },
});
