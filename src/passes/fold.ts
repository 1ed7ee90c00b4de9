// Constant folding: a node whose inputs are all constants is run once by its reference kernel and replaced by its
// outputs. Shape/Size of statically shaped values become constants too, which lets whole Shape -> Gather ->
// Unsqueeze -> Concat -> Reshape chains fold away.
import type { Node } from '../ir/graph.js';
import { TensorData } from '../ir/tensor.js';
import { executeGraph } from '../ops/execute.js';
import { topoSort } from '../ops/execute.js';
import type { GraphView } from './view.js';

const NONDETERMINISTIC = new Set(['RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli']);
/** Folding must not blow a small model up: outputs larger than this (and than the inputs) stay computed. */
const MAX_FOLDED_ELEMENTS = 1 << 20;

function hasSubgraph(n: Node): boolean {
  return Object.values(n.attrs).some((a) => a.type === 'graph' || a.type === 'graphs');
}

/** Run one node on constant inputs with the reference kernels. */
export function evaluateNode(v: GraphView, n: Node): TensorData[] | undefined {
  const g = { name: 'fold', nodes: [n], inputs: [], outputs: n.outputs.filter(Boolean).map((name) => ({ name, type: { kind: 'unknown' as const } })),
    initializers: new Map(n.inputs.filter(Boolean).map((i) => [i, v.constant(i)!])), valueInfo: new Map() };
  const out = executeGraph(g, new Map(), { opsets: v.opsets });
  const r = n.outputs.map((o) => (o ? out.get(o) : undefined));
  return r.every((t) => t === undefined || t instanceof TensorData) ? (r as TensorData[]) : undefined;
}

export function foldConstants(v: GraphView): number {
  let folded = 0;
  for (const n of topoSort(v.graph, () => true)) {
    if (NONDETERMINISTIC.has(n.opType) || hasSubgraph(n)) continue;
    if (n.opType === 'Dropout' && n.inputs[2]) continue; // training_mode given: random
    let outs: TensorData[] | undefined;
    if ((n.opType === 'Shape' || n.opType === 'Size') && n.domain === '' && !v.constant(n.inputs[0])) {
      outs = foldShape(v, n);
    } else if (n.inputs.filter(Boolean).every((i) => v.constant(i)) && n.outputs.some(Boolean)) {
      try {
        outs = evaluateNode(v, n);
      } catch {
        continue; // leave it for run time, where the error will name the node and inputs
      }
      const inSize = n.inputs.filter(Boolean).reduce((a, i) => a + v.constant(i)!.size, 0);
      if (outs && outs.some((t) => t && t.size > Math.max(MAX_FOLDED_ELEMENTS, inSize))) continue;
    }
    if (!outs) continue;
    n.outputs.forEach((o, k) => {
      if (!o || !outs![k]) return;
      v.graph.initializers.set(o, outs![k]);
      v.graph.valueInfo.set(o, { kind: 'tensor', dtype: outs![k].dtype, shape: [...outs![k].dims] });
    });
    v.graph.nodes = v.graph.nodes.filter((x) => x !== n);
    folded++;
  }
  v.reindex();
  // outputs that became constants stay graph outputs; unused initializers are pruned by dead-code elimination
  return folded;
}

function foldShape(v: GraphView, n: Node): TensorData[] | undefined {
  const shape = v.staticShape(n.inputs[0]);
  if (!shape) return undefined;
  if (n.opType === 'Size') return [TensorData.fromBigInts('int64', [], [BigInt(shape.reduce((a, b) => a * b, 1))])];
  const rank = shape.length;
  const clamp = (x: number) => Math.min(Math.max(x < 0 ? x + rank : x, 0), rank);
  const start = clamp((n.attrs.start?.value as number | undefined) ?? 0);
  const end = clamp((n.attrs.end?.value as number | undefined) ?? rank);
  const dims = shape.slice(start, Math.max(start, end));
  return [TensorData.fromBigInts('int64', [dims.length], dims.map(BigInt))];
}
