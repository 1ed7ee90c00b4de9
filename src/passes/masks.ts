// Boolean masks as numbers. Transformers exported from PyTorch build their attention masks in bool: the integer
// mask is cast to bool, reshaped or gathered, combined with And, and a Where turns it into the additive bias. Native
// backends keep every layer in one element type family (the CPU runner's buffers are float32), so those few bool
// layers ran on the reference kernels and split an otherwise native run (no replay on the CPU). Here each bool
// tensor of such a region gets a float twin holding 0 or 1: Cast(int -> bool) becomes Cast(int -> float) then
// "|x| > 0", And/Or/Xor/Not become Mul/Max/|a - b|/1 - a, data movement runs on the twin, and each Where becomes
// the elementwise "c > 0 ? a : b". Every value the graph computes is unchanged; later stages fuse the arithmetic.
import type { Node, ValueType } from '../ir/graph.js';
import { TensorData } from '../ir/tensor.js';
import { dtypeFromOnnx, onnxTypeCode, type DType } from '../ir/dtype.js';
import { KILN_DOMAIN } from '../ops/fused.js';
import type { GraphView } from './view.js';

/** Ops that only move or combine bool elements: input indices that carry bool data (the rest are shapes/indices). */
const MOVES: Record<string, number[] | 'all'> = {
  Reshape: [0], Flatten: [0], Squeeze: [0], Unsqueeze: [0], Expand: [0], Identity: [0], Transpose: [0], Gather: [0], Slice: [0],
  Concat: 'all',
};
const LOGIC = new Set(['And', 'Or', 'Xor', 'Not']);
const FLOATS = new Set<DType>(['float32', 'float16', 'bfloat16', 'float64']);
const INTEGERS = new Set<DType>(['int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64']);

/** The inputs of a region op that carry bool data, or undefined for an op outside the region's vocabulary. */
const dataInputs = (n: Node): number[] | undefined => {
  if (n.domain !== '') return undefined;
  if (LOGIC.has(n.opType) || MOVES[n.opType] === 'all' || (n.opType === 'Cast' && castTo(n) === 'bool')) return n.inputs.map((_, i) => i);
  return MOVES[n.opType] as number[] | undefined;
};
const castTo = (n: Node): DType | undefined => (n.opType === 'Cast' && n.domain === '' ? dtypeFromOnnx(n.attrs.to?.value as number) : undefined);
/** A Cast of integer data to bool: a leaf of a mask region. */
const isIntToBool = (v: GraphView, n: Node) => castTo(n) === 'bool' && INTEGERS.has(v.dtype(n.inputs[0]) as DType);

/**
 * The bool region behind a Where's condition: its bool values (each produced by a leaf or a region op, read only by
 * region ops, Wheres as their condition, or Casts to a float) and the Wheres that read them, all of one float type.
 * Undefined where any part of it is something else (a comparison, a bool graph output, a bool fed to an op that
 * reads bool otherwise): the region is left as it is.
 */
function maskRegion(v: GraphView, start: string): { values: Set<string>; nodes: Set<Node>; readers: Set<Node>; dtype: DType } | undefined {
  const values = new Set<string>(), nodes = new Set<Node>(), readers = new Set<Node>();
  let dtype: DType | undefined;
  const todo = [start];
  while (todo.length) {
    const name = todo.pop()!;
    if (values.has(name)) continue;
    if (v.dtype(name) !== 'bool' || v.isGraphOutput(name)) return undefined;
    values.add(name);
    const p = v.producer(name);
    if (p) {
      if (p.domain !== '' || p.outputs.filter(Boolean).length !== 1) return undefined;
      const data = dataInputs(p);
      if (isIntToBool(v, p)) nodes.add(p);
      else if (data && (p.opType !== 'Cast' || v.dtype(p.inputs[0]) === 'bool')) {
        nodes.add(p);
        for (const i of data) if (p.inputs[i]) todo.push(p.inputs[i]);
      } else return undefined;
    } else if (!v.constant(name) && !v.graph.inputs.some((i) => i.name === name)) return undefined;
    for (const r of v.consumers(name)) {
      if (r.domain !== '') return undefined;
      const to = castTo(r);
      if (r.opType === 'Where') {
        const t = v.dtype(r.outputs[0]);
        if (r.inputs[0] !== name || r.inputs[1] === name || r.inputs[2] === name || !t || !FLOATS.has(t) || (dtype && dtype !== t)) return undefined;
        dtype = t;
        readers.add(r);
      } else if (to && to !== 'bool') {
        if (!FLOATS.has(to)) return undefined;
        readers.add(r);
      } else {
        // a region op, reading the bool as data (not as a shape or index input)
        const data = dataInputs(r);
        if (!data || r.inputs.some((x, i) => x === name && !data.includes(i))) return undefined;
        for (const o of r.outputs) if (o) todo.push(o);
      }
    }
  }
  return dtype ? { values, nodes, readers, dtype } : undefined;
}

