// Kiln's quantized layers (domain 'kiln'), made by the 'quantized layers' optimizer stage from
// DequantizeLinear(x_q) + DequantizeLinear(W_q) -> Conv/MatMul/Gemm [-> bias, residual, activation] [-> QuantizeLinear].
// Everything a fused int8 GEMM needs is in the attributes: the activation's scale and zero point (per tensor), the
// weight's scales (one per output channel, or one; weight zero points are always 0), and the output's scale and
// zero point when the layer requantizes (y_dtype set) instead of writing float32. The reference kernels compute
// exactly what the unfolded Q/DQ subgraph computes: dequantize in float32, run the fused float layer, quantize.
import { attr, defineOp, lookupOp, type InferContext, type KernelContext, type OpDef } from '../ir/schema.js';
import type { AttrValue, Node, ValueType } from '../ir/graph.js';
import type { DType } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { callKernel } from './execute.js';
import { dequantizeLinear, quantizeLinear } from './quantize.js';
import { ACTIVATIONS, KILN_DOMAIN } from './fused.js';

const quantAttrs = {
  /** activation input: x = (x_q - x_zero_point) * x_scale */
  x_scale: attr.float(1), x_zero_point: attr.int(0),
  /** weight scales, one per output channel (or one for the whole tensor); w = W_q * w_scales[channel] */
  w_scales: attr.floats([]),
  /** '' writes float32; 'int8' / 'uint8' writes saturate(round_half_even(y / y_scale) + y_zero_point) */
  y_dtype: attr.string(''), y_scale: attr.float(1), y_zero_point: attr.int(0),
};
/** QConv's second output (a float output other layers read too): the first output, as stored, quantized like this */
const secondOutputAttrs = { y2_dtype: attr.string(''), y2_scale: attr.float(1), y2_zero_point: attr.int(0) };
const epilogueAttrs = { activation: attr.string(''), activation_params: attr.floats([]) };
/**
 * QConv with an 8-bit residual (input 3 int8/uint8; 'quantized residuals' stage: DQ(Q(conv)) + DQ(r_q) -> Add folded):
 * the layer's sum is first quantized as its own QuantizeLinear did (c_*), then that and the residual are dequantized
 * (r = (r_q - r_zero_point) * r_scale) and added in float32, then the activation and y's quantization as usual
 */
const residualAttrs = { r_scale: attr.float(1), r_zero_point: attr.int(0), c_dtype: attr.string(''), c_scale: attr.float(1), c_zero_point: attr.int(0) };
/**
 * QMatMul on X [B, S, K] with `heads` = H > 0: the [B, S, N] result is split along N into one output per node output
 * (equal widths W = N / outputs), each as [B, H, S, W / H] (reshaped to heads, heads before positions): attention's
 * Q, K and V written where its batched GEMMs read them, instead of a Split and three Transposes after the GEMM
 */
const headAttrs = { heads: attr.int(0) };

interface QuantAttrs {
  x_scale: number; x_zero_point: number; w_scales: number[]; y_dtype: string; y_scale: number; y_zero_point: number;
  y2_dtype: string; y2_scale: number; y2_zero_point: number;
  r_scale?: number; r_zero_point?: number; c_dtype?: string; c_scale?: number; c_zero_point?: number;
  activation?: string; activation_params?: number[];
}

const f32 = (v: number) => TensorData.scalar('float32', v);

/** The quantized activation input as float32. */
function dequantizeInput(x: TensorData, a: QuantAttrs): TensorData {
  return dequantizeLinear(x, f32(a.x_scale), TensorData.scalar(x.dtype, a.x_zero_point), 'float32');
}

/** The int8 weight as float32: per channel along `axis` when there are several scales. */
export function dequantizeWeight(w: TensorData, scales: number[], axis: number): TensorData {
  const s = scales.length === 1 ? f32(scales[0]) : TensorData.fromNumbers('float32', [scales.length], scales);
  return dequantizeLinear(w, s, undefined, 'float32', axis);
}

