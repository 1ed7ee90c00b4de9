// Quantized layers from explicit Q/DQ: DequantizeLinear(x_q) + DequantizeLinear(W_q) -> Conv/MatMul/Gemm [->
// BatchNormalization] becomes kiln:QConv / kiln:QMatMul reading x_q and W_q directly. It runs before constant
// folding (which would turn DequantizeLinear(W_q) back into float weights). The fusion stages then give these
// layers their bias, residual and activation epilogues like any fused layer, and `requantizeOutputs` (after them)
// folds a QuantizeLinear that is a layer's only reader into the layer, so chains of quantized layers pass int8.
import type { AttrValue, Node } from '../ir/graph.js';
import { TensorData } from '../ir/tensor.js';
import { KILN_DOMAIN } from '../ops/fused.js';
import { evaluateNode } from './fold.js';
import type { GraphView } from './view.js';

const int = (value: number): AttrValue => ({ type: 'int', value });
const float = (value: number): AttrValue => ({ type: 'float', value });
const floats = (value: number[]): AttrValue => ({ type: 'floats', value });
const str = (value: string): AttrValue => ({ type: 'string', value });
const attrOf = <T>(n: Node, k: string, d: T): T => (n.attrs[k]?.value as T | undefined) ?? d;

export const isQuantizedLayer = (n: Node | undefined): n is Node => !!n && n.domain === KILN_DOMAIN && (n.opType === 'QConv' || n.opType === 'QMatMul');

function producer(v: GraphView, name: string, opType: string): Node | undefined {
  const p = name ? v.producer(name) : undefined;
  return p && p.domain === '' && p.opType === opType ? p : undefined;
}

/** A per-tensor quantization parameter pair (scale, zero point) of constants, or undefined. */
function perTensor(v: GraphView, n: Node): { scale: number; zeroPoint: number } | undefined {
  const s = v.constant(n.inputs[1]), z = n.inputs[2] ? v.constant(n.inputs[2]) : undefined;
  if (!s || s.size !== 1 || s.dtype !== 'float32' || (n.inputs[2] && (!z || z.size !== 1))) return undefined;
  return { scale: s.get(0), zeroPoint: z ? z.get(0) : 0 };
}

/** The quantized activation behind `x`: DequantizeLinear(x_q: int8/uint8, per tensor). */
function quantizedInput(v: GraphView, x: string) {
  const dq = producer(v, x, 'DequantizeLinear');
  const t = dq && v.type(dq.inputs[0]);
  const dtype = t?.kind === 'tensor' ? t.dtype : undefined;
  const p = dq && perTensor(v, dq);
  if (!dq || !p || (dtype !== 'int8' && dtype !== 'uint8') || v.constant(dq.inputs[0])) return undefined;
  return { q: dq.inputs[0], ...p };
}

/** The constant int8 weight behind `w` with symmetric scales along `axis` (one scale also accepted). */
function quantizedWeight(v: GraphView, w: string, axis: number) {
  const dq = producer(v, w, 'DequantizeLinear');
  if (!dq || !v.singleUse(w) || attrOf(dq, 'block_size', 0)) return undefined;
  const q = v.constant(dq.inputs[0]), s = v.constant(dq.inputs[1]), z = dq.inputs[2] ? v.constant(dq.inputs[2]) : undefined;
  if (!q || q.dtype !== 'int8' || !s || s.dtype !== 'float32' || (dq.inputs[2] && !z) || (z && z.toFloat64().some((x) => x !== 0))) return undefined;
  if (s.size !== 1) {
    const a = attrOf(dq, 'axis', 1);
    if (s.rank !== 1 || (a < 0 ? a + q.rank : a) !== axis || s.size !== q.dims[axis]) return undefined;
  }
  return { q: dq.inputs[0], scales: Array.from(s.toFloat64()) };
}

/** A float bias: a constant, or DequantizeLinear of constants (int32 biases of ORT-style models). */
function floatBias(v: GraphView, b: string | undefined): string | undefined | null {
  if (!b) return undefined;
  const c = v.constant(b);
  if (c) return c.dtype === 'float32' ? b : null;
  const dq = producer(v, b, 'DequantizeLinear');
  if (!dq || !dq.inputs.filter(Boolean).every((i) => v.constant(i))) return null;
  const out = evaluateNode(v, dq)?.[0];
  return out && out.dtype === 'float32' ? v.addConstant(`${b}.folded`, out) : null;
}

