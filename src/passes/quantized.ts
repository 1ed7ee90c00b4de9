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

/** A per-tensor, saturating QuantizeLinear's scale, zero point and output type (int8 or uint8, and float8e4m3fn where
 * \`fp8\`), or undefined for any other (the rewrites below fold only these). */
function quantizeParams(v: GraphView, ql: Node, fp8 = false): { scale: number; zeroPoint: number; dtype: string } | undefined {
  const p = perTensor(v, ql);
  const zt = ql.inputs[2] ? v.constant(ql.inputs[2]) : undefined;
  const od = attrOf<number>(ql, 'output_dtype', 0);
  const dtype = zt?.dtype ?? (od === 3 ? 'int8' : fp8 && od === FP8_CODE ? FP8 : od ? '' : 'uint8');
  if (!p || !(dtype === 'int8' || dtype === 'uint8' || (fp8 && dtype === FP8)) || attrOf(ql, 'saturate', 1) !== 1) return undefined;
  return { ...p, dtype };
}

/** The quantized activation behind `x`: DequantizeLinear(x_q: int8/uint8, per tensor). */
function quantizedInput(v: GraphView, x: string) {
  const dq = producer(v, x, 'DequantizeLinear');
  const dtype = dq && v.dtype(dq.inputs[0]);
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

/**
 * A residual Add quantized on both inputs (`kiln quantize --quantize-residual`, TensorRT's Q/DQ placement):
 * QConv (float output, no residual or activation yet) -> QuantizeLinear -> DequantizeLinear -> Add, whose other input
 * is DequantizeLinear(r_q: int8/uint8, per tensor) -> the QConv reads r_q as an 8-bit residual (r_scale, r_zero_point)
 * and writes the Add's output. Its epilogue computes what the nodes did, rounding twice: the sum quantized at the
 * layer's own scale (c_*), dequantized, plus the dequantized residual, in float32 (see kiln:QConv). The stages after
 * give it the Add's activation and, where a QuantizeLinear is the only reader, the next quantization, so a ResNet
 * bottleneck's conv3 reads and writes int8 (and a projection block's downsample conv writes int8 too). The residual
 * cannot depend on the layer: the layer's output reaches nothing but this Add. GPU builds only (with the layout
 * stages): the CPU's native int8 kernels keep the unfolded nodes.
 */
export function foldQuantizedResiduals(v: GraphView): number {
  let n = 0;
  for (const add of v.graph.nodes.filter((x) => x.opType === 'Add' && x.domain === '' && x.inputs.length === 2)) {
    for (const side of [0, 1]) {
      const dqc = producer(v, add.inputs[side], 'DequantizeLinear');
      const qc = dqc && producer(v, dqc.inputs[0], 'QuantizeLinear');
      const layer = qc && v.producer(qc.inputs[0]);
      if (!dqc || !qc || !layer || layer.domain !== KILN_DOMAIN || layer.opType !== 'QConv' || layer.outputs.length !== 1 || layer.inputs[3]) continue;
      if (attrOf(layer, 'y_dtype', '') || attrOf(layer, 'activation', '') || v.dtype(qc.inputs[0]) !== 'float32') continue;
      if (![layer.outputs[0], qc.outputs[0], dqc.outputs[0]].every((x) => v.singleUse(x) && !v.isGraphOutput(x))) continue;
      const c = quantizeParams(v, qc), back = perTensor(v, dqc), r = quantizedInput(v, add.inputs[1 - side]);
      if (!c || c.dtype === FP8 || !back || back.scale !== c.scale || back.zeroPoint !== c.zeroPoint || !r || !(c.scale > 0)) continue;
      // no broadcasting: the residual is the output's shape
      const ys = v.shape(add.inputs[side]), rs = v.shape(add.inputs[1 - side]);
      if (!ys || !rs || ys.length !== rs.length || ys.some((d, i) => d === undefined || d !== rs[i])) continue;
      layer.inputs = [layer.inputs[0], layer.inputs[1], layer.inputs[2] ?? '', r.q];
      layer.attrs = {
        ...layer.attrs, r_scale: float(r.scale), r_zero_point: int(r.zeroPoint), c_dtype: str(c.dtype), c_scale: float(c.scale), c_zero_point: int(c.zeroPoint),
      };
      layer.outputs = [add.outputs[0]];
      // the layer now runs where the Add did: after the residual's producer
      v.removeNodes([layer, qc, dqc]);
      v.insertNode(layer, add);
      v.removeNodes([add]);
      n++;
      break;
    }
  }
  return n;
}

/** QuantizeLinear (per tensor, int8/uint8) as the only reader of a float-output quantized layer -> the layer requantizes. */
export function requantizeOutputs(v: GraphView): number {
  let n = 0;
  for (const ql of v.graph.nodes.filter((x) => x.opType === 'QuantizeLinear' && x.domain === '')) {
    const layer = v.producer(ql.inputs[0]);
    if (!isQuantizedLayer(layer) || attrOf(layer, 'y_dtype', '') || !v.singleUse(ql.inputs[0])) continue;
    const p = quantizeParams(v, ql);
    if (!p) continue;
    layer.attrs = { ...layer.attrs, y_dtype: str(p.dtype), y_scale: float(p.scale), y_zero_point: int(p.zeroPoint) };
    layer.outputs = [ql.outputs[0]];
    v.removeNodes([ql]);
    n++;
  }
  if (n) v.reindex();
  return n;
}

// **** fp8 (float8e4m3fn): the same fold for Conv/MatMul/Gemm, kept apart from the int8 one above. Activations are
// per-tensor fp8 (zero point 0), weights constant fp8 with one scale or one per output channel (Conv: axis 0; MatMul:
// the output column); the layer becomes a kiln:QConv / kiln:QMatMul whose operands are fp8 (the GPU runs them on fp8
// tensor cores, the CPU on the reference kernel). Folding Conv matters for exactness, not only speed: left unfolded,
// fp8 Q/DQ around a float convolution flips whole fp8 steps wherever two engines sum in different orders.
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
  if (!q || q.dtype !== FP8 || (q.rank !== 2 && q.rank !== 4) || !s || s.dtype !== 'float32' || (dq.inputs[2] && !z) || (z && z.toFloat64().some((x) => x !== 0))) return undefined;
  if (s.size !== 1 && (s.rank !== 1 || s.size !== q.dims[axis] || ((a) => (a < 0 ? a + q.rank : a))(attrOf(dq, 'axis', 1)) !== axis)) return undefined;
  return { q: dq.inputs[0], scales: Array.from(s.toFloat64()) };
}