function requantize(y: TensorData, a: QuantAttrs): TensorData {
  if (!a.y_dtype) return y;
  return quantizeLinear(y, f32(a.y_scale), TensorData.scalar(a.y_dtype as DType, a.y_zero_point), a.y_dtype as DType);
}

/** Attributes of `node` other than the quantization ones (what the float layer takes). */
function floatAttrs(node: Node): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const [k, v] of Object.entries(node.attrs)) if (!(k in quantAttrs) && !(k in secondOutputAttrs) && !(k in headAttrs) && !(k in residualAttrs)) out[k] = v;
  return out;
}

/** The float layer's output type with the quantized layer's output dtype. */
function inferAs(floatOp: string, ctx: InferContext<any>): ValueType[] {
  const def = lookupOp(KILN_DOMAIN, floatOp);
  const asFloat = (t: ValueType | undefined): ValueType | undefined => (t?.kind === 'tensor' ? { ...t, dtype: 'float32' } : t);
  const node = { ...ctx.node, opType: floatOp, attrs: floatAttrs(ctx.node) };
  const types = ctx.inputTypes.map((t, i) => (i < 2 || (i === 3 && isQuantizedResidual(t)) ? asFloat(t) : t));
  const outs = def?.infer ? def.infer({ ...ctx, node, inputTypes: types, attrs: { ...ctx.attrs } }) : [{ kind: 'unknown' } as ValueType];
  const dtype = (ctx.attrs.y_dtype as string) || floatOut(ctx.inputTypes.slice(2).map((t) => (t?.kind === 'tensor' ? t.dtype : undefined)));
  // (an 8-bit residual's dtype is no float type, so floatOut passes over it)
  const res = outs.map((t) => (t.kind === 'tensor' ? { ...t, dtype: dtype as DType } : t));
  const y2 = ctx.attrs.y2_dtype as string;
  return y2 && ctx.numOutputs > 1 && res[0]?.kind === 'tensor' ? [res[0], { ...res[0], dtype: y2 as DType }] : res;
}

/** A float output's type: fp16/bf16 when the layer's bias or residual is (an fp16 build's reduced layer), else float32. */
const floatOut = (types: (DType | undefined)[]): DType => types.find((t) => t === 'float16' || t === 'bfloat16') ?? 'float32';
const asF32 = (t: TensorData | undefined) => (t && t.dtype !== 'float32' ? TensorData.fromNumbers('float32', t.dims, t.toFloat64()) : t);

const isQuantizedResidual = (t: ValueType | undefined) => t?.kind === 'tensor' && (t.dtype === 'int8' || t.dtype === 'uint8');

/**
 * act(dq(quantize(y, c_*)) + dq(residual_q)): what DequantizeLinear(QuantizeLinear(conv)) + DequantizeLinear(r_q) ->
 * Add -> activation computes, each step stored as float32 as the unfolded nodes store it.
 */
function quantizedResidualEpilogue(node: Node, y: TensorData, rq: TensorData, a: QuantAttrs): TensorData {
  if (a.c_dtype !== 'int8' && a.c_dtype !== 'uint8') throw new Error(`QConv '${node.name}': an 8-bit residual needs c_dtype int8 or uint8 (the layer's own quantization), got '${a.c_dtype ?? ''}'`);
  const c = quantizeLinear(y, f32(a.c_scale ?? 1), TensorData.scalar(a.c_dtype, a.c_zero_point ?? 0), a.c_dtype);
  const yc = dequantizeLinear(c, f32(a.c_scale ?? 1), TensorData.scalar(a.c_dtype, a.c_zero_point ?? 0), 'float32');
  const r = dequantizeLinear(rq, f32(a.r_scale ?? 1), TensorData.scalar(rq.dtype, a.r_zero_point ?? 0), 'float32');
  if (yc.dims.join() !== r.dims.join()) throw new Error(`QConv '${node.name}': residual shape [${r.dims.join(', ')}] differs from the output's [${yc.dims.join(', ')}]`);
  const f = a.activation ? ACTIVATIONS[a.activation] : undefined;
  if (a.activation && !f) throw new Error(`QConv '${node.name}': unknown activation '${a.activation}'`);
  const u = yc.data as Float32Array, w = r.data as Float32Array, out = new Float32Array(u.length);
  for (let i = 0; i < u.length; i++) {
    out[i] = u[i] + w[i];
    if (f) out[i] = f(out[i], a.activation_params ?? []);
  }
  return new TensorData('float32', [...yc.dims], out);
}

