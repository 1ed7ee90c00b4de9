// Recurrent layers: RNN, GRU and LSTM. Float32 inputs are computed over Float32Array; other float types in float64
// and rounded once to the output type.
import type { Dim, ValueType } from '../ir/graph.js';
import { attr, defineOp, type AttrsOf, type InferContext, type KernelContext, type OpDef } from '../ir/schema.js';
import { MAX_ELEMENTS, TensorData, type Value } from '../ir/tensor.js';
import { isFloat } from '../ir/dtype.js';

type Buf = Float32Array | Float64Array;
type Kind = 'RNN' | 'GRU' | 'LSTM';
type Fn = (x: number) => number;

const GATES: Record<Kind, number> = { RNN: 1, GRU: 3, LSTM: 4 };
const DEFAULT_ACTIVATIONS: Record<Kind, string[]> = { RNN: ['Tanh'], GRU: ['Sigmoid', 'Tanh'], LSTM: ['Sigmoid', 'Tanh', 'Tanh'] };

const sigmoid: Fn = (x) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));

/** An activation function by name; `param` hands out the next alpha/beta value or the op's default. */
function activation(name: string, alpha: (d: number) => number, beta: (d: number) => number): Fn {
  switch (name.toLowerCase()) {
    case 'relu': return (x) => (x > 0 ? x : 0);
    case 'tanh': return Math.tanh;
    case 'sigmoid': return sigmoid;
    case 'affine': { const a = alpha(1), b = beta(0); return (x) => a * x + b; }
    case 'leakyrelu': { const a = alpha(0.01); return (x) => (x >= 0 ? x : a * x); }
    case 'thresholdedrelu': { const a = alpha(1); return (x) => (x > a ? x : 0); }
    case 'scaledtanh': { const a = alpha(1), b = beta(1); return (x) => a * Math.tanh(b * x); }
    case 'hardsigmoid': { const a = alpha(0.2), b = beta(0.5); return (x) => Math.max(0, Math.min(1, a * x + b)); }
    case 'elu': { const a = alpha(1); return (x) => (x >= 0 ? x : a * (Math.exp(x) - 1)); }
    case 'softsign': return (x) => x / (1 + Math.abs(x));
    case 'softplus': return (x) => (x > 30 ? x : Math.log1p(Math.exp(x)));
    default:
      throw new Error(`unsupported activation '${name}' (expected Relu, Tanh, Sigmoid, Affine, LeakyRelu, ` +
        'ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign or Softplus)');
  }
}

/** Activation functions per direction. Alphas/betas are consumed in order by the functions that take them. */
function activations(kind: Kind, names: string[] | undefined, alphas: number[] = [], betas: number[] = [], numDir: number): Fn[][] {
  const per = DEFAULT_ACTIVATIONS[kind].length;
  let list = names && names.length ? names : [];
  if (!list.length) for (let d = 0; d < numDir; d++) list = [...list, ...DEFAULT_ACTIVATIONS[kind]];
  else if (list.length === per && numDir === 2) list = [...list, ...list];
  else if (list.length !== per * numDir) {
    throw new Error(`activations has ${list.length} entries, expected ${per * numDir} (${per} per direction)`);
  }
  let ai = 0, bi = 0;
  const fns = list.map((n) => activation(n, (d) => (ai < alphas.length ? alphas[ai++] : d), (d) => (bi < betas.length ? betas[bi++] : d)));
  return Array.from({ length: numDir }, (_, d) => fns.slice(d * per, (d + 1) * per));
}

const rnnAttrs = {
  activation_alpha: attr.floats(), activation_beta: attr.floats(), activations: attr.strings(), clip: attr.float(),
  direction: attr.string('forward'), hidden_size: attr.int(), layout: attr.int(0),
};
const gruAttrs = { ...rnnAttrs, linear_before_reset: attr.int(0) };
const lstmAttrs = { ...rnnAttrs, input_forget: attr.int(0) };
type RnnAttrs = AttrsOf<typeof rnnAttrs> & { linear_before_reset?: number; input_forget?: number };

function numDirections(direction: string): number {
  if (direction === 'forward' || direction === 'reverse') return 1;
  if (direction === 'bidirectional') return 2;
  throw new Error(`direction must be 'forward', 'reverse' or 'bidirectional', got '${direction}'`);
}

