// Model-local functions (ModelProto.functions) are inlined on import: each call node is replaced by the
// function's body, with values renamed apart and attribute references (ref_attr_name) substituted.
import type { AttrValue, Graph, Model, Node } from '../ir/graph.js';
import { ModelError } from '../ir/errors.js';

export interface FunctionDef {
  name: string;
  domain: string;
  overload: string;
  inputs: string[];
  outputs: string[];
  attributes: string[];
  attrDefaults: Record<string, AttrValue>;
  nodes: Node[];
  opsets: Map<string, number>;
}

const MAX_DEPTH = 32;

export function inlineFunctions(model: Model, fns: FunctionDef[]): void {
  const byKey = new Map(fns.map((f) => [`${f.domain}:${f.name}:${f.overload}`, f]));
  for (const f of fns) {
    for (const [d, v] of f.opsets) {
      const have = model.opsets.get(d);
      if (have === undefined) model.opsets.set(d, v);
      else if (have !== v) {
        throw new ModelError(`${model.path ?? 'model'}: function '${f.name}' imports opset ${v} of domain '${d || 'ai.onnx'}' but the model imports ${have}; mixed opsets are not supported.`);
      }
    }
  }
  let counter = 0;
  const inlineGraph = (g: Graph, depth: number): void => {
    const out: Node[] = [];
    for (const node of g.nodes) {
      for (const a of Object.values(node.attrs)) {
        if (a.type === 'graph') inlineGraph(a.value, depth);
        if (a.type === 'graphs') a.value.forEach((s) => inlineGraph(s, depth));
      }
      const f = byKey.get(`${node.domain}:${node.opType}:`);
      if (!f) {
        out.push(node);
        continue;
      }
      if (depth > MAX_DEPTH) throw new ModelError(`function '${f.name}' is nested more than ${MAX_DEPTH} levels deep (recursive?).`);
      const id = counter++;
      const rename = new Map<string, string>();
      f.inputs.forEach((name, i) => rename.set(name, node.inputs[i] ?? ''));
      f.outputs.forEach((name, i) => rename.set(name, node.outputs[i] ?? `${node.name || f.name}__${id}__unused_${name}`));
      const mapName = (n: string) => (n === '' ? '' : (rename.get(n) ?? `${f.name}__${id}__${n}`));
      const body: Graph = { name: f.name, nodes: [], inputs: [], outputs: [], initializers: new Map(), valueInfo: new Map() };
      for (const fn of f.nodes) {
        const attrs: Record<string, AttrValue> = {};
        for (const [k, a] of Object.entries(fn.attrs)) {
          if (a.type !== 'ref') attrs[k] = a;
          else {
            const v = node.attrs[a.value] ?? f.attrDefaults[a.value];
            if (v) attrs[k] = v;
          }
        }
        body.nodes.push({ ...fn, name: `${node.name || f.name}/${fn.name || fn.opType}_${id}`, inputs: fn.inputs.map(mapName), outputs: fn.outputs.map(mapName), attrs });
      }
      inlineGraph(body, depth + 1);
      out.push(...body.nodes);
    }
    g.nodes = out;
  };
  inlineGraph(model.graph, 0);
}
