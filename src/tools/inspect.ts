// `kiln inspect MODEL`: a model summary — inputs, outputs, opsets, op histogram, weights, and which nodes Kiln
// cannot run (with the reason).
import type { AttrValue, Graph, Model, Node } from '../ir/graph.js';
import type { TensorData } from '../ir/tensor.js';
import { inferShapes } from '../passes/infer.js';
import { topoSort } from '../ops/execute.js';
import { BACKENDS } from '../backends/index.js';
import { formatType, nodeLabel } from '../ir/graph.js';
import { resolveOp } from '../ir/schema.js';
import { dtypeBits } from '../ir/dtype.js';
import '../ops/index.js';

export interface ModelSummary {
  path?: string;
  irVersion: number;
  producer?: string;
  opsets: Record<string, number>;
  inputs: { name: string; type: string }[];
  outputs: { name: string; type: string }[];
  nodes: number;
  opHistogram: Record<string, number>;
  initializers: number;
  initializerBytes: number;
  unsupported: { node: string; opType: string; reason: string }[];
}

function walk(g: Graph, visit: (g: Graph) => void): void {
  visit(g);
  for (const n of g.nodes) {
    for (const a of Object.values(n.attrs)) {
      if (a.type === 'graph') walk(a.value, visit);
      if (a.type === 'graphs') a.value.forEach((s) => walk(s, visit));
    }
  }
}

