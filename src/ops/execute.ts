// The reference executor: runs a graph node by node with the reference kernels of the op registry. It is the CPU
// fallback, the engine of constant folding, and the oracle the other backends are tested against.
import type { Graph, Node } from '../ir/graph.js';
import { nodeLabel } from '../ir/graph.js';
import { resolveOp, parseAttrs, type KernelContext, type OpDef } from '../ir/schema.js';
import { TensorData, SequenceValue, type Value, describeValue } from '../ir/tensor.js';
import { ExecutionError, KilnError } from '../ir/errors.js';
import './index.js';

export interface ExecuteOptions {
  opsets: Map<string, number>;
  /** Values visible from an enclosing graph (for subgraphs of If/Loop/Scan). */
  outer?: (name: string) => Value | undefined;
  /** Called after each node with its outputs (for --mark-all style debugging and profiling). */
  onNode?: (node: Node, outputs: Value[], ms: number, startMs: number) => void;
  /** Keep every intermediate value in the returned map (default: only graph outputs). */
  keepAll?: boolean;
  /** Replace a node's kernel (the CPU backend's test-only fault injection; see overrideCpuKernelForTesting). */
  kernelOverride?: (node: Node) => ((inputs: (Value | undefined)[]) => Value[]) | undefined;
}

interface Prepared {
  order: Node[];
  ops: { def: OpDef; opset: number; attrs: unknown }[];
  /** For each node index, values whose last use is that node (freed after it runs). */
  frees: string[][];
}

const prepared = new WeakMap<Graph, Map<Map<string, number>, Prepared>>();