/** Conv/MatMul/Gemm on dequantized operands -> QConv/QMatMul. */
export function foldQuantizedLayers(v: GraphView): number {
  let n = 0;
  for (const node of [...v.graph.nodes]) {
    if (node.domain !== '' || !['Conv', 'MatMul', 'Gemm'].includes(node.opType)) continue;
    const x = quantizedInput(v, node.inputs[0]);
    if (!x) continue;
    const wq = v.constant(producer(v, node.inputs[1], 'DequantizeLinear')?.inputs[0] ?? '');
    if (!wq) continue;
    const transB = attrOf(node, 'transB', 0);
    let attrs: Record<string, AttrValue>, opType: string, bias: string | undefined | null;
    if (node.opType === 'Conv') {
      opType = 'QConv';
      attrs = { ...node.attrs };
      bias = floatBias(v, node.inputs[2]);
    } else {
      if (wq.rank !== 2 || attrOf(node, 'transA', 0)) continue;
      opType = 'QMatMul';
      const gemm = node.opType === 'Gemm';
      attrs = gemm ? { transB: int(transB), gemm: int(1) } : {};
      bias = floatBias(v, node.inputs[2]);
      if (gemm && bias && attrOf(node, 'beta', 1) !== 1) {
        const c = v.constant(bias)!;
        bias = v.addConstant(`${node.name}.bias`, TensorData.fromNumbers('float32', c.dims, c.toFloat64().map((b) => b * attrOf(node, 'beta', 1))));
      }
    }
    const w = quantizedWeight(v, node.inputs[1], opType === 'QConv' || transB ? 0 : 1);
    if (!w || bias === null) continue;
    const alpha = attrOf(node, 'alpha', 1);
    attrs.x_scale = float(x.scale);
    attrs.x_zero_point = int(x.zeroPoint);
    attrs.w_scales = floats(w.scales.map((s) => Math.fround(s * alpha)));
    const q: Node = { name: node.name, opType, domain: KILN_DOMAIN, inputs: [x.q, w.q, ...(bias ? [bias] : [])], outputs: [...node.outputs], attrs };
    v.insertNode(q, node);
    // the weight's DequantizeLinear goes now: left to dead-code elimination, constant folding would run it first
    v.removeNodes([node, v.producer(node.inputs[1])!]);
    if (opType === 'QConv') absorbBatchNorm(v, q);
    n++;
  }
  if (n) v.reindex();
  return n;
}

/** QConv -> BatchNormalization (inference, constant parameters): scale the weight scales and bias per channel. */
function absorbBatchNorm(v: GraphView, q: Node): void {
  const y = q.outputs[0];
  const bn = v.singleUse(y) ? v.consumers(y)[0] : undefined;
  if (!bn || bn.opType !== 'BatchNormalization' || bn.domain !== '' || bn.inputs[0] !== y) return;
  if (bn.outputs.slice(1).some((o) => o && v.consumers(o).length)) return;
  const [s, b, m, va] = bn.inputs.slice(1, 5).map((i) => v.constant(i)?.toFloat64());
  const M = v.constant(q.inputs[1])!.dims[0];
  if (!s || !b || !m || !va || s.length !== M) return;
  const eps = attrOf(bn, 'epsilon', 1e-5);
  const old = q.inputs[2] ? v.constant(q.inputs[2])!.toFloat64() : undefined;
  const ws = q.attrs.w_scales.value as number[];
  const k = Array.from(s, (sc, c) => sc / Math.sqrt(va[c] + eps));
  q.attrs.w_scales = floats(k.map((kc, c) => Math.fround((ws.length === 1 ? ws[0] : ws[c]) * kc)));
  const bias = k.map((kc, c) => ((old ? old[c] : 0) - m[c]) * kc + b[c]);
  q.inputs = [q.inputs[0], q.inputs[1], v.addConstant(`${q.name}.bias`, TensorData.fromNumbers('float32', [M], bias))];
  v.removeNodes([bn]);
  v.replaceUses(bn.outputs[0], y);
}

/** QuantizeLinear (per tensor, int8/uint8) as the only reader of a float-output quantized layer -> the layer requantizes. */
export function requantizeOutputs(v: GraphView): number {
  let n = 0;
  for (const ql of v.graph.nodes.filter((x) => x.opType === 'QuantizeLinear' && x.domain === '')) {
    const layer = v.producer(ql.inputs[0]);
    if (!isQuantizedLayer(layer) || attrOf(layer, 'y_dtype', '') || !v.singleUse(ql.inputs[0])) continue;
    const p = perTensor(v, ql);
    const zt = ql.inputs[2] ? v.constant(ql.inputs[2]) : undefined;
    const od = attrOf<number>(ql, 'output_dtype', 0);
    const dtype = zt?.dtype ?? (od === 3 ? 'int8' : od ? '' : 'uint8');
    if (!p || (dtype !== 'int8' && dtype !== 'uint8') || attrOf(ql, 'saturate', 1) !== 1) continue;
    layer.attrs = { ...layer.attrs, y_dtype: str(dtype), y_scale: float(p.scale), y_zero_point: int(p.zeroPoint) };
    layer.outputs = [ql.outputs[0]];
    v.removeNodes([ql]);
    n++;
  }
  if (n) v.reindex();
  return n;
}

