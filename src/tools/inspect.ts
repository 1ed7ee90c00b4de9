// `kiln inspect MODEL`: a model summary — inputs, outputs, opsets, op histogram, weights, and which nodes Kiln
// cannot run (with the reason).
import type { Graph, Model } from '../ir/graph.js';
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
