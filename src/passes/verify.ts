// The IR verifier: every node resolves to a known op, every input is produced exactly once before use (no cycles),
// names are unique, and graph outputs exist. Tests run it between optimizer stages.
import type { Graph } from '../ir/graph.js';
import { nodeLabel } from '../ir/graph.js';
import { resolveOp } from '../ir/schema.js';
import { KilnError } from '../ir/errors.js';
import { topoSort } from '../ops/execute.js';

export function verifyGraph(g: Graph, opsets: Map<string, number>, when = ''): void {
  const fail = (msg: string) => { throw new KilnError(`IR verification failed${when ? ` ${when}` : ''}: ${msg}`); };
  const defined = new Set<string>([...g.inputs.map((i) => i.name), ...g.initializers.keys()]);
  for (const n of g.nodes) {
    for (const o of n.outputs) {
      if (!o) continue;
      if (defined.has(o)) fail(`value '${o}' is defined twice (again by ${nodeLabel(n)})`);
      defined.add(o);
    }
  }
  for (const n of g.nodes) {
    try {
      resolveOp(n, opsets);
    } catch (e) {
      fail((e as Error).message);
    }
    for (const i of n.inputs) if (i && !defined.has(i)) fail(`${nodeLabel(n)} reads '${i}', which nothing defines`);
  }
  for (const o of g.outputs) if (!defined.has(o.name)) fail(`graph output '${o.name}' is not defined`);
  try {
    topoSort(g, () => true);
  } catch (e) {
    fail((e as Error).message);
  }
}
