// `kiln surgeon` (Polygraphy's `surgeon`): model edits that write standard ONNX (loadable by Kiln and onnxruntime).
//   extract   the subgraph between named tensors, its inputs' types inferred
//   sanitize  fold constants, remove unused nodes and initializers, infer shapes (optionally with new input shapes)
//   insert    a node right before or after a tensor
//   prune     remove nodes by name, reconnecting single-input pass-through nodes
import type { Dim, Model, Node, ValueInfo, ValueType } from '../ir/graph.js';
import { formatType } from '../ir/graph.js';
import type { DType } from '../ir/dtype.js';
import { DTYPES } from '../ir/dtype.js';
import { InputError } from '../ir/errors.js';
import { parseOnnx } from '../onnx/reader.js';
import { serializeOnnx } from '../onnx/writer.js';
import { topoSort } from '../ops/execute.js';
import { resolveOp } from '../ir/schema.js';
import { inferShapes } from '../passes/infer.js';
import { foldConstants } from '../passes/fold.js';
import { eliminateDeadCode, removeNoOps } from '../passes/cleanup.js';
import { GraphView } from '../passes/view.js';
import '../ops/index.js';

/** A deep copy (through the ONNX encoding, so the result is exactly what a file would hold). */
export function cloneModel(m: Model): Model {
  return parseOnnx(serializeOnnx(m), { path: m.path });
}

const allValues = (m: Model) => new Set([
  ...m.graph.inputs.map((i) => i.name), ...m.graph.initializers.keys(), ...m.graph.nodes.flatMap((n) => n.outputs.filter(Boolean)),
]);

function unknownTensor(m: Model, name: string, what: string): InputError {
  const names = [...allValues(m)].filter((v) => !m.graph.initializers.has(v));
  const near = names.filter((v) => v.includes(name) || name.includes(v)).slice(0, 8);
  return new InputError(`${what}: the model has no tensor '${name}'.`, {
    hint: near.length ? `Did you mean ${near.map((x) => `'${x}'`).join(', ')}? (kiln inspect model --show layers lists every tensor)` : 'List tensors with `kiln inspect model FILE --show layers`.',
  });
}

/** `name`, `name:1x3x8x8`, `name:1x3x8x8:float32` or `name:auto:float32` (Polygraphy's extract syntax). */
export interface TensorRequest {
  name: string;
  shape?: Dim[];
  dtype?: DType;
}

export function parseTensorRequests(spec: string | string[] | undefined): TensorRequest[] {
  const parts = (Array.isArray(spec) ? spec : spec ? [spec] : []).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
  return parts.map((p) => {
    const [name, shape, dtype] = p.split(':');
    const r: TensorRequest = { name };
    if (shape && shape !== 'auto') {
      r.shape = shape.split('x').map((d) => (/^\d+$/.test(d) ? Number(d) : d === '?' ? undefined : d));
    }
    if (dtype && dtype !== 'auto') {
      if (!(DTYPES as readonly string[]).includes(dtype)) throw new InputError(`'${p}': unknown type '${dtype}'.`, { hint: `Types: ${DTYPES.join(', ')}.` });
      r.dtype = dtype as DType;
    }
    return r;
  });
}

function typeOf(m: Model, name: string): ValueType {
  const c = m.graph.initializers.get(name);
  if (c) return { kind: 'tensor', dtype: c.dtype, shape: [...c.dims] };
  return m.graph.inputs.find((i) => i.name === name)?.type ?? m.graph.valueInfo.get(name) ?? { kind: 'unknown' };
}

export interface ExtractOptions {
  inputs: (string | TensorRequest)[];
  outputs: (string | TensorRequest)[];
}

/**
 * The subgraph computing `outputs` from `inputs`. Graph inputs the subgraph still needs stay inputs (they are
 * listed in `addedInputs`). Types of the new inputs and outputs come from shape inference unless given.
 */