/** Topological order of a graph's nodes; throws on a cycle or a value with no producer. */
export function topoSort(g: Graph, available: (name: string) => boolean): Node[] {
  const producer = new Map<string, number>();
  g.nodes.forEach((n, i) => n.outputs.forEach((o) => o && producer.set(o, i)));
  const state = new Uint8Array(g.nodes.length); // 0 new, 1 visiting, 2 done
  const order: Node[] = [];
  const visit = (i: number) => {
    const stack: [number, number][] = [[i, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [ni, k] = top;
      if (k === 0) {
        if (state[ni] === 2) { stack.pop(); continue; }
        state[ni] = 1;
      }
      const deps = nodeDeps(g.nodes[ni]);
      if (k < deps.length) {
        top[1]++;
        const p = producer.get(deps[k]);
        if (p !== undefined && p !== ni) {
          if (state[p] === 1) throw new KilnError(`graph '${g.name}' has a cycle through ${nodeLabel(g.nodes[p])}.`);
          if (state[p] === 0) stack.push([p, 0]);
        }
        continue;
      }
      state[ni] = 2;
      order.push(g.nodes[ni]);
      stack.pop();
    }
  };
  for (let i = 0; i < g.nodes.length; i++) if (state[i] === 0) visit(i);
  void available;
  return order;
}

/** Inputs a node reads, including outer-scope names used by its subgraphs. */
export function nodeDeps(n: Node): string[] {
  const deps = n.inputs.filter((x) => x);
  for (const a of Object.values(n.attrs)) {
    const subs = a.type === 'graph' ? [a.value] : a.type === 'graphs' ? a.value : [];
    for (const s of subs) deps.push(...subgraphFreeNames(s));
  }
  return deps;
}

const freeNamesCache = new WeakMap<Graph, string[]>();
function subgraphFreeNames(g: Graph): string[] {
  let r = freeNamesCache.get(g);
  if (!r) {
    const defined = new Set<string>([...g.inputs.map((i) => i.name), ...g.initializers.keys()]);
    const used = new Set<string>();
    for (const n of g.nodes) for (const o of n.outputs) defined.add(o);
    for (const n of g.nodes) for (const d of nodeDeps(n)) if (!defined.has(d)) used.add(d);
    for (const o of g.outputs) if (!defined.has(o.name)) used.add(o.name);
    r = [...used];
    freeNamesCache.set(g, r);
  }
  return r;
}

function prepare(g: Graph, opsets: Map<string, number>): Prepared {
  let byOpset = prepared.get(g);
  if (!byOpset) prepared.set(g, (byOpset = new Map()));
  let p = byOpset.get(opsets);
  if (p) return p;
  const order = topoSort(g, () => true);
  const ops = order.map((n) => {
    const { def, opset } = resolveOp(n, opsets);
    return { def, opset, attrs: parseAttrs(def, n) };
  });
  const lastUse = new Map<string, number>();
  order.forEach((n, i) => nodeDeps(n).forEach((d) => lastUse.set(d, i)));
  for (const o of g.outputs) lastUse.set(o.name, Infinity);
  const frees: string[][] = order.map(() => []);
  for (const [name, i] of lastUse) if (i !== Infinity && !g.initializers.has(name)) frees[i].push(name);
  p = { order, ops, frees };
  byOpset.set(opsets, p);
  return p;
}

/** A backend's own implementation of one node (e.g. a compiled kernel); may run off the main thread. */
export type NodeKernel = (inputs: (Value | undefined)[]) => Value[] | Promise<Value[]>;

export interface AsyncExecuteOptions extends ExecuteOptions {
  /** The kernel to run instead of the reference one for a node, or undefined to keep the reference kernel. */
  kernelFor?: (node: Node) => NodeKernel | undefined;
}

/** Run `g` on `feeds`; returns the graph outputs (or every value with keepAll). */
export function executeGraph(g: Graph, feeds: Map<string, Value>, opts: ExecuteOptions): Map<string, Value> {
  const run = startRun(g, feeds, opts);
  for (let i = 0; i < run.p.order.length; i++) {
    const t0 = opts.onNode ? performance.now() : 0;
    const { def, opset, attrs } = run.p.ops[i];
    run.finish(i, runNode(run.p.order[i], def, opset, attrs, run.inputsOf(i), run.lookup, opts), t0);
  }
  return run.result();
}

/** executeGraph with per-node kernels that may be asynchronous; the schedule and the frees are the same. */
export async function executeGraphAsync(g: Graph, feeds: Map<string, Value>, opts: AsyncExecuteOptions): Promise<Map<string, Value>> {
  const run = startRun(g, feeds, opts);
  for (let i = 0; i < run.p.order.length; i++) {
    const t0 = opts.onNode ? performance.now() : 0;
    const { def, opset, attrs } = run.p.ops[i];
    const node = run.p.order[i];
    const kernel = opts.kernelFor?.(node);
    const inputs = run.inputsOf(i);
    let outputs: Value[];
    if (!kernel) outputs = runNode(node, def, opset, attrs, inputs, run.lookup, opts);
    else {
      try {
        outputs = await kernel(inputs);
      } catch (e) {
        throw new ExecutionError(`${nodeLabel(node)} failed: ${(e as Error).message}`, { cause: e });
      }
    }
    run.finish(i, outputs, t0);
  }
  return run.result();
}

function startRun(g: Graph, feeds: Map<string, Value>, opts: ExecuteOptions) {
  const p = prepare(g, opts.opsets);
  const env = new Map<string, Value>(feeds);
  for (const [k, v] of g.initializers) if (!env.has(k)) env.set(k, v);
  const lookup = (name: string): Value | undefined => (env.has(name) ? env.get(name) : opts.outer?.(name));
  const inputsOf = (i: number) => p.order[i].inputs.map((name) => {
    if (!name) return undefined;
    const v = lookup(name);
    if (v === undefined) throw new ExecutionError(`${nodeLabel(p.order[i])}: input '${name}' has no value (no node, initializer or graph input produces it).`);
    return v;
  });
  const finish = (i: number, outputs: Value[], t0: number) => {
    const node = p.order[i];
    const ms = opts.onNode ? performance.now() - t0 : 0;
    node.outputs.forEach((o, k) => {
      if (o) env.set(o, outputs[k] === undefined ? null : outputs[k]);
    });
    opts.onNode?.(node, outputs, ms, t0);
    if (!opts.keepAll) for (const f of p.frees[i]) if (!feeds.has(f)) env.delete(f);
  };
  return { p, lookup, inputsOf, finish, result: () => collect(g, env, lookup, opts) };
}

function collect(g: Graph, env: Map<string, Value>, lookup: (name: string) => Value | undefined, opts: ExecuteOptions): Map<string, Value> {
  if (opts.keepAll) return env;
  const result = new Map<string, Value>();
  for (const o of g.outputs) {
    const v = lookup(o.name);
    if (v === undefined) throw new ExecutionError(`graph '${g.name}': output '${o.name}' was not produced by any node.`);
    result.set(o.name, v);
  }
  return result;
}

function runNode(node: Node, def: OpDef, opset: number, attrs: unknown, inputs: (Value | undefined)[],
  lookup: (name: string) => Value | undefined, opts: ExecuteOptions): Value[] {
  const [minIn, maxIn] = def.inputs;
  let present = inputs.length;
  while (present > 0 && inputs[present - 1] === undefined) present--;
  if (present < minIn || inputs.length > maxIn) {
    throw new ExecutionError(`${nodeLabel(node)}: expects ${minIn === maxIn ? minIn : `${minIn} to ${maxIn === Infinity ? 'any number of' : maxIn}`} inputs, got ${inputs.length}.`);
  }
  const ctx = makeContext(node, opset, attrs, inputs, (graph, subInputs) => {
    const feeds = new Map<string, Value>();
    graph.inputs.forEach((inp, k) => { if (k < subInputs.length) feeds.set(inp.name, subInputs[k]); });
    const out = executeGraph(graph, feeds, { opsets: opts.opsets, outer: lookup });
    return graph.outputs.map((o) => out.get(o.name) as Value);
  });
  const override = opts.kernelOverride?.(node);
  try {
    return override ? override(inputs) : def.run(ctx as KernelContext<never>);
  } catch (e) {
    if (e instanceof KilnError && e.message.includes(nodeLabel(node))) throw e;
    const ins = inputs.map((v, k) => `  input ${k}${node.inputs[k] ? ` '${node.inputs[k]}'` : ''}: ${describeValue(v)}`).join('\n');
    throw new ExecutionError(`${nodeLabel(node)} failed: ${(e as Error).message}\n${ins}`, { cause: e });
  }
}

/** A kernel context over explicit inputs (used by the executor and by fused ops that call other ops' kernels). */
export function makeContext(node: Node, opset: number, attrs: unknown, inputs: (Value | undefined)[],
  runSubgraph: KernelContext<unknown>['runSubgraph'] = () => { throw new ExecutionError(`${nodeLabel(node)}: subgraphs cannot run here`); }): KernelContext<unknown> {
  let seed = (node.attrs.seed?.value as number | undefined) ?? Math.random() * 2 ** 31;
  return {
    node, opset, attrs, inputs,
    numOutputs: node.outputs.length,
    wantsOutput: (i) => !!node.outputs[i],
    tensor(i) {
      const v = inputs[i];
      if (v instanceof TensorData) return v;
      throw new ExecutionError(`${nodeLabel(node)}: input ${i}${node.inputs[i] ? ` '${node.inputs[i]}'` : ''} must be a tensor, got ${describeValue(v)}.`);
    },
    optionalTensor(i) {
      const v = inputs[i];
      if (v === undefined || v === null) return undefined;
      if (v instanceof SequenceValue) throw new ExecutionError(`${nodeLabel(node)}: input ${i} must be a tensor, got a sequence.`);
      return v;
    },
    runSubgraph,
    random() {
      // mulberry32: small, seedable, good enough for Bernoulli/RandomUniform reference semantics
      seed = (seed + 0x6d2b79f5) | 0;
      let t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    },
  };
}

/** Call another op's reference kernel from inside a kernel (fused ops reuse the ONNX kernels this way). */
export function callKernel(node: Node, domain: string, opType: string, opset: number, inputs: (Value | undefined)[],
  attrs: Record<string, import('../ir/graph.js').AttrValue> = {}, numOutputs = 1): Value[] {
  const inner: Node = { name: node.name, opType, domain, inputs: inputs.map((v, i) => (v === undefined ? '' : `in${i}`)), outputs: Array.from({ length: numOutputs }, (_, i) => `out${i}`), attrs };
  const { def } = resolveOp(inner, new Map([[domain, opset]]));
  return def.run(makeContext(inner, opset, parseAttrs(def, inner), inputs) as KernelContext<never>);
}
