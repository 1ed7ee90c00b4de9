// The native runner's view of the schedule, worked out once per plan from the graph alone: when each pooled buffer is
// dead, which runs of layers go to the library as one chain, which Splits, Reshapes and Transposes are views, and
// which attention blocks run as one strided call (runner.ts uses them at run time).
import type { Model, Node } from '../../ir/graph.js';
import { TensorData, type Value } from '../../ir/tensor.js';
import { KILN_DOMAIN } from '../../ops/fused.js';
import { splitSizes } from '../../ops/shape-basic.js';

/**
 * For each output of the native layers and of the pooled Splits, by value name: the schedule index after which no
 * node can read its buffer, or Infinity. A native consumer only reads it; any other consumer may return a view of it
 * (Reshape, Identity), so the buffer lives as long as that consumer's outputs do. Graph outputs live on. Null when
 * the graph has subgraphs (their captured reads are not tracked here).
 */
export function deadAfter(order: Node[], native: Set<Node>, splits: Node[], graphOutputs: Set<string>): Map<string, number> | null {
  if (order.some((n) => Object.values(n.attrs).some((a) => a.type === 'graph' || a.type === 'graphs'))) return null;
  const index = new Map(order.map((n, i) => [n, i]));
  const consumers = new Map<string, Node[]>();
  for (const n of order) for (const x of n.inputs) if (x) consumers.set(x, [...(consumers.get(x) ?? []), n]);
  const memo = new Map<string, number>();
  const lifeOf = (value: string, producer: Node): number => {
    if (graphOutputs.has(value)) return Infinity;
    const m = memo.get(value);
    if (m !== undefined) return m;
    memo.set(value, Infinity); // guards cycles (none in a sorted graph)
    let last = index.get(producer)!;
    for (const c of consumers.get(value) ?? []) {
      last = Math.max(last, index.get(c)!);
      if (!native.has(c)) for (const o of c.outputs) if (o) last = Math.max(last, lifeOf(o, c));
    }
    memo.set(value, last);
    return last;
  };
  const values = [...[...native].map((n) => [n.outputs[0], n] as const), ...splits.flatMap((n) => n.outputs.filter(Boolean).map((o) => [o, n] as const))];
  return new Map(values.map(([v, n]) => [v, lifeOf(v, n)]));
}

/** Whether a node is a Split the runner runs itself (see \`splitPooled\`). */
export const isSplit = (n: Node) => n.opType === 'Split' && (n.domain === '' || n.domain === KILN_DOMAIN);

/** A float32 Split as rows of a strided copy: per output, its dims, the floats per row and where its rows start in
 * each source row of \`stride\` floats; undefined where the Split is anything else (the reference kernel runs). */
export function splitGeometry(n: Node, inputs: (Value | undefined)[]) {
  const x = inputs[0];
  if (!(x instanceof TensorData) || x.dtype !== 'float32' || !x.dims.length) return undefined;
  const outs = n.outputs;
  if (outs.some((o) => !o)) return undefined;
  const rank = x.dims.length, a0 = (n.attrs.axis?.value as number | undefined) ?? 0, axis = a0 < 0 ? a0 + rank : a0;
  if (axis < 0 || axis >= rank) return undefined;
  const d = x.dims[axis];
  const given = inputs[1] instanceof TensorData ? Array.from(inputs[1].data as BigInt64Array, Number) : (n.attrs.split?.value as number[] | undefined);
  let sizes: number[];
  try {
    sizes = splitSizes(d, given, outs.length, false); // uneven parts (opset 18) and bad sizes: the reference kernel
  } catch {
    return undefined;
  }
  if (sizes.length !== outs.length) return undefined;
  const outer = x.dims.slice(0, axis).reduce((p, q) => p * q, 1), inner = x.dims.slice(axis + 1).reduce((p, q) => p * q, 1);
  let at = 0;
  const parts = sizes.map((len) => {
    const part = { dims: x.dims.map((v, i) => (i === axis ? len : v)), run: len * inner, offset: at * inner };
    at += len;
    return part;
  });
  return { x, outer, stride: d * inner, parts };
}

/** Ops whose outputs are views of their input (same buffer, new dims): inside a chain they cost nothing, so they
 * need not break it (BERT: the Reshapes around attention). */
const VIEW_OPS = new Set(['Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Identity']);
export const isView = (n: Node) => n.domain === '' && VIEW_OPS.has(n.opType) && n.outputs.length === 1;

/**
 * BERT's attention block: Split of the QKV product (optional), Reshapes to heads, Transposes into kiln:Attention (Q
 * and V [0, 2, 1, 3], K [0, 2, 3, 1] with k_transposed; any 4-D permutation), and a Transpose [0, 2, 1, 3] of its
 * output. Inside a chain of calls with pooled buffers (no caller sees intermediate values), the group runs as one
 * attention call that reads Q, K and V through strides straight from the Split's input and writes the final
 * Transpose's output: 3 row copies and 4 transposes less per layer. The other members' values are placeholders of the
 * right dims that nothing reads: each member's outputs go only to the next member, and none is a graph output.
 * Groups are keyed by their first member in schedule order; members are consecutive there.
 */