function checkInput(node: Node, x: TensorData): void {
  if (x.dtype !== 'int8' && x.dtype !== 'uint8' && x.dtype !== 'float8e4m3fn') throw new Error(`${node.opType} '${node.name}': input 0 must be int8, uint8 or float8e4m3fn, got ${x.dtype}`);
}

/**
 * The reference semantics of a quantized layer: dequantize the activation and the weight (its scales along the axis
 * `weightAxis` gives), run the float fused op with the same epilogue, then requantize when the layer does.
 */
function runAsFloat(ctx: KernelContext<any>, floatOp: string, weightAxis: (wq: TensorData) => number): TensorData[] {
  const a = ctx.attrs as unknown as QuantAttrs;
  const x = ctx.tensor(0);
  checkInput(ctx.node, x);
  const wq = ctx.tensor(1);
  const w = dequantizeWeight(wq, a.w_scales, weightAxis(wq));
  const extra = [ctx.optionalTensor(2), ctx.optionalTensor(3)];
  const rq = extra[1] && (extra[1].dtype === 'int8' || extra[1].dtype === 'uint8') ? extra[1] : undefined;
  let y: TensorData;
  if (rq) {
    const plain = Object.fromEntries(Object.entries(floatAttrs(ctx.node)).filter(([k]) => !k.startsWith('activation')));
    [y] = callKernel(ctx.node, KILN_DOMAIN, floatOp, 1, [dequantizeInput(x, a), w, ...(extra[0] ? [asF32(extra[0])!] : [])], plain) as TensorData[];
    y = quantizedResidualEpilogue(ctx.node, asF32(y)!, rq, a);
  } else [y] = callKernel(ctx.node, KILN_DOMAIN, floatOp, 1, [dequantizeInput(x, a), w, ...extra.map(asF32)], floatAttrs(ctx.node)) as TensorData[];
  const out = a.y_dtype ? 'float32' : floatOut(extra.filter((t) => t !== rq).map((t) => t?.dtype));
  const first = requantize(out === 'float32' ? y : TensorData.fromNumbers(out, y.dims, y.toFloat64()), a);
  if (ctx.node.outputs.length < 2 || !a.y2_dtype) return [first];
  return [first, requantize(asF32(first)!, { ...a, y_dtype: a.y2_dtype, y_scale: a.y2_scale, y_zero_point: a.y2_zero_point })];
}

/** Conv on a quantized activation with int8 weights [M, C/group, kh, kw], float bias/residual, optional requantize. */
const QConv = defineOp({
  name: 'QConv', domain: KILN_DOMAIN, versions: [1],
  attrs: {
    auto_pad: attr.string('NOTSET'), dilations: attr.ints(), group: attr.int(1), kernel_shape: attr.ints(), pads: attr.ints(),
    strides: attr.ints(), layout: attr.string(''), ...epilogueAttrs, ...quantAttrs, ...secondOutputAttrs, ...residualAttrs,
  },
  inputs: [2, 4], outputs: [1, 2],
  doc: 'y = quantize?(act(conv(dq(x_q), W_q * w_scales) + b + residual)); y2 = quantize(y) when y2_dtype is set; an 8-bit residual: act(dq(quantize(conv + b, c_*)) + dq(residual, r_*))',
  infer: (ctx) => inferAs('FusedConv', ctx),
  run: (ctx) => runAsFloat(ctx, 'FusedConv', () => 0),
});

