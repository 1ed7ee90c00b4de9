// Shape and type inference over a graph, from each op's `infer`. Results go into graph.valueInfo; input shapes may be
// overridden (a build's shape profile pins the dynamic dims it optimizes for).
import type { Dim, Graph, ValueType } from '../ir/graph.js';
import { nodeLabel } from '../ir/graph.js';
import { resolveOp, parseAttrs } from '../ir/schema.js';
import { KilnError } from '../ir/errors.js';
import { topoSort } from '../ops/execute.js';

export interface InferOptions {
  /** Concrete (or symbolic) shapes to assume for graph inputs. */
  inputShapes?: Map<string, Dim[]>;
  /** Throw on an inference error instead of leaving the outputs unknown. */
  strict?: boolean;
}

/** Infer every value's type; returns how many values got a known shape. */
export function inferShapes(g: Graph, opsets: Map<string, number>, opts: InferOptions = {}): number {
  const types = new Map<string, ValueType>();
  for (const i of g.inputs) {
    const s = opts.inputShapes?.get(i.name);
    types.set(i.name, s && i.type.kind === 'tensor' ? { ...i.type, shape: [...s] } : i.type);
  }
  for (const [name, t] of g.initializers) types.set(name, { kind: 'tensor', dtype: t.dtype, shape: [...t.dims] });
  let known = 0;
  for (const node of topoSort(g, () => true)) {
    const { def, opset } = resolveOp(node, opsets);
    let out: ValueType[] = [];
    if (def.infer) {
      try {
        out = def.infer({
          node, opset, attrs: parseAttrs(def, node) as never, numOutputs: node.outputs.length,
          inputTypes: node.inputs.map((n) => (n ? (types.get(n) ?? g.valueInfo.get(n)) : undefined)),
          constant: (i) => (node.inputs[i] ? g.initializers.get(node.inputs[i]) : undefined),
        });
      } catch (e) {
        if (opts.strict) throw new KilnError(`shape inference failed at ${nodeLabel(node)}: ${(e as Error).message}`);
        out = [];
      }
    }
    node.outputs.forEach((o, k) => {
      if (!o) return;
      const t = out[k] ?? g.valueInfo.get(o) ?? { kind: 'unknown' };
      types.set(o, t);
      g.valueInfo.set(o, t);
      if (t.kind === 'tensor' && t.shape && t.shape.every((d) => typeof d === 'number')) known++;
    });
  }
  return known;
}
