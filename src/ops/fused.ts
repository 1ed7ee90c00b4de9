// Kiln's own ops (domain 'kiln'), created only by the optimizer: fused layers and the ONNX ops it introduces
// regardless of the model's opset. Each reference kernel reuses the ONNX kernels through callKernel.
import { attr, defineOp, lookupOp, parseAttrs, type OpDef } from '../ir/schema.js';
import type { AttrValue, ValueType } from '../ir/graph.js';
import { TensorData } from '../ir/tensor.js';
import { parseExpr, renderJs, JS_HELPERS, type Expr } from '../ir/expr.js';
import { callKernel } from './execute.js';
import { broadcastDims, broadcastIndex, broadcastShapes, tensorTypeOf } from './util.js';

export const KILN_DOMAIN = 'kiln';

/** Activations a fused layer can apply to its result; `p` holds the op's float parameters. */
export const ACTIVATIONS: Record<string, (x: number, p: number[]) => number> = {
  Relu: (x) => (x > 0 ? x : 0),
  Clip: (x, p) => (x < p[0] ? p[0] : x > p[1] ? p[1] : x),
  LeakyRelu: (x, p) => (x < 0 ? x * p[0] : x),
  Sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  HardSigmoid: (x, p) => Math.max(0, Math.min(1, p[0] * x + p[1])),
  HardSwish: (x) => x * Math.max(0, Math.min(1, x / 6 + 0.5)),
  Tanh: (x) => Math.tanh(x),
  Gelu: (x) => 0.5 * x * (1 + JS_HELPERS.erf(x / Math.SQRT2)),
  GeluTanh: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))),
  Silu: (x) => x / (1 + Math.exp(-x)),
  Mish: (x) => x * Math.tanh(x > 20 ? x : Math.log1p(Math.exp(x))),
};

/** act(y + residual), with numpy broadcasting between y and the residual (exactly what the fused Add computed). */
function epilogue(y: TensorData, residual: TensorData | undefined, activation: string, params: number[]): TensorData {
  if (!residual && !activation) return y;
  const f = activation ? ACTIVATIONS[activation] : undefined;
  if (activation && !f) throw new Error(`unknown fused activation '${activation}' (known: ${Object.keys(ACTIVATIONS).join(', ')})`);
  const dims = residual ? broadcastShapes(y.dims, residual.dims) : [...y.dims];
  const n = dims.reduce((a, b) => a * b, 1);
  const yv = y.dtype === 'float32' ? (y.data as Float32Array) : y.toFloat64();
  const out = y.dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  const [yi, ri] = residual ? broadcastIndex([y.dims, residual.dims], dims) : [null, null];
  const rv = residual ? (residual.dtype === 'float32' ? (residual.data as Float32Array) : residual.toFloat64()) : undefined;
  for (let i = 0; i < n; i++) {
    let v = yv[yi ? yi[i] : i];
    if (rv) v += rv[ri ? ri[i] : i];
    out[i] = f ? f(v, params) : v;
  }
  return y.dtype === 'float32' ? new TensorData('float32', dims, out) : TensorData.fromNumbers(y.dtype, dims, out);
}

const epilogueAttrs = { activation: attr.string(''), activation_params: attr.floats([]) };
const sameAsInput0 = (t: (ValueType | undefined)[]): ValueType => t[0] ?? { kind: 'unknown' };

