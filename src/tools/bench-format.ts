// The text of `kiln bench`: trtexec's prolog and `=== Performance summary ===` block, field for field.
import type { BenchSummary, Stats } from './bench.js';

const num = (x: number) => String(Number(x.toPrecision(6)));

function statLine(label: string, s: Stats): string {
  const pct = Object.entries(s.percentiles).map(([p, v]) => `, percentile(${p}%) = ${num(v)} ms`).join('');
  return `${label}: min = ${num(s.min)} ms, max = ${num(s.max)} ms, mean = ${num(s.mean)} ms, median = ${num(s.median)} ms${pct}`;
}

export function formatBenchSummary(s: BenchSummary): string {
  const device = s.backend === 'cuda' ? 'GPU' : 'Device';
  const items = s.batch > 1 ? ` (${num(s.throughput.itemsPerS)} items/s at batch ${s.batch})` : '';
  const lines = [
    `Device: ${s.backend} — ${s.device}; ${s.streams} stream${s.streams > 1 ? 's' : ''}`,
    `Warmup completed ${s.warmUp.queries} queries over ${num(s.warmUp.ms)} ms`,
    `Timing trace has ${s.queries} queries over ${num(s.totalHostWalltimeS)} s`,
    '',
    '=== Performance summary ===',
    `Throughput: ${num(s.throughput.qps)} qps${items}`,
    statLine('Latency', s.latency),
    statLine('Enqueue Time', s.enqueue),
    ...(s.h2d ? [statLine('H2D Latency', s.h2d)] : []),
    statLine(`${device} Compute Time`, s.compute),
    ...(s.d2h ? [statLine('D2H Latency', s.d2h)] : []),
    `Total Host Walltime: ${num(s.totalHostWalltimeS)} s`,
    `Total ${device} Compute Time: ${num(s.totalComputeTimeS)} s`,
    ...s.warnings,
    ...s.notes.map((n) => `Note: ${n}`),
  ];
  return lines.join('\n');
}
