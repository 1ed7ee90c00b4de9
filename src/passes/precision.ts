// Precision assignment for fp16/bf16 builds. Compute-heavy and elementwise layers run in the reduced type;
// numerically sensitive ops (softmax, normalizations, reductions, exp/log/pow, anything with a dtype attribute)
// stay in fp32, as do layers the user pins. Weights are converted once; Casts are inserted where a value crosses
// between precisions; graph inputs and outputs keep their declared types.
import type { Graph, Node } from '../ir/graph.js';
import type { DType } from '../ir/dtype.js';
import { onnxTypeCode } from '../ir/dtype.js';
import { TensorData } from '../ir/tensor.js';
import { topoSort } from '../ops/execute.js';
import { KILN_DOMAIN } from '../ops/fused.js';
import { KilnError } from '../ir/errors.js';

export type Precision = 'fp32' | 'tf32' | 'fp16' | 'bf16' | 'strongly-typed';
export type LayerPrecision = 'fp32' | 'fp16' | 'bf16';

/**
 * LayerNormalization with fp32 statistics (stash_type 1, as the kernels compute it) reading and writing fp16, in
 * fp16 builds only and only where its input already is fp16: no cast is added in front, and the two passes that
 * converted a GEMM's fp16 output to fp32 and the norm's output back (BERT: 50 of them) go. Scale and bias stay fp32.
 */
const NORMS = ['LayerNormalization', 'kiln:LayerNormalization', 'kiln:QLayerNormalization'];

/** Ops that may run in fp16/bf16 (their float inputs and outputs all switch type together). */
const REDUCED_OK = new Set([
  'kiln:FusedConv', 'kiln:MaxPoolNHWC', 'kiln:FusedMatMul', 'kiln:Attention', 'kiln:Elementwise', 'kiln:Gelu', 'kiln:Split',
  'Conv', 'ConvTranspose', 'MatMul', 'Gemm', 'Add', 'Sub', 'Mul', 'Div', 'Relu', 'LeakyRelu', 'Sigmoid', 'Tanh', 'Clip',
  'HardSigmoid', 'HardSwish', 'Neg', 'Abs', 'Max', 'Min', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'GlobalMaxPool',
  'Concat', 'Reshape', 'Transpose', 'Flatten', 'Squeeze', 'Unsqueeze', 'Slice', 'Gather', 'Split', 'Pad', 'Identity',
  'Expand', 'Tile', 'Where', 'DepthToSpace', 'SpaceToDepth', 'Gelu',
  // quantized layers (fp16 builds only, see FP16_ONLY): 8-bit operands either way; reduced here means fp16 bias,
  // residual and float output, so the float tensors between quantized layers (residual streams) are half the bytes
  'kiln:QConv', 'kiln:QMatMul', 'QuantizeLinear', 'kiln:QTranspose', 'kiln:QAttention', ...NORMS,
]);
/** Reduced only to fp16 (the quantized kernels read and write fp16 beside float32; a bf16 build keeps them fp32). */
const FP16_ONLY = new Set(['kiln:QConv', 'kiln:QMatMul', 'QuantizeLinear', 'kiln:QTranspose', 'kiln:QAttention', ...NORMS]);

const key = (n: Node) => (n.domain === KILN_DOMAIN ? `kiln:${n.opType}` : n.opType);

/** Inputs that stay fp32 even when their layer runs reduced (attention masks hold -1e4..-3.4e38 fill values; a
 * quantization scale is exact in fp32 only). */
const FP32_INPUTS: Record<string, number[]> = { 'kiln:Attention': [3], 'kiln:QAttention': [3], QuantizeLinear: [1], ...Object.fromEntries(NORMS.map((k) => [k, [1, 2]])) };

/** Largest finite value of each reduced type: layers whose constants exceed it stay fp32. */
const RANGE: Record<string, number> = { float16: 65504, bfloat16: 3.39e38 };