/** Conv + bias + residual + activation. Inputs: X, W, B?, Residual?. */
const FusedConv = defineOp({
  name: 'FusedConv', domain: KILN_DOMAIN, versions: [1],
  attrs: {
    auto_pad: attr.string('NOTSET'), dilations: attr.ints(), group: attr.int(1), kernel_shape: attr.ints(), pads: attr.ints(),
    strides: attr.ints(), ...epilogueAttrs,
    /** 'NHWC': X, residual and Y are channels-last and W is [M, kh, kw, C] (set by the layout pass) */
    layout: attr.string(''),
  },
  inputs: [2, 4], outputs: [1, 1],
  doc: 'y = act(conv(x, w) + b + residual)',
  infer: (ctx) => {
    const conv = lookupOp('', 'Conv');
    const convNode = { ...ctx.node, domain: '', opType: 'Conv', inputs: ctx.node.inputs.slice(0, 3) };
    if (!conv?.infer) return [sameAsInput0(ctx.inputTypes)];
    const nhwc = ctx.attrs.layout === 'NHWC';
    const perm = (t: ValueType | undefined, p: number[]): ValueType | undefined =>
      t?.kind === 'tensor' && t.shape?.length === 4 ? { ...t, shape: p.map((i) => t.shape![i]) } : t;
    const types = nhwc ? [perm(ctx.inputTypes[0], NHWC_TO_NCHW), perm(ctx.inputTypes[1], NHWC_TO_NCHW), ctx.inputTypes[2]] : ctx.inputTypes.slice(0, 3);
    const out = conv.infer({ ...ctx, node: convNode, opset: 22, attrs: parseAttrs(conv, convNode), inputTypes: types });
    return nhwc ? out.map((t) => perm(t, NCHW_TO_NHWC) ?? t) : out;
  },
  run: (ctx) => {
    const { activation, activation_params } = ctx.attrs;
    const convAttrs: Record<string, AttrValue> = {};
    for (const [k, v] of Object.entries(ctx.node.attrs)) if (!k.startsWith('activation') && k !== 'layout') convAttrs[k] = v;
    const nhwc = ctx.attrs.layout === 'NHWC';
    const t = (x: TensorData | undefined, p: number[]) => (x && nhwc ? (callKernel(ctx.node, '', 'Transpose', 13, [x], { perm: { type: 'ints', value: p } })[0] as TensorData) : x);
    const [y] = callKernel(ctx.node, '', 'Conv', 22, [t(ctx.tensor(0), NHWC_TO_NCHW), t(ctx.tensor(1), NHWC_TO_NCHW), ctx.optionalTensor(2)], convAttrs) as TensorData[];
    return [t(epilogue(y, t(ctx.optionalTensor(3), NHWC_TO_NCHW), activation, activation_params), NCHW_TO_NHWC)!];
  },
});

const NHWC_TO_NCHW = [0, 3, 1, 2];
const NCHW_TO_NHWC = [0, 2, 3, 1];

/**
 * MaxPool over channels-last X [N, H, W, C] -> Y [N, OH, OW, C] (2-D, no Indices): set by the layout pass where a pool
 * sits between NHWC layers (ResNet's stem), so no Transpose pair surrounds it.
 */
const MaxPoolNHWC = defineOp({
  name: 'MaxPoolNHWC', domain: KILN_DOMAIN, versions: [1],
  attrs: { auto_pad: attr.string('NOTSET'), ceil_mode: attr.int(0), dilations: attr.ints(), kernel_shape: attr.ints(), pads: attr.ints(), strides: attr.ints() },
  inputs: [1, 1], outputs: [1, 1],
  doc: 'y = MaxPool(x) with x and y channels-last',
  infer: (ctx) => {
    const pool = lookupOp('', 'MaxPool')!;
    const node = { ...ctx.node, domain: '', opType: 'MaxPool' };
    const perm = (t: ValueType | undefined, p: number[]): ValueType | undefined =>
      t?.kind === 'tensor' && t.shape?.length === 4 ? { ...t, shape: p.map((i) => t.shape![i]) } : t;
    const [y] = pool.infer!({ ...ctx, node, opset: 12, attrs: parseAttrs(pool, node), inputTypes: [perm(ctx.inputTypes[0], NHWC_TO_NCHW)], numOutputs: 1 });
    return [perm(y, NCHW_TO_NHWC) ?? y];
  },
  run: (ctx) => {
    const t = (x: TensorData, p: number[]) => callKernel(ctx.node, '', 'Transpose', 13, [x], { perm: { type: 'ints', value: p } })[0] as TensorData;
    const [y] = callKernel(ctx.node, '', 'MaxPool', 12, [t(ctx.tensor(0), NHWC_TO_NCHW)], ctx.node.attrs) as TensorData[];
    return [t(y, NCHW_TO_NHWC)];
  },
});