export function extractSubgraph(model: Model, opts: ExtractOptions): { model: Model; addedInputs: string[] } {
  const m = cloneModel(model);
  inferShapes(m.graph, m.opsets);
  const req = (x: string | TensorRequest): TensorRequest => (typeof x === 'string' ? { name: x } : x);
  const ins = opts.inputs.map(req), outs = opts.outputs.map(req);
  if (!outs.length) throw new InputError('extract: name at least one output tensor (--outputs).');
  const known = allValues(m);
  for (const t of [...ins, ...outs]) if (!known.has(t.name)) throw unknownTensor(m, t.name, 'extract');
  const producer = new Map<string, Node>();
  for (const n of m.graph.nodes) for (const o of n.outputs) if (o) producer.set(o, n);
  const stop = new Set(ins.map((i) => i.name));
  const keep = new Set<Node>();
  const added: string[] = [];
  const stack = outs.map((o) => o.name);
  const seen = new Set<string>();
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    if (stop.has(v) || m.graph.initializers.has(v)) continue;
    const p = producer.get(v);
    if (!p) {
      if (m.graph.inputs.some((i) => i.name === v)) added.push(v);
      continue;
    }
    keep.add(p);
    for (const i of p.inputs) if (i) stack.push(i);
    for (const a of Object.values(p.attrs)) {
      const subs = a.type === 'graph' ? [a.value] : a.type === 'graphs' ? a.value : [];
      for (const s of subs) for (const sn of s.nodes) for (const i of sn.inputs) if (i && !s.nodes.some((x) => x.outputs.includes(i))) stack.push(i);
    }
  }
  const unused = ins.filter((i) => !seen.has(i.name));
  if (unused.length) {
    throw new InputError(`extract: input${unused.length > 1 ? 's' : ''} ${unused.map((i) => `'${i.name}'`).join(', ')} do not feed the outputs ${outs.map((o) => `'${o.name}'`).join(', ')}.`, {
      hint: 'Choose inputs upstream of the outputs, or leave them out.',
    });
  }
  const info = (t: TensorRequest): ValueInfo => {
    const inferred = typeOf(m, t.name);
    if (!t.shape && !t.dtype) return { name: t.name, type: inferred };
    const dtype = t.dtype ?? (inferred.kind === 'tensor' ? inferred.dtype : undefined);
    if (!dtype) throw new InputError(`extract: the type of '${t.name}' could not be inferred; give it, e.g. ${t.name}:auto:float32.`);
    return { name: t.name, type: { kind: 'tensor', dtype, shape: t.shape ?? (inferred.kind === 'tensor' ? inferred.shape : undefined) } };
  };
  const inputs = [...ins.map(info), ...added.map((a) => m.graph.inputs.find((i) => i.name === a)!)];
  for (const i of inputs) {
    if (i.type.kind === 'unknown') throw new InputError(`extract: the type of input '${i.name}' could not be inferred; give it, e.g. ${i.name}:1x16:float32.`);
  }
  const nodes = m.graph.nodes.filter((n) => keep.has(n));
  const reads = new Set(nodes.flatMap((n) => n.inputs));
  m.graph = {
    ...m.graph, nodes, inputs, outputs: outs.map(info),
    initializers: new Map([...m.graph.initializers].filter(([k]) => reads.has(k) || outs.some((o) => o.name === k))),
    valueInfo: new Map(),
  };
  inferShapes(m.graph, m.opsets);
  return { model: m, addedInputs: added };
}

export interface SanitizeOptions {
  /** Fold constant subgraphs (default true). */
  foldConstants?: boolean;
  /** New shapes for graph inputs (e.g. fix a dynamic batch), which lets shape computations fold too. */
  overrideInputShapes?: Record<string, Dim[]>;
  /** Also remove no-op nodes (Identity, identity Transpose/Reshape...). Default true. */
  removeNoOps?: boolean;
  /** Maximum fold/clean-up rounds (default 10). */
  passes?: number;
}

export interface SanitizeReport {
  nodesBefore: number;
  nodesAfter: number;
  folded: number;
  removed: number;
  initializersBefore: number;
  initializersAfter: number;
}