export interface AttentionGroup { attn: Node; out: Node; members: Node[] }

export function attentionGroups(order: Node[], kernels: Map<Node, unknown>, model: Model): Map<Node, AttentionGroup> {
  const groups = new Map<Node, AttentionGroup>();
  const producer = new Map<string, Node>();
  const consumers = new Map<string, Node[]>();
  for (const n of order) {
    for (const o of n.outputs) if (o) producer.set(o, n);
    for (const x of n.inputs) if (x) consumers.set(x, [...(consumers.get(x) ?? []), n]);
  }
  const outputs = new Set(model.graph.outputs.map((o) => o.name));
  const only = (value: string, to: Node) => !outputs.has(value) && consumers.get(value)?.length === 1 && consumers.get(value)![0] === to;
  const isT = (n: Node | undefined) => !!n && n.domain === '' && n.opType === 'Transpose' && (n.attrs.perm?.value as number[] | undefined)?.length === 4;
  const isHeadsT = (n: Node | undefined) => isT(n) && (n!.attrs.perm!.value as number[]).join() === '0,2,1,3';
  const index = new Map(order.map((n, i) => [n, i]));
  for (const a of order) {
    if (!(a.domain === KILN_DOMAIN && a.opType === 'Attention' && kernels.has(a))) continue;
    const out = consumers.get(a.outputs[0])?.[0];
    if (!isHeadsT(out) || !kernels.has(out!) || !only(a.outputs[0], out!)) continue;
    const members = new Set<Node>([a, out!]);
    let ok = true;
    const splits = new Set<Node>();
    for (const x of a.inputs.slice(0, 3)) {
      const t = producer.get(x);
      if (!isT(t) || !only(x, a)) { ok = false; break; }
      members.add(t!);
      let src = t!.inputs[0];
      const r = producer.get(src);
      if (r && r.domain === '' && r.opType === 'Reshape' && only(src, t!)) {
        members.add(r);
        src = r.inputs[0];
      }
      const sp = producer.get(src);
      if (sp && isSplit(sp)) splits.add(sp);
    }
    if (!ok) continue;
    // a Split is left out (its outputs made for real) unless every output of it feeds this group alone
    for (const sp of splits) if (sp.outputs.every((o) => o && [...members].some((m) => m.inputs[0] === o && only(o, m)))) members.add(sp);
    const sorted = [...members].sort((p, q) => index.get(p)! - index.get(q)!);
    if (index.get(sorted[sorted.length - 1])! - index.get(sorted[0])! !== sorted.length - 1) continue;
    groups.set(sorted[0], { attn: a, out: out!, members: sorted });
  }
  return groups;
}

/** A strided view of a float32 buffer: element i at base[offset + sum(i[d] * strides[d])]. */
export interface View { base: Float32Array; offset: number; dims: number[]; strides: number[] }

const denseStrides = (dims: number[]) => dims.map((_, i) => dims.slice(i + 1).reduce((a, b) => a * b, 1));

/**
 * The outputs of a Split, Reshape or heads Transpose as views of its input (a view or a dense float32 tensor), or
 * undefined where they are not expressible as one. \`reshapeTo\` runs the reference Reshape on a placeholder of the
 * view's dims (with the node's other inputs) to learn the target dims.
 */
export function viewOf(n: Node, ins: (Value | View | undefined)[], reshapeTo: (n: Node, x: { dims: number[]; rest: (Value | undefined)[] }) => Value[]): View[] | undefined {
  const x = ins[0];
  const asView = (v: Value | View | undefined): View | undefined =>
    v && 'base' in v ? v : v instanceof TensorData && v.dtype === 'float32' ? { base: v.data as Float32Array, offset: 0, dims: [...v.dims], strides: denseStrides([...v.dims]) } : undefined;
  if (isSplit(n)) {
    if (!(x instanceof TensorData)) return undefined;
    const g = splitGeometry(n, ins as (Value | undefined)[]);
    return g?.parts.map((p) => ({ base: x.data as Float32Array, offset: p.offset, dims: p.dims, strides: denseStrides([...x.dims]) }));
  }
  const v = asView(x);
  if (!v) return undefined;
  if (n.opType === 'Transpose') {
    const perm = n.attrs.perm?.value as number[];
    return [{ base: v.base, offset: v.offset, dims: perm.map((a) => v.dims[a]), strides: perm.map((a) => v.strides[a]) }];
  }
  if (n.opType !== 'Reshape') return undefined;
  let out: Value[];
  try {
    out = reshapeTo(n, { dims: v.dims, rest: ins.slice(1) as (Value | undefined)[] });
  } catch {
    return undefined;
  }
  const to = out[0] instanceof TensorData ? [...out[0].dims] : undefined;
  if (!to) return undefined;
  const r = v.dims.length;
  if (to.join() === v.dims.join()) return [v];
  if (v.strides.join() === denseStrides(v.dims).join()) return [{ ...v, dims: to, strides: denseStrides(to) }];
  // the last axis split in two (heads): the leading axes keep their strides
  if (to.length === r + 1 && v.strides[r - 1] === 1 && to.slice(0, r - 1).join() === v.dims.slice(0, r - 1).join() && to[r - 1] * to[r] === v.dims[r - 1]) {
    return [{ ...v, dims: to, strides: [...v.strides.slice(0, r - 1), to[r], 1] }];
  }
  return undefined;
}