function checkDims(t: TensorData | undefined, want: number[], what: string): void {
  if (t && (t.rank !== want.length || t.dims.some((d, i) => d !== want[i]))) {
    throw new Error(`${what} must have shape [${want.join(', ')}], got [${t.dims.join(', ')}]`);
  }
}

function run(ctx: KernelContext<RnnAttrs>, kind: Kind): Value[] {
  const a = ctx.attrs;
  const G = GATES[kind];
  const x = ctx.tensor(0), w = ctx.tensor(1), r = ctx.tensor(2);
  if (!isFloat(x.dtype)) throw new Error(`X must be a float tensor, got ${x.dtype}`);
  if (x.rank !== 3) throw new Error(`X must have rank 3, got shape [${x.dims.join(', ')}]`);
  const layout = ctx.opset >= 14 ? a.layout : 0;
  if (layout !== 0 && layout !== 1) throw new Error(`layout must be 0 or 1, got ${layout}`);
  const numDir = numDirections(a.direction);
  const [S, Bt] = layout ? [x.dims[1], x.dims[0]] : [x.dims[0], x.dims[1]];
  const I = x.dims[2];
  const H = a.hidden_size ?? r.dims[r.rank - 1];
  if (!(Number.isInteger(H) && H > 0)) throw new Error(`hidden_size must be a positive integer, got ${H}`);
  const GH = G * H;
  checkDims(w, [numDir, GH, I], 'W');
  checkDims(r, [numDir, GH, H], 'R');
  const b = ctx.optionalTensor(3), lensT = ctx.optionalTensor(4), h0 = ctx.optionalTensor(5);
  const c0 = kind === 'LSTM' ? ctx.optionalTensor(6) : undefined, p = kind === 'LSTM' ? ctx.optionalTensor(7) : undefined;
  checkDims(b, [numDir, 2 * GH], 'B');
  const stateDims = layout ? [Bt, numDir, H] : [numDir, Bt, H];
  checkDims(h0, stateDims, 'initial_h');
  checkDims(c0, stateDims, 'initial_c');
  checkDims(p, [numDir, 3 * H], 'P');
  checkDims(lensT, [Bt], 'sequence_lens');
  if (S * Bt * GH > MAX_ELEMENTS || S * Bt * numDir * H > MAX_ELEMENTS) throw new Error(`X of shape [${x.dims.join(', ')}] is too large`);
  const lens = lensT ? lensT.toNumberArray() : new Array<number>(Bt).fill(S);
  lens.forEach((l) => {
    if (!(Number.isInteger(l) && l >= 0 && l <= S)) throw new Error(`sequence_lens entries must be in [0, ${S}], got ${l}`);
  });

  const f32 = x.dtype === 'float32';
  const F = f32 ? Float32Array : Float64Array;
  // weights in the compute type are used in place; anything else is converted once
  const buf = (t: TensorData): Buf => (t.dtype === (f32 ? 'float32' : 'float64') ? (t.data as Buf) : new F(t.toFloat64()));
  const X = buf(x), W = buf(w), R = buf(r);
  const Bv = b && buf(b), H0 = h0 && buf(h0), C0 = c0 && buf(c0), P = p && buf(p);
  const acts = activations(kind, a.activations, a.activation_alpha, a.activation_beta, numDir);
  const clip = a.clip;
  if (clip !== undefined && !(clip > 0)) throw new Error(`clip must be positive, got ${clip}`);
  const cl: Fn = clip === undefined ? (v) => v : (v) => (v > clip ? clip : v < -clip ? -clip : v);
  const lbr = kind === 'GRU' && !!a.linear_before_reset;

  const wantY = ctx.wantsOutput(0);
  const Y = wantY ? new F(S * numDir * Bt * H) : undefined;
  const Yh = new F(numDir * Bt * H), Yc = kind === 'LSTM' ? new F(numDir * Bt * H) : undefined;
  const yIndex = (t: number, d: number, bb: number) => (layout ? ((bb * S + t) * numDir + d) * H : ((t * numDir + d) * Bt + bb) * H);
  const sIndex = (d: number, bb: number) => (layout ? (bb * numDir + d) * H : (d * Bt + bb) * H);

  for (let d = 0; d < numDir; d++) {
    const reverse = a.direction === 'reverse' || d === 1;
    const [f, g, hf] = acts[d];
    // bias folded into the input projection; GRU with linear_before_reset keeps Rb of the h gate apart
    const bias = new Float64Array(GH), rbh = new Float64Array(H);
    if (Bv) {
      for (let k = 0; k < GH; k++) bias[k] = Bv[d * 2 * GH + k] + (lbr && k >= 2 * H ? 0 : Bv[d * 2 * GH + GH + k]);
      if (lbr) for (let k = 0; k < H; k++) rbh[k] = Bv[d * 2 * GH + GH + 2 * H + k];
    }
    const xw = projectInput(X, W, bias, d, S, Bt, I, GH, layout, F);
    const h = new F(Bt * H), c = new F(Bt * H);
    for (let bb = 0; bb < Bt; bb++) {
      if (H0) h.set(H0.subarray(sIndex(d, bb), sIndex(d, bb) + H), bb * H);
      if (C0) c.set(C0.subarray(sIndex(d, bb), sIndex(d, bb) + H), bb * H);
    }
    const rOff = d * GH * H;
    const hr = new Float64Array(GH), z = new Float64Array(H), rg = new Float64Array(H), hh = new Float64Array(H), rh = new Float64Array(H);
    const pOff = d * 3 * H;
    for (let step = 0; step < S; step++) {
      const t = reverse ? S - 1 - step : step;
      for (let bb = 0; bb < Bt; bb++) {
        if (t >= lens[bb]) continue;
        const xo = (t * Bt + bb) * GH, ho = bb * H;
        const rows = kind === 'GRU' ? 2 * H : GH;
        matVec(R, rOff, h, ho, hr, rows, H);
        if (kind === 'RNN') {
          for (let k = 0; k < H; k++) h[ho + k] = f(cl(xw[xo + k] + hr[k]));
        } else if (kind === 'GRU') {
          // hr holds z and r rows; the h-gate row needs r first
          for (let k = 0; k < H; k++) z[k] = f(cl(xw[xo + k] + hr[k]));
          for (let k = 0; k < H; k++) rg[k] = f(cl(xw[xo + H + k] + hr[H + k]));
          if (lbr) {
            matVec(R, rOff + 2 * H * H, h, ho, hh, H, H);
            for (let k = 0; k < H; k++) hh[k] = rg[k] * (hh[k] + rbh[k]);
          } else {
            for (let k = 0; k < H; k++) rh[k] = rg[k] * h[ho + k];
            matVec(R, rOff + 2 * H * H, rh, 0, hh, H, H);
          }
          for (let k = 0; k < H; k++) {
            const cand = g(cl(xw[xo + 2 * H + k] + hh[k]));
            h[ho + k] = (1 - z[k]) * cand + z[k] * h[ho + k];
          }
        } else {
          for (let k = 0; k < H; k++) {
            const cPrev = c[ho + k];
            const pi = P ? P[pOff + k] : 0, po = P ? P[pOff + H + k] : 0, pf = P ? P[pOff + 2 * H + k] : 0;
            const ig = f(cl(xw[xo + k] + hr[k] + pi * cPrev));
            const fg = a.input_forget ? 1 - ig : f(cl(xw[xo + 2 * H + k] + hr[2 * H + k] + pf * cPrev));
            const cand = g(cl(xw[xo + 3 * H + k] + hr[3 * H + k]));
            const cNew = fg * cPrev + ig * cand;
            const og = f(cl(xw[xo + H + k] + hr[H + k] + po * cNew));
            c[ho + k] = cNew;
            h[ho + k] = og * hf(cNew);
          }
        }
        if (Y) Y.set(h.subarray(ho, ho + H), yIndex(t, d, bb));
      }
    }
    for (let bb = 0; bb < Bt; bb++) {
      Yh.set(h.subarray(bb * H, bb * H + H), sIndex(d, bb));
      if (Yc) Yc.set(c.subarray(bb * H, bb * H + H), sIndex(d, bb));
    }
  }
  const out = (data: Buf, dims: number[]) =>
    f32 || x.dtype === 'float64' ? new TensorData(x.dtype, dims, data) : TensorData.fromNumbers(x.dtype, dims, data);
  const yDims = layout ? [Bt, S, numDir, H] : [S, numDir, Bt, H];
  const res: Value[] = [Y ? out(Y, yDims) : null, out(Yh, stateDims)];
  if (Yc && ctx.numOutputs > 2) res.push(out(Yc, stateDims));
  return res;
}