/** Conv/MatMul/Gemm on fp8-dequantized operands -> kiln:QConv / kiln:QMatMul with fp8 inputs. */
export function foldFp8Layers(v: GraphView): number {
  let n = 0;
  for (const node of [...v.graph.nodes]) {
    if (node.domain !== '' || !['Conv', 'MatMul', 'Gemm'].includes(node.opType) || attrOf(node, 'transA', 0)) continue;
    const conv = node.opType === 'Conv', gemm = node.opType === 'Gemm', transB = attrOf(node, 'transB', 0);
    const x = fp8Input(v, node.inputs[0]);
    const w = x && fp8Weight(v, node.inputs[1], conv || transB ? 0 : 1);
    let bias = w ? floatBias(v, node.inputs[2]) : null;
    const rank = w && v.constant(w.q)!.rank;
    if (!x || !w || bias === null || rank !== (conv ? 4 : 2) || (gemm && bias && attrOf(node, 'beta', 1) !== 1)) continue;
    const alpha = attrOf(node, 'alpha', 1);
    const attrs: Record<string, AttrValue> = {
      ...(conv ? node.attrs : gemm ? { transB: int(transB), gemm: int(1) } : {}),
      x_scale: float(x.scale), x_zero_point: int(0), w_scales: floats(w.scales.map((s) => Math.fround(s * alpha))),
    };
    bias ??= undefined;
    const q: Node = { name: node.name, opType: conv ? 'QConv' : 'QMatMul', domain: KILN_DOMAIN, inputs: [x.q, w.q, ...(bias ? [bias] : [])], outputs: [...node.outputs], attrs };
    v.insertNode(q, node);
    v.removeNodes([node, v.producer(node.inputs[1])!]);
    if (conv) absorbBatchNorm(v, q);
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

/**
 * Per-tensor QuantizeLinear/DequantizeLinear reading a Transpose's output -> the same node before the Transpose.
 * Both are elementwise, so they commute with any permutation; after the layout pass this moves the quantization of a
 * residual block's output (an NCHW value between two NHWC layers) inside the NHWC region, where the Transpose pairs
 * around it cancel instead of permuting full-size float tensors twice per block.
 */
export function quantizeBeforeTranspose(v: GraphView): number {
  let n = 0;
  for (const q of [...v.graph.nodes]) {
    if (q.domain !== '' || (q.opType !== 'QuantizeLinear' && q.opType !== 'DequantizeLinear') || q.outputs.length !== 1) continue;
    const t = v.producer(q.inputs[0]);
    if (!t || t.opType !== 'Transpose' || t.domain !== '' || !perTensor(v, q) || v.isGraphOutput(q.outputs[0])) continue;
    const inner = v.fresh(`${q.outputs[0]}_pre`);
    const moved: Node = { ...q, inputs: [t.inputs[0], ...q.inputs.slice(1)], outputs: [inner] };
    v.insertNode(moved, q);
    v.insertNode({ ...t, name: v.fresh(`${t.name}_after_${q.opType}`), inputs: [inner], outputs: [...q.outputs] }, q);
    v.removeNodes([q]);
    n++;
  }
  if (n) v.reindex();
  return n;
}

/**
 * Per-tensor int8/uint8 QuantizeLinear whose input is a MaxPool's only use -> the QuantizeLinear before the MaxPool,
 * which then pools the stored integers. Quantization (scale > 0, round half to even, saturate) never reverses an order,
 * so the maximum of the quantized taps is the quantized maximum: the result is the same bytes. After the layout pass
 * this lets ResNet's stem write int8 from its epilogue and the pool and its two layout Transposes move a quarter of
 * the bytes of float32 (half of fp16), with no standalone QuantizeLinear after the pool.
 */
export function quantizeBeforeMaxPool(v: GraphView): number {
  let n = 0;
  for (const q of [...v.graph.nodes]) {
    if (q.domain !== '' || q.opType !== 'QuantizeLinear' || q.outputs.length !== 1) continue;
    const p = v.producer(q.inputs[0]);
    if (!p || !((p.opType === 'MaxPool' && p.domain === '') || (p.opType === 'MaxPoolNHWC' && p.domain === KILN_DOMAIN)) || p.outputs.slice(1).some(Boolean) || v.isGraphOutput(p.outputs[0])) continue;
    const s = quantizeParams(v, q);
    if (!s || !(s.scale > 0) || v.consumers(p.outputs[0]).length !== 1) continue;
    const inner = v.fresh(`${q.outputs[0]}_pre`);
    v.insertNode({ ...q, inputs: [p.inputs[0], ...q.inputs.slice(1)], outputs: [inner] }, p);
    v.insertNode({ ...p, name: v.fresh(`${p.name}_quantized`), inputs: [inner], outputs: [...q.outputs] }, q);
    v.removeNodes([p, q]);
    n++;
  }
  if (n) v.reindex();
  return n;
}

/**
 * Quantized MatMuls reading one quantized activation with the same quantization (BERT's Q, K and V projections) ->
 * one kiln:QMatMul over the concatenated weights, scales and biases, then a kiln:Split: one GEMM three times as wide
 * fills the GPU where three narrow ones each leave it partly idle. Layers that requantize, take a residual or an
 * activation are left alone (their epilogues differ); so is a weight stored transposed.
 */
export function mergeParallelQMatMuls(v: GraphView): number {
  let n = 0;
  const groups = new Map<string, Node[]>();
  for (const m of v.graph.nodes) {
    if (m.domain !== KILN_DOMAIN || m.opType !== 'QMatMul' || attrOf(m, 'transB', 0) || attrOf(m, 'y_dtype', '') || m.inputs[3] || attrOf(m, 'activation', '')) continue;
    const w = v.constant(m.inputs[1]);
    if (!w || w.rank !== 2 || (m.inputs[2] && !v.constant(m.inputs[2]))) continue;
    const key = `${m.inputs[0]}|${w.dims[0]}|${w.dtype}|${attrOf(m, 'x_scale', 1)}|${attrOf(m, 'x_zero_point', 0)}|${m.inputs[2] ? 'b' : ''}`;
    groups.set(key, [...(groups.get(key) ?? []), m]);
  }
  for (const ms of groups.values()) {
    if (ms.length < 2) continue;
    const ws = ms.map((m) => v.constant(m.inputs[1])!);
    const K = ws[0].dims[0], Ns = ws.map((w) => w.dims[1]), total = Ns.reduce((a, b) => a + b, 0);
    // weights move as stored values (int8, or fp8 bit patterns), row by row
    const bytes = ws.map((w) => { const d = w.data as Int8Array | Uint8Array; return new Uint8Array(d.buffer, d.byteOffset, d.byteLength); });
    if (bytes.some((b, j) => b.length !== K * Ns[j])) continue;
    const W = new Uint8Array(K * total);
    let off = 0;
    bytes.forEach((b, j) => {
      for (let k = 0; k < K; k++) W.set(b.subarray(k * Ns[j], (k + 1) * Ns[j]), k * total + off);
      off += Ns[j];
    });
    const data = ws[0].dtype === 'int8' ? new Int8Array(W.buffer) : W;
    const scales = ms.flatMap((m, j) => { const s = attrOf<number[]>(m, 'w_scales', []); return s.length === 1 ? Array(Ns[j]).fill(s[0]) : s; });
    if (scales.length !== total) continue;
    const first = v.graph.nodes.find((x) => ms.includes(x))!;
    const inputs = [ms[0].inputs[0], v.addConstant(`${first.name}.qkv_weight`, new TensorData(ws[0].dtype, [K, total], data as never))];
    if (ms[0].inputs[2]) {
      const bs = ms.map((m) => v.constant(m.inputs[2])!.toFloat64());
      if (bs.some((b, j) => b.length !== Ns[j])) continue;
      inputs.push(v.addConstant(`${first.name}.qkv_bias`, TensorData.fromNumbers('float32', [total], bs.flatMap((b) => Array.from(b)))));
    }
    const merged = v.fresh(`${first.name}.qkv`);
    v.insertNode({ name: v.fresh(`${first.name}.qkv`), opType: 'QMatMul', domain: KILN_DOMAIN, inputs, outputs: [merged], attrs: { ...first.attrs, w_scales: floats(scales) } }, first);
    v.insertNode({
      name: v.fresh(`${first.name}.split`), opType: 'Split', domain: KILN_DOMAIN, outputs: ms.map((m) => m.outputs[0]), attrs: { axis: int(-1) },
      inputs: [merged, v.addConstant(`${first.name}.qkv_split`, TensorData.fromBigInts('int64', [Ns.length], Ns.map(BigInt)))],
    }, first);
    v.removeNodes(ms);
    n++;
  }
  return n;
}

/**
 * Each per-tensor saturating QuantizeLinear whose producer \`accepts\` -> that producer's second output (y2_*
 * attributes, the first output as stored, quantized): the producer writes the value and its quantized copy in one
 * pass instead of a separate QuantizeLinear re-reading it. \`adopt\` turns the producer into the op that does so.
 */
function quantizeAsSecondOutput(v: GraphView, accepts: (p: Node) => boolean, fp8: boolean, adopt?: (p: Node) => void): number {
  let n = 0;
  for (const ql of v.graph.nodes.filter((x) => x.opType === 'QuantizeLinear' && x.domain === '')) {
    const p = v.producer(ql.inputs[0]);
    if (!p || !accepts(p)) continue;
    const q = quantizeParams(v, ql, fp8);
    if (!q || v.isGraphOutput(ql.outputs[0])) continue;
    adopt?.(p);
    p.attrs = { ...p.attrs, y2_dtype: str(q.dtype), y2_scale: float(q.scale), y2_zero_point: int(q.dtype === FP8 ? 0 : q.zeroPoint) };
    p.outputs = [p.outputs[0], ql.outputs[0]];
    v.removeNodes([ql]);
    n++;
  }
  if (n) v.reindex();
  return n;
}

/**
 * QuantizeLinear (per tensor, saturating) of a float-output QConv whose output other layers read too (a residual
 * block's output: the next block's residual input and, quantized, its convolutions' input) -> the QConv's second
 * output (see quantizeAsSecondOutput). Runs after the layout stages (the GPU's NHWC build), where the QuantizeLinear
 * sits right after the layer; the result is the unfused graph's.
 */
export function quantizeInEpilogue(v: GraphView): number {
  return quantizeAsSecondOutput(v, (p) => p.domain === KILN_DOMAIN && p.opType === 'QConv' && p.outputs.length === 1 && !attrOf(p, 'y_dtype', ''), true);
}

/**
 * QuantizeLinear (per tensor, int8/uint8, saturating) reading a LayerNormalization's output -> kiln:QLayerNormalization
 * with the quantized copy as its second output (see quantizeAsSecondOutput; BERT: each block's two LayerNorms feed a
 * residual and, quantized, the next GEMMs). Runs with the layout stages (GPU builds); the CPU keeps the pair, which
 * its own kernels run natively.
 */
export function quantizeLayerNormOutputs(v: GraphView): number {
  return quantizeAsSecondOutput(v, (ln) => ln.opType === 'LayerNormalization' && (ln.domain === '' || ln.domain === KILN_DOMAIN) && !ln.outputs.slice(1).some(Boolean),
    false, (ln) => {
      ln.opType = 'QLayerNormalization';
      ln.domain = KILN_DOMAIN;
    });
}

/**
 * A merged Q/K/V kiln:QMatMul (float output, X [B, S, K]) read only by a Split along N into equal parts, each part
 * Reshaped to [B, S, H, D] and Transposed to [B, H, S, D] (perm 0,2,1,3), or to [B, H, D, S] (perm 0,2,3,1) when that
 * is the K operand of a kiln:Attention with k_transposed (which then reads [B, H, S, D] with k_transposed 0) ->
 * the QMatMul with `heads` = H and one output per part: its epilogue writes each part where attention reads it, in
 * place of the Split's and the Transposes' copies. Runs with the layout stages (GPU builds).
 */
export function splitHeadsInQMatMul(v: GraphView): number {
  let n = 0;
  const dims = (name: string) => { const t = v.type(name); return t?.kind === 'tensor' && t.shape?.every((d) => typeof d === 'number') ? t.shape as number[] : undefined; };
  for (const m of [...v.graph.nodes]) {
    if (m.domain !== KILN_DOMAIN || m.opType !== 'QMatMul' || m.outputs.length !== 1 || attrOf(m, 'heads', 0) || attrOf(m, 'y_dtype', '') || m.inputs[3]) continue;
    const x = dims(m.inputs[0]), w = v.constant(m.inputs[1]);
    const split = v.singleUse(m.outputs[0]) && !v.isGraphOutput(m.outputs[0]) ? v.consumers(m.outputs[0])[0] : undefined;
    if (!x || !w || w.rank !== 2 || x.length !== 3 || !split || split.opType !== 'Split' || split.inputs[0] !== m.outputs[0]) continue;
    const axis = attrOf<number>(split, 'axis', 0), parts = split.outputs.length, N = w.dims[attrOf(m, 'transB', 0) ? 0 : 1];
    if ((axis !== -1 && axis !== 2) || parts < 2 || parts > 3 || N % parts !== 0) continue;
    const sizes = split.inputs[1] ? v.constant(split.inputs[1])?.toFloat64() : undefined;
    if (split.inputs[1] && (!sizes || sizes.some((s) => s !== N / parts))) continue;
    // each part: Reshape [B, S, H, D] -> Transpose, read by nothing else
    const chains = split.outputs.map((o) => {
      const r = o && v.singleUse(o) && !v.isGraphOutput(o) ? v.consumers(o)[0] : undefined;
      const rd = r && r.opType === 'Reshape' && r.domain === '' && r.inputs[0] === o ? dims(r.outputs[0]) : undefined;
      const t = rd && v.singleUse(r!.outputs[0]) && !v.isGraphOutput(r!.outputs[0]) ? v.consumers(r!.outputs[0])[0] : undefined;
      if (!rd || !t || t.opType !== 'Transpose' || t.domain !== '' || rd.length !== 4 || rd[0] !== x[0] || rd[1] !== x[1] || rd[2] * rd[3] !== N / parts) return undefined;
      const perm = attrOf<number[]>(t, 'perm', []).join(',');
      const reader = v.singleUse(t.outputs[0]) && !v.isGraphOutput(t.outputs[0]) ? v.consumers(t.outputs[0])[0] : undefined;
      const kOperand = perm === '0,2,3,1' && reader?.domain === KILN_DOMAIN && reader.opType === 'Attention' && reader.inputs[1] === t.outputs[0] && reader.inputs[0] !== t.outputs[0] && reader.inputs[2] !== t.outputs[0] && attrOf<number>(reader, 'k_transposed', 0) === 1;
      return perm === '0,2,1,3' || kOperand ? { r: r!, t, H: rd[2], attention: kOperand ? reader! : undefined } : undefined;
    });
    if (chains.some((c) => !c) || chains.some((c) => c!.H !== chains[0]!.H)) continue;
    m.attrs = { ...m.attrs, heads: int(chains[0]!.H) };
    m.outputs = chains.map((c) => c!.t.outputs[0]);
    for (const c of chains) if (c!.attention) c!.attention.attrs = { ...c!.attention.attrs, k_transposed: int(0) };
    v.removeNodes([split, ...chains.flatMap((c) => [c!.r, c!.t])]);
    n++;
  }
  if (n) v.reindex();
  return n;
}

/**
 * QuantizeLinear (per tensor, int8/uint8, saturating) next to a Transpose that keeps the innermost axis in place ->
 * kiln:QTranspose, quantizing as it permutes: one pass over the float tensor instead of two. Either order: Transpose
 * [-> Reshape] -> QuantizeLinear (BERT: attention's output back to [B, S, H * D] for the output projection; the Reshape
 * then moves to the 8-bit tensor), or QuantizeLinear -> Transpose (where 'quantize before max pools and transposes' put
 * it). Perms that move the innermost axis are left alone, element-wise their reads would not coalesce (the plain
 * Transpose kernel tiles through shared memory), except NCHW -> NHWC of at most 4 channels (ResNet's input). Runs with
 * the layout stages (GPU builds).
 */
export function quantizeTransposes(v: GraphView): number {
  let n = 0;
  const only = (name: string) => (v.singleUse(name) && !v.isGraphOutput(name) ? v.consumers(name)[0] : undefined);
  const innerKept = (t: Node) => { const p = attrOf<number[]>(t, 'perm', []); return p.length > 0 && p[p.length - 1] === p.length - 1; };
  // NCHW -> NHWC of an image with a few channels (a network's input before an NHWC stem): the output rows are so short
  // that the element-wise gather still reads runs of consecutive pixels, and one pass replaces a quantize plus a
  // byte transpose with three-byte rows
  const fewChannels = (t: Node) => { const c = v.shape(t.inputs[0])?.[1]; return attrOf<number[]>(t, 'perm', []).join() === '0,2,3,1' && typeof c === 'number' && c <= 4; };
  for (const ql of v.graph.nodes.filter((x) => x.opType === 'QuantizeLinear' && x.domain === '')) {
    const r = v.producer(ql.inputs[0]);
    const reshape = r && r.opType === 'Reshape' && r.domain === '' && only(r.outputs[0]) === ql ? r : undefined;
    const before = v.producer(reshape ? reshape.inputs[0] : ql.inputs[0]);
    const after = only(ql.outputs[0]);
    const t = before && before.opType === 'Transpose' && before.domain === '' && only(before.outputs[0]) === (reshape ?? ql) ? before
      : after && after.opType === 'Transpose' && after.domain === '' ? after : undefined;
    if (!t || !(innerKept(t) || fewChannels(t))) continue;
    const p = quantizeParams(v, ql);
    if (!p || v.isGraphOutput(ql.outputs[0])) continue;
    const attrs = { ...t.attrs, y_dtype: str(p.dtype), y_scale: float(p.scale), y_zero_point: int(p.zeroPoint) };
    if (t === after) {
      v.insertNode({ name: t.name, opType: 'QTranspose', domain: KILN_DOMAIN, inputs: [ql.inputs[0]], outputs: [...t.outputs], attrs }, ql);
      v.removeNodes([ql, t]);
    } else {
      const q = reshape ? v.fresh(`${t.outputs[0]}_q`) : ql.outputs[0];
      v.insertNode({ name: t.name, opType: 'QTranspose', domain: KILN_DOMAIN, inputs: [t.inputs[0]], outputs: [q], attrs }, t);
      if (reshape) v.insertNode({ ...reshape, inputs: [q, ...reshape.inputs.slice(1)], outputs: [ql.outputs[0]] }, ql);
      v.removeNodes([t, ql, ...(reshape ? [reshape] : [])]);
    }
    n++;
  }
  if (n) v.reindex();
  return n;
}

/**
 * kiln:Attention read only by a kiln:QTranspose (BERT: the attention output back to [B, S, H, D], quantized for the
 * output projection) -> kiln:QAttention: the attention kernel stores its output transposed and quantized, one kernel
 * and one float round trip fewer per layer. The result is the pair's (the output rounded to its float type first).
 * Runs after 'quantize in transposes' (GPU builds).
 */
export function quantizeAttentionOutputs(v: GraphView): number {
  let n = 0;
  for (const t of v.graph.nodes.filter((x) => x.domain === KILN_DOMAIN && x.opType === 'QTranspose')) {
    const a = v.producer(t.inputs[0]);
    if (!a || a.domain !== KILN_DOMAIN || a.opType !== 'Attention' || a.outputs.length !== 1 || !v.singleUse(a.outputs[0]) || v.isGraphOutput(a.outputs[0])) continue;
    const rank = v.shape(a.outputs[0])?.length;
    const perm = attrOf<number[]>(t, 'perm', []);
    const full = perm.length ? perm : rank !== undefined ? Array.from({ length: rank }, (_, i) => rank - 1 - i) : undefined;
    if (!full || (rank !== undefined && full.length !== rank)) continue;
    v.insertNode({
      name: a.name, opType: 'QAttention', domain: KILN_DOMAIN, inputs: [...a.inputs], outputs: [...t.outputs],
      attrs: { ...a.attrs, perm: { type: 'ints', value: full }, y_dtype: t.attrs.y_dtype ?? str('int8'), y_scale: t.attrs.y_scale ?? float(1), y_zero_point: t.attrs.y_zero_point ?? int(0) },
    }, t);
    v.removeNodes([a, t]);
    n++;
  }
  if (n) v.reindex();
  return n;
}
