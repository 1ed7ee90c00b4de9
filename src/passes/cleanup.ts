// Graph clean-up rules: dead nodes, common subexpressions, and no-ops.
import type { Node } from '../ir/graph.js';
import type { GraphView } from './view.js';
import { sameDims } from '../ir/tensor.js';

const SIDE_EFFECT_FREE_EXCEPTIONS = new Set<string>(); // every standard op is pure; kept for future custom ops

/** Remove nodes none of whose outputs are used, then unused initializers. */
export function eliminateDeadCode(v: GraphView): number {
  let removed = 0;
  for (;;) {
    const dead = v.graph.nodes.filter((n) => !SIDE_EFFECT_FREE_EXCEPTIONS.has(n.opType)
      && n.outputs.every((o) => !o || (v.consumers(o).length === 0 && !v.isGraphOutput(o))));
    if (!dead.length) break;
    removed += dead.length;
    v.removeNodes(dead);
  }
  v.pruneInitializers();
  return removed;
}

function attrKey(n: Node): string | undefined {
  const parts: string[] = [];
  for (const k of Object.keys(n.attrs).sort()) {
    const a = n.attrs[k];
    if (a.type === 'graph' || a.type === 'graphs' || a.type === 'tensor' || a.type === 'tensors' || a.type === 'sparse_tensor') return undefined;
    parts.push(`${k}=${JSON.stringify(a.value)}`);
  }
  return parts.join(';');
}

/** Merge nodes that compute the same op on the same inputs with the same attributes. */
export function eliminateCommonSubexpressions(v: GraphView): number {
  const seen = new Map<string, Node>();
  let merged = 0;
  for (const n of [...v.graph.nodes]) {
    const ak = attrKey(n);
    if (ak === undefined || /^Random|Bernoulli|Multinomial/.test(n.opType)) continue;
    const key = `${n.domain}:${n.opType}(${n.inputs.join(',')})[${ak}]#${n.outputs.length}`;
    const prev = seen.get(key);
    if (!prev) {
      seen.set(key, n);
      continue;
    }
    n.outputs.forEach((o, k) => o && prev.outputs[k] && v.replaceUses(o, prev.outputs[k]));
    v.removeNodes([n]);
    merged++;
  }
  return merged;
}

/** Is `n` a no-op whose (single) output equals its first input? */
function isNoOp(v: GraphView, n: Node): boolean {
  if (n.domain !== '') return false;
  const x = n.inputs[0];
  switch (n.opType) {
    case 'Identity': return true;
    case 'Dropout': return !n.inputs[2] && !(n.outputs[1] && v.consumers(n.outputs[1]).length);
    case 'Cast': {
      const t = v.type(x);
      const to = n.attrs.to?.value;
      return t?.kind === 'tensor' && typeof to === 'number' && v.graph.valueInfo.get(n.outputs[0])?.kind === 'tensor'
        && (v.graph.valueInfo.get(n.outputs[0]) as { dtype: string }).dtype === t.dtype;
    }
    case 'Reshape': case 'Expand': case 'Squeeze': case 'Unsqueeze': case 'Flatten':
      return sameDims(v.staticShape(x), v.staticShape(n.outputs[0])) && n.opType !== 'Unsqueeze' && n.opType !== 'Squeeze';
    case 'Tile': {
      const r = v.constant(n.inputs[1]);
      return !!r && r.toNumberArray().every((k) => k === 1);
    }
    case 'Transpose': {
      const perm = n.attrs.perm?.value as number[] | undefined;
      return !!perm && perm.every((p, i) => p === i);
    }
    default: return false;
  }
}

/** Remove Identity, inference Dropout, same-type Cast, shape-preserving Reshape/Expand/Flatten, Tile by 1, and
 * identity Transposes; merge Transpose->Transpose and Reshape->Reshape chains. */
export function removeNoOps(v: GraphView): number {
  let n = 0;
  for (const node of [...v.graph.nodes]) {
    if (!v.graph.nodes.includes(node)) continue;
    if (isNoOp(v, node)) {
      const out = node.outputs[0];
      const inp = node.inputs[0];
      if (v.isGraphOutput(out) && (v.isGraphOutput(inp) || v.graph.inputs.some((i) => i.name === inp) || v.constant(inp))) continue;
      v.removeNodes([node]);
      v.replaceUses(out, inp);
      n++;
      continue;
    }
    // Transpose(Transpose(x, p1), p2) -> Transpose(x, p1∘p2), Reshape(Reshape(x)) -> Reshape(x)
    if ((node.opType === 'Transpose' || node.opType === 'Reshape') && node.domain === '') {
      const prev = v.producer(node.inputs[0]);
      if (prev && prev.opType === node.opType && prev.domain === '' && v.singleUse(prev.outputs[0])) {
        if (node.opType === 'Transpose') {
          const p1 = prev.attrs.perm?.value as number[] | undefined, p2 = node.attrs.perm?.value as number[] | undefined;
          if (!p1 || !p2) continue;
          node.attrs = { ...node.attrs, perm: { type: 'ints', value: p2.map((i) => p1[i]) } };
        } else if (!v.constant(node.inputs[1]) || v.constant(node.inputs[1])!.toNumberArray().some((d) => d === 0)) continue;
        node.inputs = [prev.inputs[0], ...node.inputs.slice(1)];
        v.removeNodes([prev]);
        n++;
      }
    }
  }
  return n;
}