function constantsFit(g: Graph, n: Node, dtype: DType): boolean {
  const max = RANGE[dtype] ?? Infinity;
  if (n.domain === KILN_DOMAIN && n.opType === 'Elementwise') {
    const lits = String(n.attrs.expr?.value ?? '').match(/(?<![$\w])-?\d[\d.]*(e[+-]?\d+)?/gi) ?? [];
    if (lits.some((l) => Math.abs(Number(l)) > max)) return false;
  }
  for (const i of n.inputs) {
    const c = i ? g.initializers.get(i) : undefined;
    if (c && c.dtype === 'float32' && c.size <= 4096 && (c.data as Float32Array).some((v) => Math.abs(v) > max && Number.isFinite(v))) return false;
  }
  return true;
}

export interface PrecisionOptions {
  precision: Precision;
  /** node name or op type -> precision, e.g. { 'encoder.0.ffn': 'fp32', 'Softmax': 'fp16' } */
  layerPrecisions?: Record<string, LayerPrecision>;
  /** The device takes `precision` as a math mode (Backend.fpmath: the CPU's bf16): its kernels round operands inside,
   * the tensors stay fp32, so the graph is left as it is. */
  mathMode?: boolean;
}

/** Parse `--layer-precisions name:fp32,MatMul:fp16`. */
export function parseLayerPrecisions(spec: string | undefined): Record<string, LayerPrecision> {
  const out: Record<string, LayerPrecision> = {};
  for (const part of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = part.lastIndexOf(':');
    const p = part.slice(i + 1);
    if (i <= 0 || !['fp32', 'fp16', 'bf16'].includes(p)) {
      throw new KilnError(`bad --layer-precisions entry '${part}': expected NAME:fp32|fp16|bf16 (NAME is a layer name or an op type)`);
    }
    out[part.slice(0, i)] = p as LayerPrecision;
  }
  return out;
}