/** xw[(t*Bt+b)*GH + g] = bias[g] + sum_i X[t,b,i] * W[d,g,i], reading X in either layout. */
function projectInput(X: Buf, W: Buf, bias: Float64Array, d: number, S: number, Bt: number, I: number, GH: number,
  layout: number, F: typeof Float32Array | typeof Float64Array): Buf {
  const xw = new F(S * Bt * GH);
  const wOff = d * GH * I;
  for (let t = 0; t < S; t++) {
    for (let bb = 0; bb < Bt; bb++) {
      const xo = layout ? (bb * S + t) * I : (t * Bt + bb) * I;
      const o = (t * Bt + bb) * GH;
      for (let g = 0; g < GH; g++) {
        let s = bias[g];
        const wo = wOff + g * I;
        for (let i = 0; i < I; i++) s += X[xo + i] * W[wo + i];
        xw[o + g] = s;
      }
    }
  }
  return xw;
}

/** out[k] = sum_j M[mOff + k*n + j] * v[vOff + j] for k < rows. */
function matVec(M: Buf, mOff: number, v: Buf | Float64Array, vOff: number, out: Float64Array, rows: number, n: number): void {
  for (let k = 0; k < rows; k++) {
    let s = 0;
    const o = mOff + k * n;
    for (let j = 0; j < n; j++) s += M[o + j] * v[vOff + j];
    out[k] = s;
  }
}