/** The float twin's type: the bool value's shape, the twin's element type. */
const floatType = (v: GraphView, name: string, dtype: DType): ValueType => ({ kind: 'tensor', dtype, shape: v.shape(name) });

/** Rewrites every Where whose condition comes from a bool mask region (see the file comment). */
export function boolMasksAsNumbers(v: GraphView): number {
  let n = 0;
  for (const where of v.graph.nodes.filter((x) => x.opType === 'Where' && x.domain === '')) {
    if (!v.graph.nodes.includes(where)) continue;
    const region = maskRegion(v, where.inputs[0]);
    if (!region) continue;
    const { values, nodes, readers, dtype } = region;
    const code = onnxTypeCode(dtype);
    const twin = new Map<string, string>();
    for (const name of values) {
      const c = v.constant(name);
      if (c) {
        twin.set(name, v.addConstant(`${name}_f`, TensorData.fromNumbers(dtype, c.dims, c.toNumberArray())));
        continue;
      }
      const t = v.fresh(`${name}_f`);
      v.graph.valueInfo.set(t, floatType(v, name, dtype));
      twin.set(name, t);
    }
    const tw = (name: string) => (values.has(name) ? twin.get(name)! : name);
    const one = () => v.addConstant('one', TensorData.fromNumbers(dtype, [], [1]));
    const replacement = new Map<Node, Node[]>(), aliases: [string, string][] = [];
    const mk = (like: Node, opType: string, inputs: string[], outputs: string[], attrs: Node['attrs'] = {}, domain = ''): Node =>
      ({ name: v.fresh(like.name || opType), opType, domain, inputs, outputs, attrs });
    const expr = (e: string) => ({ expr: { type: 'string' as const, value: e } });
    for (const p of [...nodes, ...readers]) {
      const out = p.outputs[0], y = tw(out);
      let rep: Node[];
      if (p.opType === 'Where') rep = [mk(p, 'Elementwise', [tw(p.inputs[0]), p.inputs[1], p.inputs[2]], [out], expr('(where_pos $0 $1 $2)'), KILN_DOMAIN)];
      else if (readers.has(p)) { // a Cast of the mask to a float: the twin itself where that is its type
        if (castTo(p) === dtype) aliases.push([out, tw(p.inputs[0])]);
        rep = castTo(p) === dtype ? [] : [mk(p, 'Cast', [tw(p.inputs[0])], [out], p.attrs)];
      }
      else if (isIntToBool(v, p)) {
        const f = v.fresh(`${out}_n`);
        v.graph.valueInfo.set(f, floatType(v, out, dtype));
        rep = [mk(p, 'Cast', [p.inputs[0]], [f], { to: { type: 'int', value: code } }), mk(p, 'Elementwise', [f], [y], expr('(where_pos (abs $0) 1 0)'), KILN_DOMAIN)];
      } else if (p.opType === 'And') rep = [mk(p, 'Mul', [tw(p.inputs[0]), tw(p.inputs[1])], [y])];
      else if (p.opType === 'Or') rep = [mk(p, 'Max', [tw(p.inputs[0]), tw(p.inputs[1])], [y])];
      else if (p.opType === 'Xor') rep = [mk(p, 'Elementwise', [tw(p.inputs[0]), tw(p.inputs[1])], [y], expr('(abs (sub $0 $1))'), KILN_DOMAIN)];
      else if (p.opType === 'Not') rep = [mk(p, 'Sub', [one(), tw(p.inputs[0])], [y])];
      else if (p.opType === 'Cast') rep = [mk(p, 'Identity', [tw(p.inputs[0])], [y])]; // bool -> bool (a view)
      else rep = [mk(p, p.opType, p.inputs.map(tw), [y], p.attrs)]; // data movement on the twin
      replacement.set(p, rep);
    }
    v.graph.nodes = v.graph.nodes.flatMap((x) => replacement.get(x) ?? [x]);
    // bool graph inputs the region reads become float through one Cast each, ahead of every node
    const inputs = [...values].filter((x) => v.graph.inputs.some((i) => i.name === x));
    v.graph.nodes.unshift(...inputs.map((x) => mk(where, 'Cast', [x], [twin.get(x)!], { to: { type: 'int', value: code } })));
    v.reindex();
    for (const [from, to] of aliases) v.replaceUses(from, to);
    n += readers.size;
  }
  return n;
}