/** MatMul (numpy semantics) or Gemm (2-D, transA/transB, alpha) + bias + residual + activation. */
const FusedMatMul = defineOp({
  name: 'FusedMatMul', domain: KILN_DOMAIN, versions: [1],
  attrs: { transA: attr.int(0), transB: attr.int(0), alpha: attr.float(1), gemm: attr.int(0), ...epilogueAttrs },
  inputs: [2, 4], outputs: [1, 1],
  doc: 'y = act(alpha * (A @ B) + bias + residual)',
  infer: (ctx) => {
    const a = tensorTypeOf(ctx.inputTypes[0]), b = tensorTypeOf(ctx.inputTypes[1]);
    if (!a) return [{ kind: 'unknown' }];
    if (ctx.attrs.gemm && a.shape?.length === 2 && b?.shape?.length === 2) {
      return [{ kind: 'tensor', dtype: a.dtype, shape: [a.shape[ctx.attrs.transA ? 1 : 0], b.shape[ctx.attrs.transB ? 0 : 1]] }];
    }
    if (!a.shape || !b?.shape || ctx.attrs.gemm || a.shape.length < 2 || b.shape.length < 2) return [{ kind: 'tensor', dtype: a.dtype }];
    const batch = broadcastDims(a.shape.slice(0, -2), b.shape.slice(0, -2));
    return [{ kind: 'tensor', dtype: a.dtype, shape: batch ? [...batch, a.shape[a.shape.length - 2], b.shape[b.shape.length - 1]] : undefined }];
  },
  run: (ctx) => {
    const { transA, transB, alpha, gemm, activation, activation_params } = ctx.attrs;
    const a = ctx.tensor(0), b = ctx.tensor(1), bias = ctx.optionalTensor(2);
    let y: TensorData;
    if (gemm || transA || transB || alpha !== 1) {
      const attrs: Record<string, AttrValue> = { transA: { type: 'int', value: transA }, transB: { type: 'int', value: transB }, alpha: { type: 'float', value: alpha } };
      [y] = callKernel(ctx.node, '', 'Gemm', 13, [a, b, bias], attrs) as TensorData[];
      return [epilogue(y, ctx.optionalTensor(3), activation, activation_params)];
    }
    [y] = callKernel(ctx.node, '', 'MatMul', 13, [a, b]) as TensorData[];
    const res = ctx.optionalTensor(3);
    if (bias) y = epilogue(y, bias, '', []);
    return [epilogue(y, res, activation, activation_params)];
  },
});

const compiled = new Map<string, (ins: ArrayLike<number>[], idx: (Int32Array | null)[], out: Float64Array | Float32Array) => void>();

/** Compile an expression to a loop over the output; inputs are read through broadcast index maps. */
function compileLoop(expr: string, nInputs: number, f32: boolean) {
  const key = `${nInputs}|${f32}|${expr}`;
  let f = compiled.get(key);
  if (!f) {
    const e: Expr = parseExpr(expr);
    const body = renderJs(e, (i) => `v${i}[x${i} ? x${i}[i] : i]`, f32 ? (s) => `Math.fround(${s})` : undefined);
    const decl = Array.from({ length: nInputs }, (_, i) => `const v${i} = ins[${i}], x${i} = idx[${i}];`).join('\n');
    f = new Function('F', `return (ins, idx, out) => {\n${decl}\nfor (let i = 0; i < out.length; i++) out[i] = ${body};\n};`)(JS_HELPERS) as typeof f;
    compiled.set(key, f!);
  }
  return f!;
}

/** A fused chain of elementwise ops: `expr` over inputs $0..$n-1 with numpy broadcasting. */
const Elementwise = defineOp({
  name: 'Elementwise', domain: KILN_DOMAIN, versions: [1],
  attrs: { expr: attr.string('') },
  inputs: [1, Infinity], outputs: [1, 1],
  doc: 'a fused chain of elementwise ops, given as an expression over the inputs',
  infer: (ctx) => {
    const ts = ctx.inputTypes.map(tensorTypeOf);
    if (!ts[0]) return [{ kind: 'unknown' }];
    return [{ kind: 'tensor', dtype: ts[0].dtype, shape: ts.every(Boolean) ? broadcastDims(...ts.map((t) => t!.shape)) : undefined }];
  },
  run: (ctx) => {
    const ins = ctx.inputs.map((_, i) => ctx.tensor(i));
    const dims = broadcastShapes(...ins.map((t) => t.dims));
    const idx = broadcastIndex(ins.map((t) => t.dims), dims);
    const dtype = ins[0].dtype;
    const n = dims.reduce((a, b) => a * b, 1);
    const out = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
    compileLoop(ctx.attrs.expr, ins.length, dtype === 'float32')(ins.map((t) => (t.dtype === 'float32' || t.dtype === 'float64' ? (t.data as Float32Array) : t.toFloat64())), idx, out);
    return [dtype === 'float32' ? new TensorData('float32', dims, out) : TensorData.fromNumbers(dtype, dims, out)];
  },
});

