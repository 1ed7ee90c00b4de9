// A mutable working view over a graph for rewrite passes: who produces and who consumes each value, constants,
// static types, and the edits rewrites need (replace a value's uses, remove nodes, add initializers).
import type { Graph, Node, ValueType } from '../ir/graph.js';
import type { TensorData } from '../ir/tensor.js';
import type { DType } from '../ir/dtype.js';

export class GraphView {
  private producers = new Map<string, Node>();
  private readers = new Map<string, Node[]>();
  private outputs = new Set<string>();
  private counter = 0;

  constructor(readonly graph: Graph, readonly opsets: Map<string, number>) {
    this.reindex();
  }

  reindex(): void {
    this.producers.clear();
    this.readers.clear();
    this.outputs = new Set(this.graph.outputs.map((o) => o.name));
    for (const n of this.graph.nodes) {
      for (const o of n.outputs) if (o) this.producers.set(o, n);
      for (const i of this.nodeReads(n)) {
        const list = this.readers.get(i);
        if (list) list.push(n);
        else this.readers.set(i, [n]);
      }
    }
  }

  /** Every value a node reads, including outer-scope names read inside its subgraphs. */
  nodeReads(n: Node): string[] {
    const r = n.inputs.filter(Boolean);
    for (const a of Object.values(n.attrs)) {
      const subs = a.type === 'graph' ? [a.value] : a.type === 'graphs' ? a.value : [];
      for (const g of subs) for (const sn of g.nodes) r.push(...this.nodeReads(sn));
      for (const g of subs) for (const o of g.outputs) r.push(o.name);
    }
    return r;
  }

  producer(name: string): Node | undefined {
    return this.producers.get(name);
  }

  consumers(name: string): Node[] {
    return this.readers.get(name) ?? [];
  }

  isGraphOutput(name: string): boolean {
    return this.outputs.has(name);
  }

  /** True when `name` is read by exactly one node and is not a graph output (safe to fuse away). */
  singleUse(name: string): boolean {
    return !this.outputs.has(name) && this.consumers(name).length === 1;
  }

  constant(name: string): TensorData | undefined {
    return name ? this.graph.initializers.get(name) : undefined;
  }

  type(name: string): ValueType | undefined {
    return this.graph.valueInfo.get(name) ?? this.graph.inputs.find((i) => i.name === name)?.type;
  }

  /** Element type of a constant or a typed tensor value, else undefined. */
  dtype(name: string): DType | undefined {
    const c = this.constant(name);
    if (c) return c.dtype;
    const t = this.type(name);
    return t?.kind === 'tensor' ? t.dtype : undefined;
  }

  /** Shape with symbolic dims (names) where known, else undefined. */
  shape(name: string): (number | string | undefined)[] | undefined {
    const c = this.constant(name);
    if (c) return [...c.dims];
    const t = this.type(name);
    return t?.kind === 'tensor' ? t.shape : undefined;
  }

  /** Static shape of a tensor value when fully known (numbers only). */
  staticShape(name: string): number[] | undefined {
    const c = this.constant(name);
    if (c) return [...c.dims];
    const t = this.type(name);
    if (t?.kind !== 'tensor' || !t.shape || t.shape.some((d) => typeof d !== 'number')) return undefined;
    return t.shape as number[];
  }

  fresh(base: string): string {
    let name: string;
    do name = `${base}__k${this.counter++}`;
    while (this.producers.has(name) || this.graph.initializers.has(name));
    return name;
  }

  addConstant(base: string, t: TensorData): string {
    const name = this.fresh(base);
    this.graph.initializers.set(name, t);
    return name;
  }

  /** Make every reader of `from` read `to` instead (graph outputs are renamed by rewiring the producer). */
  replaceUses(from: string, to: string): void {
    if (from === to) return;
    for (const n of this.consumers(from)) {
      n.inputs = n.inputs.map((i) => (i === from ? to : i));
      renameInSubgraphs(n, from, to);
    }
    if (this.outputs.has(from)) {
      // Keep the graph output's name: make the producer of `to` write `from` directly when possible.
      const p = this.producers.get(to);
      if (p && !this.outputs.has(to) && !this.graph.inputs.some((i) => i.name === to) && !this.graph.initializers.has(to)) {
        p.outputs = p.outputs.map((o) => (o === to ? from : o));
        for (const n of this.graph.nodes) {
          n.inputs = n.inputs.map((i) => (i === to ? from : i));
          renameInSubgraphs(n, to, from);
        }
      } else {
        this.graph.nodes.push({ name: this.fresh('keep_output'), opType: 'Identity', domain: '', inputs: [to], outputs: [from], attrs: {} });
      }
    }
    this.reindex();
  }

  removeNodes(nodes: Iterable<Node>): void {
    const dead = new Set(nodes);
    this.graph.nodes = this.graph.nodes.filter((n) => !dead.has(n));
    this.reindex();
  }

  /** Insert `node` right before `before` (or at the end). */
  insertNode(node: Node, before?: Node): void {
    const i = before ? this.graph.nodes.indexOf(before) : -1;
    if (i < 0) this.graph.nodes.push(node);
    else this.graph.nodes.splice(i, 0, node);
    this.reindex();
  }

  /** Drop initializers no node or output reads. */
  pruneInitializers(): number {
    let n = 0;
    const inputs = new Set(this.graph.inputs.map((i) => i.name));
    for (const name of [...this.graph.initializers.keys()]) {
      if (!this.readers.has(name) && !this.outputs.has(name) && !inputs.has(name)) {
        this.graph.initializers.delete(name);
        n++;
      }
    }
    return n;
  }
}

function renameInSubgraphs(n: Node, from: string, to: string): void {
  for (const a of Object.values(n.attrs)) {
    const subs = a.type === 'graph' ? [a.value] : a.type === 'graphs' ? a.value : [];
    for (const g of subs) {
      if (g.inputs.some((i) => i.name === from) || g.initializers.has(from)) continue; // shadowed
      for (const sn of g.nodes) {
        sn.inputs = sn.inputs.map((i) => (i === from ? to : i));
        renameInSubgraphs(sn, from, to);
      }
      for (const o of g.outputs) if (o.name === from && !g.nodes.some((x) => x.outputs.includes(from))) o.name = to;
    }
  }
}