// **** fp8 (float8e4m3fn): the same fold for MatMul/Gemm, kept apart from the int8 one above. Activations are
// per-tensor fp8 (zero point 0), weights constant fp8 with one scale or one per output column; the layer becomes a
// kiln:QMatMul whose operands are fp8 (the GPU runs them on fp8 tensor cores, the CPU on the reference kernel).
const FP8 = 'float8e4m3fn';
const FP8_CODE = 17; // TensorProto.FLOAT8E4M3FN

function fp8Input(v: GraphView, x: string) {
  const dq = producer(v, x, 'DequantizeLinear');
  const t = dq && v.type(dq.inputs[0]);
  const p = dq && perTensor(v, dq);
  if (!dq || !p || t?.kind !== 'tensor' || t.dtype !== FP8 || v.constant(dq.inputs[0])) return undefined;
  return { q: dq.inputs[0], scale: p.scale };
}

function fp8Weight(v: GraphView, w: string, axis: number) {
  const dq = producer(v, w, 'DequantizeLinear');
  if (!dq || !v.singleUse(w) || attrOf(dq, 'block_size', 0)) return undefined;
  const q = v.constant(dq.inputs[0]), s = v.constant(dq.inputs[1]), z = dq.inputs[2] ? v.constant(dq.inputs[2]) : undefined;
  if (!q || q.dtype !== FP8 || q.rank !== 2 || !s || s.dtype !== 'float32' || (dq.inputs[2] && !z) || (z && z.toFloat64().some((x) => x !== 0))) return undefined;
  if (s.size !== 1 && (s.rank !== 1 || s.size !== q.dims[axis] || ((a) => (a < 0 ? a + 2 : a))(attrOf(dq, 'axis', 1)) !== axis)) return undefined;
  return { q: dq.inputs[0], scales: Array.from(s.toFloat64()) };
}

/** MatMul/Gemm on fp8-dequantized operands -> kiln:QMatMul with fp8 inputs. */
export function foldFp8Layers(v: GraphView): number {
  let n = 0;
  for (const node of [...v.graph.nodes]) {
    if (node.domain !== '' || (node.opType !== 'MatMul' && node.opType !== 'Gemm') || attrOf(node, 'transA', 0)) continue;
    const x = fp8Input(v, node.inputs[0]);
    const gemm = node.opType === 'Gemm', transB = attrOf(node, 'transB', 0);
    const w = x && fp8Weight(v, node.inputs[1], transB ? 0 : 1);
    let bias = w ? floatBias(v, node.inputs[2]) : null;
    if (!x || !w || bias === null || (gemm && bias && attrOf(node, 'beta', 1) !== 1)) continue;
    const alpha = attrOf(node, 'alpha', 1);
    const attrs: Record<string, AttrValue> = {
      ...(gemm ? { transB: int(transB), gemm: int(1) } : {}),
      x_scale: float(x.scale), x_zero_point: int(0), w_scales: floats(w.scales.map((s) => Math.fround(s * alpha))),
    };
    bias ??= undefined;
    v.insertNode({ name: node.name, opType: 'QMatMul', domain: KILN_DOMAIN, inputs: [x.q, w.q, ...(bias ? [bias] : [])], outputs: [...node.outputs], attrs }, node);
    v.removeNodes([node, v.producer(node.inputs[1])!]);
    n++;
  }
  if (n) v.reindex();
  return n;
}

/** QuantizeLinear to fp8 (per tensor) as the only reader of a float-output fp8 layer -> the layer writes fp8. */
export function requantizeFp8Outputs(v: GraphView): number {
  let n = 0;
  for (const ql of v.graph.nodes.filter((x) => x.opType === 'QuantizeLinear' && x.domain === '')) {
    const layer = v.producer(ql.inputs[0]);
    if (!isQuantizedLayer(layer) || attrOf(layer, 'y_dtype', '') || !v.singleUse(ql.inputs[0])) continue;
    const xt = v.type(layer.inputs[0]);
    const zt = ql.inputs[2] ? v.constant(ql.inputs[2]) : undefined;
    const p = perTensor(v, ql);
    if (xt?.kind !== 'tensor' || xt.dtype !== FP8 || !p || (zt ? zt.dtype !== FP8 : attrOf<number>(ql, 'output_dtype', 0) !== FP8_CODE)) continue;
    if (attrOf(ql, 'saturate', 1) !== 1) continue;
    layer.attrs = { ...layer.attrs, y_dtype: str(FP8), y_scale: float(p.scale), y_zero_point: int(0) };
    layer.outputs = [ql.outputs[0]];
    v.removeNodes([ql]);
    n++;
  }
  if (n) v.reindex();
  return n;
}
