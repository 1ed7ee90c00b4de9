// Graph edits for explicit quantization: pick the layers to quantize, raise the opset, and insert
// QuantizeLinear/DequantizeLinear pairs on activations and DequantizeLinear on stored quantized weights.
import type { Graph, Model, Node } from '../ir/graph.js';
import { nodeLabel, outerScopeNames } from '../ir/graph.js';
import { TensorData } from '../ir/tensor.js';
import { InputError, ModelError } from '../ir/errors.js';
import type { QuantDType, QuantizedWeight } from './weights.js';

export interface TargetSelection {
  opTypes: string[];
  nodesToExclude?: string[];
  excludePatterns?: RegExp[];
}

/** A layer to quantize: its activation input (index 0) and its constant float weight (index 1). */
export interface QuantTarget {
  node: Node;
  weightName: string;
  /** Per-channel axis of the weight (Conv: 0, MatMul: last, Gemm: the output axis of B). */
  channelAxis: number;
  /** For 2-D MatMul/Gemm weights, where the reduction (input-channel) axis is; undefined otherwise. */
  kAxis?: 0 | 1;
}

const int = (n: Node, a: string, d: number) => (n.attrs[a]?.type === 'int' ? (n.attrs[a].value as number) : d);

/** The layers of `g` to quantize: op type selected, not excluded, with a constant float32 weight. */
export function selectTargets(g: Graph, sel: TargetSelection): { targets: QuantTarget[]; skipped: { node: string; reason: string }[] } {
  const targets: QuantTarget[] = [];
  const skipped: { node: string; reason: string }[] = [];
  const excluded = new Set(sel.nodesToExclude ?? []);
  const known = new Set(g.nodes.map((n) => n.name));
  for (const name of excluded) {
    if (!known.has(name)) throw new InputError(`--nodes-to-exclude names '${name}', but the model has no node of that name.`, { hint: 'List node names with `kiln inspect model <file>`.' });
  }
  for (const node of g.nodes) {
    // Adds have no weight: selectResidualAdds picks them
    if (!sel.opTypes.includes(node.opType) || node.domain || node.opType === 'Add') continue;
    if (excluded.has(node.name) || sel.excludePatterns?.some((r) => r.test(node.name))) {
      skipped.push({ node: node.name, reason: 'excluded' });
      continue;
    }
    const w = g.initializers.get(node.inputs[1] ?? '');
    if (!w || w.dtype !== 'float32') {
      skipped.push({ node: node.name, reason: 'no constant float32 weight (activation x activation)' });
      continue;
    }
    if (node.opType === 'Gemm' && int(node, 'transA', 0)) {
      skipped.push({ node: node.name, reason: 'Gemm with transA' });
      continue;
    }
    const transB = int(node, 'transB', 0);
    const channelAxis = node.opType === 'Conv' ? 0 : node.opType === 'Gemm' ? (transB ? 0 : 1) : w.rank - 1;
    const kAxis = node.opType === 'Conv' || w.rank !== 2 ? undefined : node.opType === 'Gemm' && transB ? 1 : 0;
    targets.push({ node, weightName: node.inputs[1], channelAxis, kAxis });
  }
  return { targets, skipped };
}

/**
 * The residual Adds to quantize (opType 'Add' selected): Q/DQ on both inputs, TensorRT's placement for a residual Add
 * (what ModelOpt writes; onnxruntime's QDQ Add reads its inputs the same way), so an integer engine can fuse the Add
 * into the layer before it and keep the residual stream 8-bit. Residual: both inputs are activations and one comes from
 * a layer being quantized (`layers`: their nodes), directly or through a bias Add with a constant. Left as they are:
 * Adds with a constant input (biases), and Adds no quantized layer feeds (BERT's embedding sums and attention-mask Adds,
 * whose int8 rounding would only cost accuracy). quantize.ts also skips Adds calibration sees on non-float tensors.
 */
