// The memory planner: liveness of every intermediate tensor over the execution order, then offsets in one arena
// per execution context. Placement is greedy by size (largest first, each at the lowest offset that does not
// overlap a tensor alive at the same time), which lands close to the lower bound on CNNs and transformers.
// Elementwise-style ops may write over an input that dies at that op (in-place).
import type { Graph, Node } from '../ir/graph.js';
import { dtypeBits } from '../ir/dtype.js';
import type { DType } from '../ir/dtype.js';

export interface TensorSlot {
  name: string;
  bytes: number;
  /** first and last step (node index) at which the tensor is alive */
  start: number;
  end: number;
  offset: number;
  /** when set, the tensor shares the slot of this tensor (in-place) */
  alias?: string;
}

export interface MemoryPlan {
  alignment: number;
  arenaBytes: number;
  /** The largest sum of simultaneously live tensor sizes: no plan can use less. */
  lowerBound: number;
  weightBytes: number;
  slots: TensorSlot[];
}

const IN_PLACE_OPS = new Set([
  'Relu', 'LeakyRelu', 'Sigmoid', 'Tanh', 'Clip', 'Add', 'Sub', 'Mul', 'Div', 'Neg', 'Exp', 'Sqrt', 'Erf', 'Gelu',
  'Elementwise', 'HardSwish', 'HardSigmoid', 'Softmax', 'Identity', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze',
]);
/** Ops whose output is a view of their input's bytes (same size, no copy needed). */
const VIEW_OPS = new Set(['Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Identity']);

const align = (n: number, a: number) => Math.ceil(n / a) * a;

export function tensorBytes(dtype: DType, dims: readonly number[]): number {
  const n = dims.reduce((a, b) => a * b, 1);
  return dtype === 'string' ? n * 8 : Math.ceil((n * dtypeBits(dtype)) / 8);
}

/**
 * Plan the activation arena for `order` (a topological order of g's nodes). `sizeOf` returns a value's bytes (at the
 * profile's max shapes) or undefined when unknown (such values are allocated dynamically and reported).
 */
export function planMemory(g: Graph, order: Node[], sizeOf: (name: string) => number | undefined, alignment = 256): MemoryPlan & { dynamic: string[] } {
  const inits = new Set(g.initializers.keys());
  const graphIO = new Set([...g.inputs.map((i) => i.name), ...g.outputs.map((o) => o.name)]);
  const start = new Map<string, number>(), end = new Map<string, number>();
  order.forEach((n, i) => {
    for (const o of n.outputs) if (o && !start.has(o)) start.set(o, i);
    for (const x of n.inputs) if (x && start.has(x)) end.set(x, i);
  });
  const dynamic: string[] = [];
  const slots: TensorSlot[] = [];
  const byName = new Map<string, TensorSlot>();
  for (const [name, s] of start) {
    if (inits.has(name) || graphIO.has(name)) continue; // graph I/O live in user/binding buffers
    const bytes = sizeOf(name);
    if (bytes === undefined) {
      dynamic.push(name);
      continue;
    }
    const slot = { name, bytes: align(Math.max(bytes, 1), alignment), start: s, end: end.get(name) ?? s, offset: -1 };
    slots.push(slot);
    byName.set(name, slot);
  }
  // in-place: an output may take over an input that dies at this node and is at least as large
  order.forEach((n, i) => {
    if (!IN_PLACE_OPS.has(n.opType)) return;
    const out = byName.get(n.outputs[0]);
    if (!out || out.alias) return;
    for (const x of n.inputs) {
      const inp = byName.get(x);
      if (!inp || inp.end !== i || inp.bytes < out.bytes || inp.alias) continue;
      if (!VIEW_OPS.has(n.opType) && inp.bytes !== out.bytes) continue;
      out.alias = inp.name;
      inp.end = Math.max(inp.end, out.end);
      break;
    }
  });
  const roots = slots.filter((s) => !s.alias);
  // extend each root's lifetime over its alias chain
  for (const s of slots) {
    if (!s.alias) continue;
    let r = byName.get(s.alias)!;
    while (r.alias) r = byName.get(r.alias)!;
    r.end = Math.max(r.end, s.end);
  }
  // lower bound: max over steps of the live bytes
  const steps = order.length;
  const live = new Float64Array(steps + 1);
  for (const r of roots) for (let t = r.start; t <= r.end; t++) live[t] += r.bytes;
  const lowerBound = Math.max(0, ...live);
  // greedy by size
  const placed: TensorSlot[] = [];
  for (const r of [...roots].sort((a, b) => b.bytes - a.bytes || a.start - b.start)) {
    const conflicts = placed.filter((p) => p.start <= r.end && r.start <= p.end).sort((a, b) => a.offset - b.offset);
    let off = 0;
    for (const c of conflicts) {
      if (off + r.bytes <= c.offset) break;
      off = Math.max(off, c.offset + c.bytes);
    }
    r.offset = off;
    placed.push(r);
  }
  for (const s of slots) {
    if (!s.alias) continue;
    let r = byName.get(s.alias)!;
    while (r.alias) r = byName.get(r.alias)!;
    s.offset = r.offset;
  }
  const arenaBytes = Math.max(0, ...roots.map((r) => r.offset + r.bytes));
  let weightBytes = 0;
  for (const t of g.initializers.values()) weightBytes += tensorBytes(t.dtype, t.dims);
  return { alignment, arenaBytes, lowerBound, weightBytes, slots, dynamic };
}