function infer(ctx: InferContext<RnnAttrs>, kind: Kind): ValueType[] {
  const x = ctx.inputTypes[0];
  if (!x || x.kind !== 'tensor') return Array.from({ length: ctx.numOutputs }, (): ValueType => ({ kind: 'unknown' }));
  const layout = ctx.opset >= 14 ? ctx.attrs.layout : 0;
  const numDir = numDirections(ctx.attrs.direction);
  const xs = x.shape;
  const S: Dim = xs?.[layout ? 1 : 0], Bt: Dim = xs?.[layout ? 0 : 1];
  let H: Dim = ctx.attrs.hidden_size;
  const r = ctx.inputTypes[2];
  if (H === undefined && r?.kind === 'tensor' && r.shape?.length === 3) H = r.shape[2];
  const yShape = layout ? [Bt, S, numDir, H] : [S, numDir, Bt, H];
  const sShape = layout ? [Bt, numDir, H] : [numDir, Bt, H];
  const t = (shape: Dim[]): ValueType => ({ kind: 'tensor', dtype: x.dtype, shape });
  const res = [t(yShape), t(sShape)];
  if (kind === 'LSTM') res.push(t(sShape));
  return res.slice(0, Math.max(ctx.numOutputs, 1));
}

const RNN = defineOp({
  name: 'RNN', versions: [1, 7, 14, 22], attrs: rnnAttrs, inputs: [3, 6], outputs: [0, 2],
  doc: 'Simple recurrent layer: Ht = f(Xt*W^T + Ht-1*R^T + Wb + Rb)',
  infer: (ctx) => infer(ctx, 'RNN'),
  run: (ctx) => run(ctx, 'RNN'),
});

const GRU = defineOp({
  name: 'GRU', versions: [1, 3, 7, 14, 22], attrs: gruAttrs, inputs: [3, 6], outputs: [0, 2],
  doc: 'Gated recurrent unit layer (gates z, r, h; optional linear_before_reset)',
  infer: (ctx) => infer(ctx, 'GRU'),
  run: (ctx) => run(ctx, 'GRU'),
});

const LSTM = defineOp({
  name: 'LSTM', versions: [1, 7, 14, 22], attrs: lstmAttrs, inputs: [3, 8], outputs: [0, 3],
  doc: 'Long short-term memory layer (gates i, o, f, c; optional peepholes and input_forget coupling)',
  infer: (ctx) => infer(ctx, 'LSTM'),
  run: (ctx) => run(ctx, 'LSTM'),
});

const ops: OpDef<any>[] = [RNN, GRU, LSTM];
export default ops;