export function selectResidualAdds(g: Graph, sel: TargetSelection, layers: Node[]): { adds: Node[]; skipped: { node: string; reason: string }[] } {
  const adds: Node[] = [], skipped: { node: string; reason: string }[] = [];
  if (!sel.opTypes.includes('Add')) return { adds, skipped };
  const excluded = new Set(sel.nodesToExclude ?? []);
  const constants = new Set([...g.initializers.keys(), ...g.nodes.filter((n) => n.opType === 'Constant' && !n.domain).flatMap((n) => n.outputs)]);
  const producer = new Map(g.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
  const quantized = new Set(layers);
  const fromLayer = (x: string): boolean => {
    const p = producer.get(x);
    if (!p) return false;
    if (quantized.has(p)) return true;
    // a bias Add after the layer (MatMul + Add(bias) exports)
    return p.opType === 'Add' && !p.domain && p.inputs.length === 2 && p.inputs.some((i) => constants.has(i)) && p.inputs.some((i) => !constants.has(i) && fromLayer(i));
  };
  for (const node of g.nodes) {
    if (node.opType !== 'Add' || node.domain) continue;
    if (excluded.has(node.name) || sel.excludePatterns?.some((r) => r.test(node.name))) skipped.push({ node: node.name, reason: 'excluded' });
    else if (node.inputs.length !== 2 || node.inputs.some((i) => !i || constants.has(i))) skipped.push({ node: node.name, reason: 'constant input (bias add)' });
    else if (!node.inputs.some(fromLayer)) skipped.push({ node: node.name, reason: 'not a residual Add (no quantized layer feeds it)' });
    else adds.push(node);
  }
  return { adds, skipped };
}

// Ops whose attributes became inputs between opsets: [op, attribute, first opset taking it as input, input index].
const ATTR_TO_INPUT: [string, string, number, number][] = [
  ['Squeeze', 'axes', 13, 1], ['Unsqueeze', 'axes', 13, 1], ['ReduceSum', 'axes', 13, 1], ['Split', 'split', 13, 1],
  ...['ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare']
    .map((op): [string, string, number, number] => [op, 'axes', 18, 1]),
];

/** Raise the default-domain opset to at least `min`, moving attributes that became inputs; refuses what changed meaning. */
export function raiseOpset(m: Model, min: number): void {
  const from = m.opsets.get('') ?? 1;
  if (from >= min) return;
  const g = m.graph;
  for (const n of g.nodes) {
    if (n.domain) continue;
    if (from < 13 && ['Softmax', 'LogSoftmax', 'Hardmax'].includes(n.opType)) {
      throw new ModelError(`cannot raise the opset from ${from} to ${min}: ${nodeLabel(n)} changed meaning at opset 13.`,
        { hint: 'Re-export the model at opset 13 or later, then quantize it.' });
    }
    for (const [op, attr, since, index] of ATTR_TO_INPUT) {
      if (n.opType !== op || from >= since || min < since || !n.attrs[attr]) continue;
      const values = n.attrs[attr].value as number[];
      const name = `${n.name || n.outputs[0]}.${attr}`;
      g.initializers.set(name, TensorData.fromBigInts('int64', [values.length], values.map(BigInt)));
      while (n.inputs.length < index) n.inputs.push('');
      n.inputs.splice(index, 0, name);
      delete n.attrs[attr];
    }
  }
  m.opsets.set('', min);
  // opset 21 (int4, blocked) needs IR 10; float8 needs IR 9; per-axis Q/DQ is fine with IR 7
  m.irVersion = Math.max(m.irVersion, min >= 21 ? 10 : min >= 19 ? 9 : 7);
}

/** Copy a model deep enough that editing nodes and initializers leaves the original untouched. */
export function cloneModel(m: Model): Model {
  const g = m.graph;
  const graph: Graph = {
    ...g, nodes: g.nodes.map((n) => ({ ...n, inputs: [...n.inputs], outputs: [...n.outputs], attrs: { ...n.attrs } })),
    inputs: [...g.inputs], outputs: [...g.outputs], initializers: new Map(g.initializers), valueInfo: new Map(g.valueInfo),
  };
  return { ...m, opsets: new Map(m.opsets), graph, metadata: { ...m.metadata } };
}

/** Unique value/node names for inserted nodes. */
export class Namer {
  private used = new Set<string>();
  constructor(g: Graph) {
    for (const n of g.nodes) { this.used.add(n.name); n.outputs.forEach((o) => this.used.add(o)); }
    for (const k of g.initializers.keys()) this.used.add(k);
    for (const i of g.inputs) this.used.add(i.name);
  }

  take(base: string): string {
    let name = base, i = 1;
    while (this.used.has(name)) name = `${base}_${i++}`;
    this.used.add(name);
    return name;
  }
}

/** Insert nodes right before `before` in the node list (keeps files readable; execution sorts anyway). */
function insertBefore(g: Graph, before: Node, nodes: Node[]): void {
  const i = g.nodes.indexOf(before);
  g.nodes.splice(i < 0 ? g.nodes.length : i, 0, ...nodes);
}

function zeroPoint(dtype: QuantDType | 'uint8'): TensorData {
  return TensorData.zeros(dtype, []);
}

/** X -> Mul(X, 1/s) feeding input `index` of `node` only (SmoothQuant / AWQ activation side). */
export function insertInputScale(g: Graph, namer: Namer, node: Node, index: number, inv: Float64Array): string {
  const sName = namer.take(`${node.name}.input_scale`);
  g.initializers.set(sName, TensorData.fromNumbers('float32', [inv.length], inv));
  const out = namer.take(`${node.inputs[index]}_scaled_for_${node.name}`);
  insertBefore(g, node, [{ name: namer.take(`${node.name}.smooth`), opType: 'Mul', domain: '', inputs: [node.inputs[index], sName], outputs: [out], attrs: {} }]);
  node.inputs[index] = out;
  return out;
}

/**
 * Q/DQ on an activation: x -> QuantizeLinear -> DequantizeLinear, shared by every quantized consumer of x. `cache` maps
 * a tensor name to its DQ output.
 */
export function insertActivationQdq(g: Graph, namer: Namer, node: Node, index: number, scale: number, dtype: QuantDType | 'uint8', cache: Map<string, string>, zp = 0): void {
  const x = node.inputs[index];
  let dq = cache.get(x);
  if (!dq) {
    const sName = namer.take(`${x}_scale`), zName = namer.take(`${x}_zero_point`);
    g.initializers.set(sName, TensorData.scalar('float32', scale));
    g.initializers.set(zName, zp ? TensorData.scalar(dtype, zp) : zeroPoint(dtype));
    const q = namer.take(`${x}_quantized`);
    dq = namer.take(`${x}_dequantized`);
    insertBefore(g, node, [
      { name: namer.take(`${x}_QuantizeLinear`), opType: 'QuantizeLinear', domain: '', inputs: [x, sName, zName], outputs: [q], attrs: {} },
      { name: namer.take(`${x}_DequantizeLinear`), opType: 'DequantizeLinear', domain: '', inputs: [q, sName, zName], outputs: [dq], attrs: {} },
    ]);
    cache.set(x, dq);
  }
  node.inputs[index] = dq;
}

/** Store a quantized weight and feed `node` through a DequantizeLinear of it. */
export function insertWeightDq(g: Graph, namer: Namer, node: Node, index: number, qw: QuantizedWeight): void {
  const base = node.inputs[index];
  const qName = namer.take(`${base}_quantized`), sName = namer.take(`${base}_scale`), zName = namer.take(`${base}_zero_point`);
  g.initializers.set(qName, qw.q);
  g.initializers.set(sName, qw.scale);
  g.initializers.set(zName, TensorData.zeros(qw.q.dtype, qw.scale.dims));
  const out = namer.take(`${base}_dequantized`);
  const attrs: Node['attrs'] = {};
  if (qw.axis !== undefined) attrs.axis = { type: 'int', value: qw.axis };
  if (qw.blockSize) attrs.block_size = { type: 'int', value: qw.blockSize };
  insertBefore(g, node, [{ name: namer.take(`${base}_DequantizeLinear`), opType: 'DequantizeLinear', domain: '', inputs: [qName, sName, zName], outputs: [out], attrs }]);
  node.inputs[index] = out;
}

/**
 * Conv/Gemm bias as int32 at scale x_scale * w_scale (zero point 0) behind a DequantizeLinear, the form integer runtimes
 * fuse: onnxruntime turns DQ -> Conv -> Q into its integer QLinearConv only when the bias is such an int32 DQ (with a
 * float bias it runs a float convolution on dequantized values, whose float sums round differently from an integer
 * kernel's exact ones), and Kiln's build folds the DQ of a constant like any other constant. Left as it is (float)
 * where it is not a constant 1-D float32 vector of the output channels, or where a value would not fit in int32.
 * Returns whether the bias was quantized.
 */
export function insertBiasDq(g: Graph, namer: Namer, node: Node, index: number, actScale: number, qw: QuantizedWeight): boolean {
  const base = node.inputs[index];
  const b = base ? g.initializers.get(base) : undefined;
  const ws = qw.scale.toFloat64();
  if (!b || b.dtype !== 'float32' || b.rank !== 1 || qw.blockSize || (ws.length !== 1 && ws.length !== b.size)) return false;
  const bv = b.toFloat64();
  const scales = new Float32Array(b.size), q = new Int32Array(b.size);
  for (let c = 0; c < b.size; c++) {
    scales[c] = Math.fround(Math.fround(actScale) * ws[ws.length === 1 ? 0 : c]);
    const v = Math.round(bv[c] / scales[c]);
    if (!(scales[c] > 0) || !Number.isFinite(v) || Math.abs(v) > 2 ** 31 - 1) return false;
    q[c] = v;
  }
  const qName = namer.take(`${base}_quantized`), sName = namer.take(`${base}_scale`), zName = namer.take(`${base}_zero_point`);
  g.initializers.set(qName, TensorData.fromNumbers('int32', [b.size], q));
  g.initializers.set(sName, TensorData.fromNumbers('float32', [b.size], scales));
  g.initializers.set(zName, TensorData.zeros('int32', [b.size]));
  const out = namer.take(`${base}_dequantized`);
  insertBefore(g, node, [{ name: namer.take(`${base}_DequantizeLinear`), opType: 'DequantizeLinear', domain: '', inputs: [qName, sName, zName], outputs: [out], attrs: { axis: { type: 'int', value: 0 } } }]);
  node.inputs[index] = out;
  return true;
}

/** Drop initializers nothing reads any more (the float weights that were replaced). */
export function dropUnusedInitializers(g: Graph): void {
  const used = new Set<string>();
  for (const n of g.nodes) {
    n.inputs.forEach((i) => used.add(i));
    for (const a of Object.values(n.attrs)) {
      const subs = a.type === 'graph' ? [a.value] : a.type === 'graphs' ? a.value : [];
      for (const s of subs) for (const name of outerScopeNames(s)) used.add(name);
    }
  }
  for (const o of g.outputs) used.add(o.name);
  for (const i of g.inputs) used.add(i.name);
  for (const k of [...g.initializers.keys()]) if (!used.has(k)) g.initializers.delete(k);
}