/** The head-split outputs of a QMatMul with `heads` (see headAttrs), from its [B, S, N] result. */
function splitHeads(y: TensorData, parts: number, H: number): TensorData[] {
  const [B, S, N] = y.dims, W = N / parts, D = W / H;
  const src = y.data as Float32Array;
  return Array.from({ length: parts }, (_, j) => {
    const dst = new (src.constructor as Float32ArrayConstructor)(B * S * W);
    for (let b = 0; b < B; b++) for (let s = 0; s < S; s++) for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) {
      dst[((b * H + h) * S + s) * D + d] = src[(b * S + s) * N + j * W + h * D + d];
    }
    return new TensorData(y.dtype, [B, H, S, D], dst as never);
  });
}

function checkHeads(node: Node, dims: readonly unknown[] | undefined, N: number | undefined, H: number): void {
  const parts = node.outputs.length, W = N !== undefined ? N / parts : undefined;
  if ((dims && dims.length !== 3) || (W !== undefined && (!Number.isInteger(W) || W % H !== 0))) {
    throw new Error(`QMatMul '${node.name}': heads = ${H} needs X [B, S, K] and N (${N}) divisible into ${parts} outputs of whole heads`);
  }
}

/** MatMul/Gemm on a quantized activation with a constant 2-D int8 weight (scales along its output axis). */
const QMatMul = defineOp({
  name: 'QMatMul', domain: KILN_DOMAIN, versions: [1],
  attrs: { transB: attr.int(0), gemm: attr.int(0), ...epilogueAttrs, ...quantAttrs, ...headAttrs },
  inputs: [2, 4], outputs: [1, 3],
  doc: 'y = quantize?(act(dq(x_q) @ (W_q * w_scales) + b + residual)); with heads: y split along N into [B, H, S, D] outputs',
  infer: (ctx) => {
    const [y] = inferAs('FusedMatMul', ctx);
    const H = ctx.attrs.heads as number;
    if (!H) return [y];
    const shape = y.kind === 'tensor' ? y.shape : undefined;
    const N = typeof shape?.[2] === 'number' ? shape[2] : undefined, parts = ctx.node.outputs.length;
    checkHeads(ctx.node, shape, N, H);
    const out = (): ValueType => (y.kind === 'tensor' ? { ...y, shape: shape && N !== undefined ? [shape[0], H, shape[1], N / parts / H] : undefined } : y);
    return Array.from({ length: parts }, out);
  },
  run: (ctx) => {
    const [y] = runAsFloat(ctx, 'FusedMatMul', (wq) => (ctx.attrs.transB ? 0 : wq.rank - 1));
    const H = ctx.attrs.heads as number;
    if (!H) return [y];
    checkHeads(ctx.node, y.dims, y.dims[2], H);
    return splitHeads(y, ctx.node.outputs.length, H);
  },
});

/**
 * LayerNormalization (opset 17) whose output is also read quantized: Y as LayerNormalization writes it, and Y2 = Y as
 * stored, quantized per tensor (what a QuantizeLinear reading Y computes), so the GPU writes both in one pass.
 */
const QLayerNormalization = defineOp({
  name: 'QLayerNormalization', domain: KILN_DOMAIN, versions: [1],
  attrs: { axis: attr.int(-1), epsilon: attr.float(1e-5), stash_type: attr.int(1), ...secondOutputAttrs },
  inputs: [2, 3], outputs: [2, 2],
  doc: 'y = LayerNormalization(x, scale, b); y2 = quantize(y)',
  infer: (ctx) => {
    const ln = lookupOp('', 'LayerNormalization')!;
    const node = { ...ctx.node, domain: '', opType: 'LayerNormalization', attrs: floatAttrs(ctx.node), outputs: ctx.node.outputs.slice(0, 1) };
    const [y] = ln.infer!({ ...ctx, node, opset: 17, numOutputs: 1, attrs: { axis: ctx.attrs.axis, epsilon: ctx.attrs.epsilon, stash_type: ctx.attrs.stash_type } });
    return [y, y.kind === 'tensor' ? { ...y, dtype: ctx.attrs.y2_dtype as DType } : y];
  },
  run: (ctx) => {
    const a = ctx.attrs as unknown as QuantAttrs;
    const [y] = callKernel(ctx.node, '', 'LayerNormalization', 17, ctx.inputs, floatAttrs(ctx.node), 1) as TensorData[];
    return [y, requantize(asF32(y)!, { ...a, y_dtype: a.y2_dtype, y_scale: a.y2_scale, y_zero_point: a.y2_zero_point })];
  },
});