/** Fold constants, drop unused nodes and initializers, infer shapes. Only standard ONNX ops are produced. */
export function sanitizeModel(model: Model, opts: SanitizeOptions = {}): { model: Model; report: SanitizeReport } {
  const m = cloneModel(model);
  const g = m.graph;
  const before = { nodes: g.nodes.length, inits: g.initializers.size };
  for (const [name, shape] of Object.entries(opts.overrideInputShapes ?? {})) {
    const inp = g.inputs.find((i) => i.name === name && !g.initializers.has(name));
    if (!inp) throw new InputError(`--override-input-shapes: '${name}' is not an input. Inputs: ${g.inputs.filter((i) => !g.initializers.has(i.name)).map((i) => i.name).join(', ')}.`);
    if (inp.type.kind !== 'tensor') throw new InputError(`--override-input-shapes: input '${name}' is ${formatType(inp.type)}, not a tensor.`);
    if (inp.type.shape && inp.type.shape.length !== shape.length) {
      throw new InputError(`--override-input-shapes: '${name}' has rank ${inp.type.shape.length} ([${inp.type.shape.map((d) => d ?? '?').join(', ')}]), the override has rank ${shape.length}.`);
    }
    inp.type = { ...inp.type, shape: [...shape] };
  }
  const v = new GraphView(g, m.opsets);
  let folded = 0, removed = 0;
  for (let round = 0; round < (opts.passes ?? 10); round++) {
    g.valueInfo = new Map();
    inferShapes(g, m.opsets);
    v.reindex();
    const f = opts.foldConstants === false ? 0 : foldConstants(v);
    const r = (opts.removeNoOps === false ? 0 : removeNoOps(v)) + eliminateDeadCode(v);
    folded += f;
    removed += r;
    if (!f && !r) break;
  }
  v.pruneInitializers();
  g.valueInfo = new Map();
  inferShapes(g, m.opsets);
  // outputs that folded into constants keep a producer: ONNX graph outputs must be computed by the graph
  for (const o of g.outputs) {
    if (g.initializers.has(o.name) && !g.nodes.some((n) => n.outputs.includes(o.name))) {
      const c = `${o.name}__const`;
      g.initializers.set(c, g.initializers.get(o.name)!);
      g.initializers.delete(o.name);
      g.nodes.push({ name: `${o.name}/identity`, opType: 'Identity', domain: '', inputs: [c], outputs: [o.name], attrs: {} });
    }
    const t = g.valueInfo.get(o.name);
    if (o.type.kind !== 'tensor' && t) o.type = t;
  }
  g.nodes = topoSort(g, () => true);
  return {
    model: m,
    report: { nodesBefore: before.nodes, nodesAfter: g.nodes.length, folded, removed, initializersBefore: before.inits, initializersAfter: g.initializers.size },
  };
}

export interface InsertOptions {
  op: string;
  /** Name of the new node (default: derived from the op and tensor). */
  name?: string;
  domain?: string;
  attrs?: Record<string, number | string | number[] | string[]>;
  /** The new node reads this tensor; its consumers (and a graph output of that name) read the node's output. */
  after?: string;
  /** The new node writes this tensor; its producer writes a new tensor that the node reads. */
  before?: string;
  /** Further inputs of the new node (tensors or initializers already in the model). */
  extraInputs?: string[];
}