export function inspectModel(m: Model): ModelSummary {
  const hist: Record<string, number> = {};
  const unsupported: ModelSummary['unsupported'] = [];
  let nodes = 0, inits = 0, bytes = 0;
  walk(m.graph, (g) => {
    for (const n of g.nodes) {
      nodes++;
      const key = n.domain ? `${n.domain}:${n.opType}` : n.opType;
      hist[key] = (hist[key] ?? 0) + 1;
      try {
        resolveOp(n, m.opsets);
      } catch (e) {
        unsupported.push({ node: nodeLabel(n), opType: key, reason: (e as Error).message.split('\n')[0].replace(`${nodeLabel(n)}: `, '') });
      }
    }
    for (const t of g.initializers.values()) {
      inits++;
      bytes += t.dtype === 'string' ? (t.data as string[]).reduce((a, s) => a + s.length, 0) : Math.ceil((t.size * dtypeBits(t.dtype)) / 8);
    }
  });
  const initNames = new Set(m.graph.initializers.keys());
  return {
    path: m.path,
    irVersion: m.irVersion,
    producer: [m.producerName, m.producerVersion].filter(Boolean).join(' ') || undefined,
    opsets: Object.fromEntries([...m.opsets].map(([d, v]) => [d || 'ai.onnx', v])),
    inputs: m.graph.inputs.filter((i) => !initNames.has(i.name)).map((i) => ({ name: i.name, type: formatType(i.type) })),
    outputs: m.graph.outputs.map((o) => ({ name: o.name, type: formatType(o.type) })),
    nodes,
    opHistogram: Object.fromEntries(Object.entries(hist).sort((a, b) => b[1] - a[1])),
    initializers: inits,
    initializerBytes: bytes,
    unsupported,
  };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export function formatSummary(s: ModelSummary): string {
  const lines: string[] = [];
  lines.push(`Model: ${s.path ?? '(bytes)'}`);
  lines.push(`  IR version ${s.irVersion}${s.producer ? `, produced by ${s.producer}` : ''}`);
  lines.push(`  Opsets: ${Object.entries(s.opsets).map(([d, v]) => `${d} ${v}`).join(', ')}`);
  lines.push('Inputs:');
  for (const i of s.inputs) lines.push(`  ${i.name}: ${i.type}`);
  lines.push('Outputs:');
  for (const o of s.outputs) lines.push(`  ${o.name}: ${o.type}`);
  lines.push(`Nodes: ${s.nodes}`);
  for (const [op, n] of Object.entries(s.opHistogram)) lines.push(`  ${op.padEnd(28)} ${n}`);
  lines.push(`Initializers: ${s.initializers} (${formatBytes(s.initializerBytes)})`);
  if (s.unsupported.length) {
    lines.push(`Unsupported by Kiln (${s.unsupported.length}):`);
    for (const u of s.unsupported) lines.push(`  ${u.node}: ${u.reason}`);
  } else lines.push('Every node is supported by Kiln.');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// `kiln inspect model --show layers,attrs,weights`, `inspect capability`, `inspect data`

export interface ShowOptions {
  layers?: boolean;
  attrs?: boolean;
  weights?: boolean;
}

export interface LayerRow {
  name: string;
  opType: string;
  inputs: { name: string; type: string }[];
  outputs: { name: string; type: string }[];
  attrs?: Record<string, string>;
}

function attrText(a: AttrValue): string {
  switch (a.type) {
    case 'tensor': case 'sparse_tensor': return `tensor ${a.value.dtype}[${a.value.dims.join(',')}]`;
    case 'graph': return `graph '${a.value.name}' (${a.value.nodes.length} nodes)`;
    case 'graphs': return `${a.value.length} graphs`;
    case 'tensors': return `${a.value.length} tensors`;
    case 'type': return formatType(a.value);
    case 'types': return a.value.map(formatType).join(', ');
    default: return JSON.stringify(a.value);
  }
}

/** Every node in topological order with its tensors' inferred types (and attributes). */
export function modelLayers(m: Model, attrs = false): LayerRow[] {
  const g = m.graph;
  const types = new Map(g.valueInfo);
  try {
    const copy: Graph = { ...g, valueInfo: new Map(g.valueInfo) };
    inferShapes(copy, m.opsets);
    for (const [k, t] of copy.valueInfo) types.set(k, t);
  } catch {
    // a model Kiln cannot infer still lists its layers, with unknown types
  }
  const typeOf = (x: string) => {
    const c = g.initializers.get(x);
    if (c) return `${c.dtype}[${c.dims.join(',')}] (weight)`;
    return formatType(g.inputs.find((i) => i.name === x)?.type ?? types.get(x));
  };
  let order: Node[];
  try {
    order = topoSort(g, () => true);
  } catch {
    order = g.nodes;
  }
  return order.map((n) => ({
    name: n.name, opType: n.domain ? `${n.domain}:${n.opType}` : n.opType,
    inputs: n.inputs.filter(Boolean).map((x) => ({ name: x, type: typeOf(x) })),
    outputs: n.outputs.filter(Boolean).map((x) => ({ name: x, type: typeOf(x) })),
    ...(attrs ? { attrs: Object.fromEntries(Object.entries(n.attrs).map(([k, a]) => [k, attrText(a)])) } : {}),
  }));
}

export interface WeightRow {
  name: string;
  dtype: string;
  shape: number[];
  bytes: number;
  stats?: DataSummary['stats'];
}

export function modelWeights(m: Model): WeightRow[] {
  return [...m.graph.initializers].map(([name, t]) => ({
    name, dtype: t.dtype, shape: [...t.dims],
    bytes: t.dtype === 'string' ? 0 : Math.ceil((t.size * dtypeBits(t.dtype)) / 8),
    stats: summarizeTensor(name, t).stats,
  }));
}

export function formatModelDetail(m: Model, show: ShowOptions): string {
  const lines = [formatSummary(inspectModel(m))];
  if (show.layers || show.attrs) {
    lines.push('', 'Layers (topological order):');
    for (const l of modelLayers(m, show.attrs)) {
      lines.push(`  ${l.name || '(unnamed)'} (${l.opType})`);
      for (const i of l.inputs) lines.push(`    in  ${i.name}: ${i.type}`);
      for (const o of l.outputs) lines.push(`    out ${o.name}: ${o.type}`);
      for (const [k, v] of Object.entries(l.attrs ?? {})) lines.push(`    ${k} = ${v.length > 100 ? `${v.slice(0, 99)}…` : v}`);
    }
  }
  if (show.weights) {
    lines.push('', 'Weights:');
    for (const w of modelWeights(m)) {
      const s = w.stats;
      lines.push(`  ${w.name}: ${w.dtype}[${w.shape.join(',')}] ${formatBytes(w.bytes)}${s ? `  min ${s.min.toPrecision(4)} max ${s.max.toPrecision(4)} mean ${s.mean.toPrecision(4)} std ${s.std.toPrecision(4)}` : ''}`);
    }
  }
  return lines.join('\n');
}

export type CapabilityStatus = 'supported' | 'fallback' | 'unsupported' | 'unavailable';

export interface CapabilityRow {
  op: string;
  count: number;
  nodes: string[];
  /** per backend: status and why */
  providers: Record<string, { status: CapabilityStatus; detail?: string }>;
}

/**
 * Which ops each backend can run, from the op registry (the reference kernels every CPU layer can fall back to)
 * and each backend's availability and tactics.
 */
export function inspectCapability(m: Model): { backends: { name: string; available: boolean; reason?: string }[]; ops: CapabilityRow[] } {
  const rows = new Map<string, CapabilityRow>();
  const backends = BACKENDS.map((b) => ({ b, a: b.availability() }));
  for (const n of m.graph.nodes) {
    const op = n.domain ? `${n.domain}:${n.opType}` : n.opType;
    let row = rows.get(op);
    if (!row) {
      row = { op, count: 0, nodes: [], providers: {} };
      let reference: string | undefined;
      try {
        resolveOp(n, m.opsets);
      } catch (e) {
        reference = (e as Error).message.split('\n')[0].replace(`${nodeLabel(n)}: `, '');
      }
      for (const { b, a } of backends) {
        if (!a.ok) row.providers[b.name] = { status: 'unavailable', detail: a.reason };
        else if (reference) row.providers[b.name] = { status: 'unsupported', detail: reference };
        else {
          let tactics: string[];
          try {
            tactics = b.tactics(n, m).map((t) => t.name);
          } catch (e) {
            row.providers[b.name] = { status: 'unsupported', detail: (e as Error).message.split('\n')[0] };
            continue;
          }
          row.providers[b.name] = tactics.length
            ? { status: 'supported', detail: `tactics: ${tactics.join(', ')}` }
            : { status: 'fallback', detail: 'no tactic on this backend; runs on the CPU reference kernel' };
        }
      }
      rows.set(op, row);
    }
    row.count++;
    if (row.nodes.length < 5) row.nodes.push(n.name);
  }
  return { backends: backends.map(({ b, a }) => ({ name: b.name, available: a.ok, reason: a.reason })), ops: [...rows.values()].sort((a, b) => b.count - a.count) };
}

export function formatCapability(c: ReturnType<typeof inspectCapability>): string {
  const lines = ['Backends:'];
  for (const b of c.backends) lines.push(`  ${b.name.padEnd(6)} ${b.available ? 'available' : `unavailable: ${b.reason?.split('\n')[0]}`}`);
  const names = c.backends.map((b) => b.name);
  const opW = Math.max(2, ...c.ops.map((o) => o.op.length));
  lines.push('', `${'op'.padEnd(opW)}  count  ${names.map((n) => n.padEnd(12)).join('  ')}`);
  for (const o of c.ops) lines.push(`${o.op.padEnd(opW)}  ${String(o.count).padStart(5)}  ${names.map((n) => o.providers[n].status.padEnd(12)).join('  ')}`);
  const notes = c.ops.flatMap((o) => names.filter((n) => ['unsupported', 'fallback'].includes(o.providers[n].status)).map((n) => `  ${o.op} on ${n}: ${o.providers[n].status} — ${o.providers[n].detail}`));
  if (notes.length) lines.push('', 'Why not:', ...notes);
  const cpuOk = c.ops.every((o) => o.providers.cpu?.status === 'supported');
  lines.push('', cpuOk ? 'Every op of the model runs on cpu.' : 'Some ops cannot run on cpu (see above).');
  return lines.join('\n');
}

export interface DataSummary {
  name: string;
  dtype: string;
  shape: number[];
  stats?: { min: number; max: number; mean: number; std: number; nan: number; inf: number };
  histogram?: { lo: number; hi: number; counts: number[] };
}

export function summarizeTensor(name: string, t: TensorData): DataSummary {
  const s: DataSummary = { name, dtype: t.dtype, shape: [...t.dims] };
  if (t.dtype === 'string' || !t.size) return s;
  const v = t.toFloat64();
  let min = Infinity, max = -Infinity, sum = 0, sq = 0, n = 0, nan = 0, inf = 0;
  for (const x of v) {
    if (Number.isNaN(x)) { nan++; continue; }
    if (!Number.isFinite(x)) { inf++; continue; }
    if (x < min) min = x;
    if (x > max) max = x;
    sum += x; sq += x * x; n++;
  }
  const mean = n ? sum / n : NaN;
  s.stats = { min, max, mean, std: n ? Math.sqrt(Math.max(0, sq / n - mean * mean)) : NaN, nan, inf };
  const counts = new Array<number>(10).fill(0);
  const w = (max - min) / 10;
  for (const x of v) if (Number.isFinite(x)) counts[w > 0 ? Math.min(9, Math.floor((x - min) / w)) : 0]++;
  s.histogram = { lo: min, hi: max, counts };
  return s;
}

export function formatDataSummaries(list: DataSummary[]): string {
  const lines: string[] = [];
  for (const d of list) {
    lines.push(`${d.name}: ${d.dtype}[${d.shape.join(', ')}]`);
    const s = d.stats;
    if (!s) continue;
    const f = (x: number) => Number(x.toPrecision(6)).toString();
    lines.push(`  min ${f(s.min)}, max ${f(s.max)}, mean ${f(s.mean)}, std ${f(s.std)}${s.nan ? `, ${s.nan} NaN` : ''}${s.inf ? `, ${s.inf} infinite` : ''}`);
    const h = d.histogram!;
    const top = Math.max(...h.counts);
    const w = (h.hi - h.lo) / h.counts.length;
    h.counts.forEach((c, i) => lines.push(`  [${f(h.lo + i * w)}, ${f(h.lo + (i + 1) * w)})`.padEnd(34) + `${String(c).padStart(8)} | ${'#'.repeat(top ? Math.round((c / top) * 30) : 0)}`));
  }
  return lines.join('\n');
}
