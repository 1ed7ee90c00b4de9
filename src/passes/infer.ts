// Shape and type inference over a graph, from each op's `infer`. Results go into graph.valueInfo; input shapes may be
// overridden (a build's shape profile pins the dynamic dims it optimizes for).
import type { Dim, Graph, Node, ValueType } from '../ir/graph.js';
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
  const values = new Map<string, Dim[]>();
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
    out = refineWithShapeValues(node, out, types, values, g);
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

// ---------------------------------------------------------------------------------------------------------------
// Shape values: small int tensors computed from shapes (Shape -> Gather -> Unsqueeze -> Concat ...) are tracked
// element by element, symbolic dims included, so Reshape/Expand/ConstantOfShape get symbolic output shapes even
// when their shape input is computed at run time (as exporters emit for dynamic batch and sequence).

function valueOf(name: string, values: Map<string, Dim[]>, g: Graph): Dim[] | undefined {
  if (!name) return undefined;
  const c = g.initializers.get(name);
  if (c && c.rank <= 1 && (c.dtype === 'int64' || c.dtype === 'int32') && c.size <= 64) return c.toNumberArray();
  return values.get(name);
}

function refineWithShapeValues(node: Node, out: ValueType[], types: Map<string, ValueType>, values: Map<string, Dim[]>, g: Graph): ValueType[] {
  if (node.domain !== '' && node.domain !== 'kiln') return out;
  const val = (i: number) => valueOf(node.inputs[i], values, g);
  const shapeOf = (i: number) => {
    const t = types.get(node.inputs[i]);
    return t?.kind === 'tensor' ? t.shape : undefined;
  };
  const intAttr = (k: string, d: number) => (node.attrs[k]?.value as number | undefined) ?? d;
  const set = (v: Dim[] | undefined) => v && node.outputs[0] && values.set(node.outputs[0], v);
  switch (node.opType) {
    case 'Shape': {
      const sh = shapeOf(0);
      if (!sh) break;
      const r = sh.length;
      const clamp = (x: number) => Math.min(Math.max(x < 0 ? x + r : x, 0), r);
      set(sh.slice(clamp(intAttr('start', 0)), clamp(intAttr('end', r))));
      break;
    }
    case 'Gather': {
      const data = val(0), idx = val(1);
      if (data && idx && intAttr('axis', 0) === 0 && idx.every((i) => typeof i === 'number')) {
        set((idx as number[]).map((i) => data[i < 0 ? i + data.length : i]));
      }
      break;
    }
    case 'Unsqueeze': case 'Squeeze': case 'Cast': case 'Identity': case 'Reshape':
      if (val(0) && val(0)!.length <= 64) set(val(0));
      break;
    case 'Concat': {
      const parts = node.inputs.map((_, i) => val(i));
      if (parts.every(Boolean)) set(parts.flat() as Dim[]);
      break;
    }
    case 'Slice': {
      const v = val(0), st = val(1), en = val(2);
      if (v && st && en && st.length === 1 && typeof st[0] === 'number' && typeof en[0] === 'number' && (!node.inputs[4] || val(4)?.[0] === 1)) {
        const r = v.length;
        const c = (x: number) => Math.min(Math.max(x < 0 ? x + r : x, 0), r);
        set(v.slice(c(st[0] as number), c(en[0] as number)));
      }
      break;
    }
  }
  const first = out[0];
  const dtype = first?.kind === 'tensor' ? first.dtype : undefined;
  const refine = (shape: Dim[] | undefined) => {
    if (!shape || !dtype) return;
    const known = first?.kind === 'tensor' && first.shape ? first.shape.filter((d) => d !== undefined).length : -1;
    if (shape.filter((d) => d !== undefined).length > known) out = [{ kind: 'tensor', dtype, shape }, ...out.slice(1)];
  };
  if (node.opType === 'Reshape') {
    const target = val(1), xs = shapeOf(0);
    if (target) {
      const allowzero = intAttr('allowzero', 0) === 1;
      let shape: Dim[] = target.map((d, i) => (d === 0 && !allowzero ? xs?.[i] : d === -1 ? undefined : d));
      const minus = target.indexOf(-1);
      if (minus >= 0 && xs && xs.every((d) => typeof d === 'number') && shape.every((d, i) => i === minus || typeof d === 'number')) {
        const total = (xs as number[]).reduce((a, b) => a * b, 1);
        const rest = (shape.filter((_, i) => i !== minus) as number[]).reduce((a, b) => a * b, 1);
        shape = shape.map((d, i) => (i === minus ? total / rest : d));
      } else if (minus >= 0 && xs) {
        // cancel equal symbolic dims between input and target, then solve the rest
        const num = [...xs], den = shape.filter((_, i) => i !== minus);
        for (const d of [...den]) {
          const k = num.indexOf(d);
          if (d !== undefined && k >= 0) { num.splice(k, 1); den.splice(den.indexOf(d), 1); }
        }
        if (num.every((d) => typeof d === 'number') && den.every((d) => typeof d === 'number')) {
          shape = shape.map((d, i) => (i === minus ? (num as number[]).reduce((a, b) => a * b, 1) / (den as number[]).reduce((a, b) => a * b, 1) : d));
        } else if (num.length === 1 && den.length === 0) shape = shape.map((d, i) => (i === minus ? num[0] : d));
      }
      refine(shape);
    }
  } else if (node.opType === 'Expand') {
    const target = val(1), xs = shapeOf(0);
    if (target && xs) {
      const r = Math.max(target.length, xs.length);
      refine(Array.from({ length: r }, (_, i) => {
        const a = xs[i - (r - xs.length)] ?? 1, b = target[i - (r - target.length)] ?? 1;
        return a === 1 ? b : b === 1 ? a : a === b ? a : undefined;
      }));
    }
  } else if (node.opType === 'ConstantOfShape') {
    refine(val(0));
  } else if (node.opType === 'Slice' && !val(0)) {
    refine(sliceShape(shapeOf(0), val(1), val(2), node.inputs[3] ? val(3) : [], node.inputs[4] ? val(4) : []));
  }
  return out;
}

/** A data Slice's output shape from starts/ends computed from shapes (BERT's position ids sliced to the sequence). */
function sliceShape(xs: Dim[] | undefined, st?: Dim[], en?: Dim[], ax?: Dim[], sp?: Dim[]): Dim[] | undefined {
  const nums = (a?: Dim[]) => (a?.every((d) => typeof d === 'number') ? (a as number[]) : undefined);
  const starts = nums(st), ends = nums(en), axes = nums(ax), steps = nums(sp);
  if (!xs || !starts || !ends || !axes || !steps || starts.length !== ends.length) return undefined;
  const out = [...xs];
  for (let k = 0; k < starts.length; k++) {
    const a = axes.length ? (axes[k] < 0 ? axes[k] + xs.length : axes[k]) : k, step = steps.length ? steps[k] : 1, d = xs[a];
    if (typeof d !== 'number' || !step) return undefined;
    const norm = (x: number, lo: number, hi: number) => Math.min(Math.max(x < 0 ? x + d : x, lo), hi);
    const len = step > 0 ? Math.ceil((norm(ends[k], 0, d) - norm(starts[k], 0, d)) / step) : Math.ceil((norm(starts[k], 0, d - 1) - norm(ends[k], -1, d - 1)) / -step);
    out[a] = Math.max(0, len);
  }
  return out;
}
