// `kiln inspect MODEL.plan`: what a plan holds — device, precision, profiles, memory, and per layer (with
// --layers) its fused ops, tactic, precision, shapes, weights and workspace, as `trtexec --dumpLayerInfo` prints.
import type { PlanHeader } from '../build/plan.js';
import { formatBytes } from './inspect.js';

const shape = (s: (number | string | null)[]) => `[${s.map((d) => d ?? '?').join('x')}]`;

export function formatPlan(h: PlanHeader, layers: boolean): string {
  const lines = [
    `Plan: Kiln ${h.kilnVersion}, format ${h.formatVersion}, built ${h.created} in ${(h.buildMs / 1000).toFixed(2)} s`,
    `Device: ${h.device.backend} — ${h.device.name} (${h.device.arch}/${h.device.platform})`,
    `Precision: ${h.precision}`,
    'Inputs:', ...h.inputs.map((i) => `  ${i.name}: ${i.dtype}${shape(i.shape)}`),
    'Outputs:', ...h.outputs.map((o) => `  ${o.name}: ${o.dtype}${shape(o.shape)}`),
    'Shape profile:',
    ...Object.entries(h.profiles[0] ?? {}).map(([k, p]) => `  ${k}: min ${shape(p.min)} opt ${shape(p.opt)} max ${shape(p.max.map((d) => (d < 0 ? null : d)))}`),
    `Layers: ${h.layers.length} (from ${h.optimizer.nodesBefore} ONNX nodes)`,
    `Memory: weights ${formatBytes(h.memory.weightBytes)}, activation arena ${formatBytes(h.memory.arenaBytes)} per context (lower bound ${formatBytes(h.memory.lowerBound)}), ${h.memory.dynamic} dynamically sized tensors`,
  ];
  if (layers) {
    const rows = h.layers.map((l) => [l.name, l.fused.join('+'), l.tactic, l.precision, l.inputs.map((i) => shape(i.shape)).join(' '),
      l.outputs.map((o) => shape(o.shape)).join(' '), l.weightBytes ? formatBytes(l.weightBytes) : '-', l.workspaceBytes ? formatBytes(l.workspaceBytes) : '-']);
    const head = ['layer', 'ops', 'tactic', 'precision', 'inputs', 'outputs', 'weights', 'workspace'];
    const w = head.map((x, c) => Math.min(48, Math.max(x.length, ...rows.map((r) => r[c].length))));
    const fmt = (r: string[]) => r.map((v, c) => (v.length > w[c] ? `${v.slice(0, w[c] - 1)}…` : v.padEnd(w[c]))).join('  ').trimEnd();
    lines.push('', fmt(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(fmt));
  }
  return lines.join('\n');
}