/** Assign precisions and rewrite the graph; returns each node's precision by node name. */
export function assignPrecision(g: Graph, opts: PrecisionOptions): Map<Node, LayerPrecision> {
  const result = new Map<Node, LayerPrecision>();
  const order = topoSort(g, () => true);
  if (opts.mathMode) {
    // the graph stays fp32; a node's precision is the type its kernels may multiply in (pins honoured), the
    // backend's tactics decide whether they do
    const reduced = opts.precision as LayerPrecision;
    for (const n of order) result.set(n, opts.layerPrecisions?.[n.name] ?? opts.layerPrecisions?.[n.opType] ?? opts.layerPrecisions?.[key(n)] ?? (REDUCED_OK.has(key(n)) ? reduced : 'fp32'));
    return result;
  }
  const low: DType | undefined = opts.precision === 'fp16' ? 'float16' : opts.precision === 'bf16' ? 'bfloat16' : undefined;
  if (!low) {
    for (const n of order) result.set(n, 'fp32');
    return result;
  }
  const lowName: LayerPrecision = low === 'float16' ? 'fp16' : 'bf16';
  // element types before any change (valueInfo is updated as layers switch precision)
  const original = new Map<string, DType>();
  for (const i of g.inputs) if (i.type.kind === 'tensor') original.set(i.name, i.type.dtype);
  for (const [k, t] of g.valueInfo) if (t.kind === 'tensor') original.set(k, t.dtype);
  for (const [k, c] of g.initializers) original.set(k, c.dtype);
  const typeOf = (name: string): DType | undefined => original.get(name);
  const current = new Map<string, DType>(); // values whose type changed to `low`
  const casts = new Map<string, string>(); // `${value}->${dtype}` -> cast output
  const converted = new Map<string, string>(); // constant name -> converted constant name
  const newNodes: Node[] = [];
  const cast = (value: string, to: DType): string => {
    const k = `${value}->${to}`;
    let out = casts.get(k);
    if (!out) {
      out = `${value}__${to}`;
      casts.set(k, out);
      newNodes.push({ name: `${value}/cast_${to}`, opType: 'Cast', domain: '', inputs: [value], outputs: [out], attrs: { to: { type: 'int', value: onnxTypeCode(to) } } });
      g.valueInfo.set(out, { ...(g.valueInfo.get(value) ?? { kind: 'tensor', dtype: to }), dtype: to } as never);
    }
    return out;
  };
  for (const n of order) {
    const pin = opts.layerPrecisions?.[n.name] ?? opts.layerPrecisions?.[n.opType] ?? opts.layerPrecisions?.[key(n)];
    const want: LayerPrecision = pin ?? (REDUCED_OK.has(key(n)) ? lowName : 'fp32');
    const wantType: DType = want === 'fp32' ? 'float32' : want === 'fp16' ? 'float16' : 'bfloat16';
    const floatIn = n.inputs.map((i) => !!i && (typeOf(i) === 'float32'));
    const keep32 = FP32_INPUTS[key(n)] ?? [];
    // QuantizeLinear reads its input in whichever float type it comes (a cast before it would only cost a pass)
    const asIs = (key(n) === 'QuantizeLinear' || key(n) === 'kiln:QTranspose') && !pin && !current.has(n.inputs[0]);
    // a norm goes reduced only on a reduced input, and not with its Mean / InvStdDev outputs (stash_type's type)
    const normStays = NORMS.includes(key(n)) && !pin && (!current.has(n.inputs[0]) || (key(n) !== 'kiln:QLayerNormalization' && n.outputs.slice(1).some(Boolean)));
    const typeOk = !FP16_ONLY.has(key(n)) || wantType === 'float16';
    const runsLow = want !== 'fp32' && !asIs && !normStays && typeOk && REDUCED_OK.has(key(n)) && floatIn.some(Boolean) && (!!pin || constantsFit(g, n, wantType));
    result.set(n, runsLow ? want : 'fp32');
    n.inputs = n.inputs.map((i, k) => {
      if (!i) return i;
      const cur = current.get(i) ?? typeOf(i);
      const target = runsLow && floatIn[k] && !keep32.includes(k) ? wantType : floatIn[k] ? 'float32' : cur;
      if (!target || cur === target) return i;
      const c = g.initializers.get(i);
      if (c && cur === 'float32') {
        const ck = `${i}->${target}`;
        let name = converted.get(ck);
        if (!name) {
          name = `${i}__${target}`;
          g.initializers.set(name, TensorData.fromNumbers(target, c.dims, c.data as Float32Array));
          converted.set(ck, name);
        }
        return name;
      }
      return cast(i, target);
    });
    if (runsLow) {
      for (const o of n.outputs) {
        if (!o || typeOf(o) !== 'float32') continue;
        current.set(o, wantType);
        const t = g.valueInfo.get(o);
        if (t?.kind === 'tensor') g.valueInfo.set(o, { ...t, dtype: wantType });
      }
    }
  }
  // graph outputs keep their declared types
  for (const o of g.outputs) {
    const cur = current.get(o.name);
    if (!cur || o.type.kind !== 'tensor' || cur === o.type.dtype) continue;
    const producer = g.nodes.find((n) => n.outputs.includes(o.name))!;
    const inner = `${o.name}__${cur}`;
    producer.outputs = producer.outputs.map((x) => (x === o.name ? inner : x));
    for (const n of g.nodes) n.inputs = n.inputs.map((x) => (x === o.name ? inner : x));
    g.valueInfo.set(inner, { ...o.type, dtype: cur });
    newNodes.push({ name: `${o.name}/cast_out`, opType: 'Cast', domain: '', inputs: [inner], outputs: [o.name], attrs: { to: { type: 'int', value: onnxTypeCode(o.type.dtype) } } });
  }
  g.nodes.push(...newNodes);
  // drop fp32 originals no longer read
  const read = new Set(g.nodes.flatMap((n) => n.inputs));
  for (const k of [...g.initializers.keys()]) if (!read.has(k) && !g.outputs.some((o) => o.name === k)) g.initializers.delete(k);
  return result;
}