/**
 * Runs of consecutive native layers (in schedule order) that can go to the library in one call, by their first
 * layer: every input of a later member is a constant, a feed, an output of an earlier member, or an input of the
 * first (values the runner holds when the chain starts). Splits (a strided copy in the library) and view ops (no work)
 * may sit between the layers. Runs of one layer are left out.
 */
export function chainsOf(order: Node[], kernels: Map<Node, unknown>, model: Model): Map<Node, Node[]> {
  const chains = new Map<Node, Node[]>();
  const inits = model.graph.initializers;
  // values the runner holds once their producer ran (in or out of a chain), the feeds, and those made earlier in this
  // chain
  const held = new Set([...order].filter((n) => kernels.has(n) || isSplit(n)).flatMap((n) => n.outputs.filter(Boolean)));
  for (const i of model.graph.inputs) held.add(i.name);
  let cur: Node[] = [];
  let made = new Set<string>();
  const close = () => {
    if (cur.filter((n) => kernels.has(n) || isSplit(n)).length > 1) chains.set(cur[0], cur);
    cur = [];
    made = new Set();
  };
  for (const n of order) {
    const native = kernels.has(n);
    if (!native && !isSplit(n) && !isView(n)) { close(); continue; }
    const head = cur[0];
    if (head && !n.inputs.every((x) => !x || inits.has(x) || held.has(x) || made.has(x) || head.inputs.includes(x))) close();
    // a chain starts at a native layer: its head runs alone when the rest cannot be prepared
    if (!cur.length && !native) continue;
    cur.push(n);
    for (const o of n.outputs) if (o) made.add(o);
  }
  close();
  return chains;
}

/** An input of a Concat that its producer writes straight into the Concat's output: \`len\` floats from \`offset\`. */
export interface ConcatPart { concat: Node; offset: number; len: number; total: number }

/**
 * Concats whose inputs their producers write in place (SqueezeNet's fire modules: the two expand convolutions into the
 * halves of one buffer), so the Concat itself copies nothing, by input value. Where every dim before the axis is 1
 * at the plan's shapes (each input is then one block of the output), the Concat and its output are not graph
 * outputs, and each input is the float32 output of a native layer of the Concat's chain (not another Concat) that
 * nothing else reads. The runner checks the sizes again at run time (another batch) and copies where they differ.
 */
export function concatsInPlace(order: Node[], chains: Map<Node, Node[]>, meta: Map<Node, { outDims: number[]; outDtype?: unknown }>,
  graphOutputs: Set<string>): Map<string, ConcatPart> {
  const readers = new Map<string, number>();
  for (const n of order) for (const x of n.inputs) if (x) readers.set(x, (readers.get(x) ?? 0) + 1);
  const parts = new Map<string, ConcatPart>();
  const size = (d: number[]) => d.reduce((a, b) => a * b, 1);
  for (const chain of chains.values()) {
    const producer = new Map(chain.flatMap((n) => n.outputs.filter(Boolean).map((o) => [o, n] as const)));
    for (const c of chain) {
      const m = meta.get(c);
      if (c.opType !== 'Concat' || c.domain !== '' || !m || m.outDtype || graphOutputs.has(c.outputs[0])) continue;
      const a = (c.attrs.axis?.value as number | undefined) ?? 0, axis = a < 0 ? a + m.outDims.length : a;
      if (size(m.outDims.slice(0, axis)) !== 1 || new Set(c.inputs).size !== c.inputs.length) continue;
      const ins = c.inputs.map((x) => {
        const p = x ? producer.get(x) : undefined, pm = p && meta.get(p);
        return p && pm && p.opType !== 'Concat' && !pm.outDtype && p.outputs.length === 1 && readers.get(x) === 1 && !graphOutputs.has(x)
          ? size(pm.outDims) : undefined;
      });
      if (ins.some((l) => l === undefined) || (ins as number[]).reduce((a, b) => a + b, 0) !== size(m.outDims)) continue;
      let offset = 0;
      c.inputs.forEach((x, k) => {
        parts.set(x, { concat: c, offset, len: ins[k]!, total: size(m.outDims) });
        offset += ins[k]!;
      });
    }
  }
  return parts;
}