/** Transpose whose output is read quantized: y = QuantizeLinear(Transpose(x, perm)) per tensor, in one pass on the GPU. */
const QTranspose = defineOp({
  name: 'QTranspose', domain: KILN_DOMAIN, versions: [1],
  attrs: { perm: attr.ints(), y_dtype: attr.string('int8'), y_scale: attr.float(1), y_zero_point: attr.int(0) },
  inputs: [1, 1], outputs: [1, 1],
  doc: 'y = quantize(transpose(x, perm))',
  infer: (ctx) => {
    const tr = lookupOp('', 'Transpose')!;
    const node = { ...ctx.node, domain: '', opType: 'Transpose', attrs: { perm: ctx.node.attrs.perm } };
    const [y] = tr.infer!({ ...ctx, node, opset: 13, attrs: { perm: ctx.attrs.perm } });
    return [y.kind === 'tensor' ? { ...y, dtype: ctx.attrs.y_dtype as DType } : y];
  },
  run: (ctx) => {
    const a = ctx.attrs as unknown as QuantAttrs;
    const [t] = callKernel(ctx.node, '', 'Transpose', 13, ctx.inputs, { perm: ctx.node.attrs.perm }) as TensorData[];
    return [requantize(asF32(t)!, a)];
  },
});

/**
 * kiln:Attention whose output is read transposed and quantized: y = quantize(transpose(attention(q, k, v, mask), perm))
 * per tensor, the attention output as stored (its float type) before quantizing, as kiln:QTranspose reads it. The GPU
 * kernel stores the 8-bit values where the output projection reads them (BERT: [B, S, H, D]) instead of writing the
 * float output and running a QTranspose over it.
 */
const QAttention = defineOp({
  name: 'QAttention', domain: KILN_DOMAIN, versions: [1],
  attrs: { scale: attr.float(1), k_transposed: attr.int(0), perm: attr.ints(), y_dtype: attr.string('int8'), y_scale: attr.float(1), y_zero_point: attr.int(0) },
  inputs: [3, 4], outputs: [1, 1],
  doc: 'y = quantize(transpose(softmax(Q @ K^T * scale + mask) @ V, perm))',
  infer: (ctx) => {
    const [o] = lookupOp(KILN_DOMAIN, 'Attention')!.infer!({ ...ctx, node: { ...ctx.node, opType: 'Attention', attrs: attentionAttrs(ctx.node) } });
    const node = { ...ctx.node, domain: '', opType: 'Transpose', attrs: { perm: ctx.node.attrs.perm } };
    const [y] = lookupOp('', 'Transpose')!.infer!({ ...ctx, node, opset: 13, inputTypes: [o], attrs: { perm: ctx.attrs.perm } });
    return [y.kind === 'tensor' ? { ...y, dtype: ctx.attrs.y_dtype as DType } : y];
  },
  run: (ctx) => {
    const a = ctx.attrs as unknown as QuantAttrs;
    const [o] = callKernel(ctx.node, KILN_DOMAIN, 'Attention', 1, ctx.inputs, attentionAttrs(ctx.node)) as TensorData[];
    const [t] = callKernel(ctx.node, '', 'Transpose', 13, [o], { perm: ctx.node.attrs.perm }) as TensorData[];
    return [requantize(asF32(t)!, a)];
  },
});

/** The float attention's attributes of a QAttention node. */
function attentionAttrs(node: Node): Record<string, AttrValue> {
  const { scale, k_transposed: kt } = node.attrs;
  return { ...(scale ? { scale } : {}), ...(kt ? { k_transposed: kt } : {}) };
}

const ops: OpDef<any>[] = [QConv, QMatMul, QLayerNormalization, QTranspose, QAttention];
export default ops;