/** Insert one node right after (or before) a tensor. */
export function insertNode(model: Model, opts: InsertOptions): Model {
  const m = cloneModel(model);
  const g = m.graph;
  const target = opts.after ?? opts.before;
  if (!target || (opts.after && opts.before)) throw new InputError('insert: give exactly one of --after TENSOR and --before TENSOR.');
  if (!allValues(m).has(target)) throw unknownTensor(m, target, 'insert');
  for (const x of opts.extraInputs ?? []) if (!allValues(m).has(x)) throw unknownTensor(m, x, 'insert');
  const name = opts.name ?? `${opts.op.toLowerCase()}_${target}`;
  if (g.nodes.some((n) => n.name === name)) throw new InputError(`insert: a node named '${name}' exists already; choose another with --name.`);
  const attrs: Node['attrs'] = {};
  for (const [k, val] of Object.entries(opts.attrs ?? {})) {
    if (typeof val === 'number') attrs[k] = Number.isInteger(val) ? { type: 'int', value: val } : { type: 'float', value: val };
    else if (typeof val === 'string') attrs[k] = { type: 'string', value: val };
    else if (val.every((x) => typeof x === 'string')) attrs[k] = { type: 'strings', value: val as string[] };
    else attrs[k] = (val as number[]).every(Number.isInteger) ? { type: 'ints', value: val as number[] } : { type: 'floats', value: val as number[] };
  }
  const node: Node = { name, opType: opts.op, domain: opts.domain ?? '', inputs: [], outputs: [], attrs };
  resolveOp(node, m.opsets); // fails early, naming the op, when Kiln does not know it
  const producer = g.nodes.find((n) => n.outputs.includes(target));
  // after a graph output, the output keeps its name: the new node writes it, as with --before
  const writeTarget = opts.before !== undefined || (g.outputs.some((o) => o.name === target) && !!producer);
  if (writeTarget) {
    if (!producer) {
      throw new InputError(`insert --before '${target}': it is a graph input or initializer, which no node produces.`, { hint: `Use --after ${target}.` });
    }
    const inner = `${target}__pre_${name}`;
    producer.outputs = producer.outputs.map((o) => (o === target ? inner : o));
    node.inputs = [inner, ...(opts.extraInputs ?? [])];
    node.outputs = [target];
  } else {
    const out = `${target}__${name}`;
    for (const n of g.nodes) n.inputs = n.inputs.map((i) => (i === target ? out : i));
    for (const o of g.outputs) if (o.name === target) o.name = out;
    node.inputs = [target, ...(opts.extraInputs ?? [])];
    node.outputs = [out];
  }
  g.nodes.push(node);
  g.nodes = topoSort(g, () => true);
  g.valueInfo = new Map();
  inferShapes(g, m.opsets);
  return m;
}

function renameValue(m: Model, from: string, to: string): void {
  for (const n of m.graph.nodes) {
    n.inputs = n.inputs.map((i) => (i === from ? to : i));
    n.outputs = n.outputs.map((o) => (o === from ? to : o));
  }
}

/** Remove nodes by name. A removed node must pass one data input through: its consumers then read that input. */
export function pruneNodes(model: Model, names: string[]): Model {
  const m = cloneModel(model);
  const g = m.graph;
  for (const name of names) {
    const n = g.nodes.find((x) => x.name === name);
    if (!n) {
      const near = g.nodes.map((x) => x.name).filter((x) => x.includes(name)).slice(0, 8);
      throw new InputError(`prune: the model has no node named '${name}'.`, { hint: near.length ? `Did you mean ${near.map((x) => `'${x}'`).join(', ')}?` : 'List nodes with `kiln inspect model FILE --show layers`.' });
    }
    const data = n.inputs.filter((i) => i && !g.initializers.has(i));
    const outs = n.outputs.filter(Boolean);
    if (data.length !== 1 || outs.length !== 1) {
      throw new InputError(`prune: node '${name}' (${n.opType}) has ${data.length} non-constant inputs and ${outs.length} outputs; only nodes with one of each can be removed and bypassed.`, {
        hint: 'Extract the part you want with `kiln surgeon extract` instead.',
      });
    }
    const [src] = data, [dst] = outs;
    g.nodes = g.nodes.filter((x) => x !== n);
    if (g.outputs.some((o) => o.name === dst)) {
      // keep the output's name: whoever produced the input now writes the output directly
      const p = g.nodes.find((x) => x.outputs.includes(src));
      if (p && !g.outputs.some((o) => o.name === src)) renameValue(m, src, dst);
      else g.nodes.push({ name: `${name}/bypass`, opType: 'Identity', domain: '', inputs: [src], outputs: [dst], attrs: {} });
    } else for (const x of g.nodes) x.inputs = x.inputs.map((i) => (i === dst ? src : i));
  }
  const v = new GraphView(g, m.opsets);
  eliminateDeadCode(v);
  g.valueInfo = new Map();
  inferShapes(g, m.opsets);
  for (const o of g.outputs) {
    const t = g.valueInfo.get(o.name);
    if (t && o.type.kind === 'tensor' && t.kind === 'tensor' && t.dtype !== o.type.dtype) o.type = t;
  }
  return m;
}