/**
 * Scaled dot-product attention over head-split tensors: Q [.., S, D], K [.., L, D] (or [.., D, L] with
 * k_transposed=1), V [.., L, Dv], optional additive or boolean mask broadcast to [.., S, L].
 */
const Attention = defineOp({
  name: 'Attention', domain: KILN_DOMAIN, versions: [1],
  attrs: { scale: attr.float(1), k_transposed: attr.int(0) },
  inputs: [3, 4], outputs: [1, 1],
  doc: 'softmax(Q @ K^T * scale + mask) @ V',
  infer: (ctx) => {
    const q = tensorTypeOf(ctx.inputTypes[0]), v = tensorTypeOf(ctx.inputTypes[2]);
    if (!q) return [{ kind: 'unknown' }];
    return [{ kind: 'tensor', dtype: q.dtype, shape: q.shape && v?.shape ? [...q.shape.slice(0, -1), v.shape[v.shape.length - 1]] : undefined }];
  },
  run: (ctx) => {
    const q = ctx.tensor(0), k = ctx.tensor(1), v = ctx.tensor(2), mask = ctx.optionalTensor(3);
    const kt = ctx.attrs.k_transposed ? k : (callKernel(ctx.node, '', 'Transpose', 13, [k], { perm: { type: 'ints', value: [...k.dims.keys()].map((i, _, a) => (i < a.length - 2 ? i : i === a.length - 2 ? a.length - 1 : a.length - 2)) } })[0] as TensorData);
    let [s] = callKernel(ctx.node, '', 'MatMul', 13, [q, kt]) as TensorData[];
    const scale = ctx.attrs.scale;
    const scaled = s.toFloat64();
    for (let i = 0; i < scaled.length; i++) scaled[i] *= scale;
    s = TensorData.fromNumbers(s.dtype === 'float16' || s.dtype === 'bfloat16' ? 'float32' : s.dtype, s.dims, scaled);
    if (mask) {
      const [mi] = broadcastIndex([mask.dims], s.dims);
      const m = mask.toFloat64();
      const d = s.data as Float32Array;
      for (let i = 0; i < d.length; i++) {
        const mv = m[mi ? mi[i] : i];
        d[i] = mask.dtype === 'bool' ? (mv ? d[i] : -Infinity) : d[i] + mv;
      }
    }
    const [p] = callKernel(ctx.node, '', 'Softmax', 13, [s], { axis: { type: 'int', value: -1 } }) as TensorData[];
    const pv = q.dtype === p.dtype ? p : TensorData.fromNumbers(q.dtype, p.dims, p.toFloat64());
    return callKernel(ctx.node, '', 'MatMul', 13, [pv, v]);
  },
});

/** ONNX ops the optimizer may introduce whatever opset the model imports, with the semantics of `opset`. */
function alias(name: string, opset: number, inputs: [number, number], outputs: [number, number], attrs: OpDef['attrs']): OpDef {
  return defineOp({
    name, domain: KILN_DOMAIN, versions: [1], attrs, inputs, outputs, doc: `ONNX ${name} (opset ${opset} semantics)`,
    infer: (ctx) => {
      const real = lookupOp('', name);
      if (!real?.infer) return [sameAsInput0(ctx.inputTypes)];
      const node = { ...ctx.node, domain: '' };
      return real.infer({ ...ctx, node, opset, attrs: parseAttrs(real, node) });
    },
    run: (ctx) => callKernel(ctx.node, '', name, opset, ctx.inputs, ctx.node.attrs, ctx.numOutputs),
  });
}

const ops: OpDef<any>[] = [
  FusedConv, MaxPoolNHWC, FusedMatMul, Elementwise, Attention,
  alias('LayerNormalization', 17, [2, 3], [1, 3], { axis: attr.int(-1), epsilon: attr.float(1e-5), stash_type: attr.int(1) }),
  alias('RMSNormalization', 23, [2, 2], [1, 1], { axis: attr.int(-1), epsilon: attr.float(1e-5), stash_type: attr.int(1) }),
  alias('Gelu', 20, [1, 1], [1, 1], { approximate: attr.string('none') }),
  alias('Softmax', 13, [1, 1], [1, 1], { axis: attr.int(-1) }),
  alias('Split', 18, [1, 2], [1, Infinity], { axis: attr.int(0), num_outputs: attr.int() }),
];
export default ops;
