// Per-layer profile (`kiln bench --dump-profile/--export-profile`): a separate, profiled pass that times every layer
// through RunHooks.onLayerTime, joined with the plan's layer info (fused ops, tactic, precision). On the CPU the
// layers run as in any steady-state run (one replayed foreign call, traced by the library), so the profile adds up
// to the run; elsewhere each layer is timed on its own.
import type { Engine, ExecutionContext } from '../runtime/engine.js';
import type { Tensor } from '../runtime/tensor.js';
import type { LayerInfo } from '../build/plan.js';
import { stats } from './bench.js';

export interface LayerTime {
  name: string;
  opType: string;
  fused: string[];
  tactic: string;
  precision: string;
  /** summed over all profiled runs */
  timeMs: number;
  averageMs: number;
  medianMs: number;
  /** share of the summed layer time */
  percentage: number;
}

export interface LayerProfile {
  /** profiled runs */
  count: number;
  /** sorted by time, largest first */
  layers: LayerTime[];
  /** mean and median over runs of the summed layer times (ms) */
  totalAverageMs: number;
  totalMedianMs: number;
}

export interface LayerProfileOptions {
  /** At least this many runs (default 10). */
  iterations?: number;
  /** And at least this long, s (default 0). */
  durationS?: number;
  /** Runs before profiling (default 2: the second is the one a CPU engine records for its traced replays). */
  warmUpRuns?: number;
  onProgress?: (elapsedMs: number, totalMs: number, runs: number) => void;
  /** Context to run in (default: a new one). */
  context?: ExecutionContext;
}

/** Run the engine with a timer around every layer; average per run. */
export async function profileLayers(engine: Engine, feeds: Record<string, Tensor>, o: LayerProfileOptions = {}): Promise<LayerProfile> {
  const ctx = o.context ?? engine.createContext();
  for (let i = 0; i < (o.warmUpRuns ?? 2); i++) await ctx.run(feeds);
  const perLayer = new Map<string, number[]>();
  const order: string[] = [];
  const t0 = performance.now();
  const durMs = (o.durationS ?? 0) * 1000;
  let runs = 0;
  const totals: number[] = [];
  while (runs < (o.iterations ?? 10) || performance.now() - t0 < durMs) {
    const seen = new Map<string, number>();
    await ctx.run(feeds, undefined, {
      onLayerTime(node, ms) {
        const key = node.name || `${node.opType}#${seen.size}`;
        seen.set(key, (seen.get(key) ?? 0) + ms);
      },
    });
    totals.push([...seen.values()].reduce((a, b) => a + b, 0));
    for (const [k, ms] of seen) {
      let xs = perLayer.get(k);
      if (!xs) {
        perLayer.set(k, (xs = []));
        order.push(k);
      }
      xs.push(ms);
    }
    runs++;
    o.onProgress?.(performance.now() - t0, durMs, runs);
  }
  const info = new Map<string, LayerInfo>(engine.header.layers.map((l) => [l.name, l]));
  // a layer with no work of its own in the traced runs (a view, a Concat written in place by its producers, the
  // producer of a pair whose one call is timed as the consumer's) is listed at zero
  for (const l of engine.header.layers) {
    if (!perLayer.has(l.name)) {
      perLayer.set(l.name, new Array<number>(runs).fill(0));
      order.push(l.name);
    }
  }
  const total = [...perLayer.values()].reduce((a, xs) => a + xs.reduce((x, y) => x + y, 0), 0);
  const layers = order.map((name) => {
    const xs = perLayer.get(name)!;
    const l = info.get(name);
    const sum = xs.reduce((a, b) => a + b, 0);
    return {
      name, opType: l?.opType ?? '?', fused: l?.fused ?? [], tactic: l?.tactic ?? '?', precision: l?.precision ?? '?',
      timeMs: sum, averageMs: sum / runs, medianMs: stats(xs).median, percentage: total > 0 ? (100 * sum) / total : 0,
    };
  });
  layers.sort((a, b) => b.timeMs - a.timeMs);
  return { count: runs, layers, totalAverageMs: total / runs, totalMedianMs: stats(totals).median };
}

const num = (x: number, d = 4) => (x >= 100 ? x.toFixed(1) : x.toPrecision(d));

/** trtexec's --dumpProfile table (Time, Avg., Median, Time %, Layer) plus Kiln's fused ops and tactic. */
export function formatLayerProfile(p: LayerProfile): string {
  const head = ['Time(ms)', 'Avg.(ms)', 'Median(ms)', 'Time(%)', 'Layer', 'Ops', 'Tactic', 'Precision'];
  const totalTime = p.layers.reduce((a, l) => a + l.timeMs, 0);
  const rows = p.layers.map((l) => [num(l.timeMs), num(l.averageMs), num(l.medianMs), l.percentage.toFixed(1), l.name, l.fused.join('+'), l.tactic, l.precision]);
  rows.push([num(totalTime), num(p.totalAverageMs), num(p.totalMedianMs), '100.0', 'Total', '', '', '']);
  const w = head.map((h, c) => Math.min(48, Math.max(h.length, ...rows.map((r) => r[c].length))));
  const right = new Set([0, 1, 2, 3]);
  const fmt = (r: string[]) => r.map((v, c) => {
    const cell = v.length > w[c] ? `${v.slice(0, w[c] - 1)}…` : v;
    return right.has(c) ? cell.padStart(w[c]) : cell.padEnd(w[c]);
  }).join('  ').trimEnd();
  return [`=== Profile (${p.count} iterations) ===`, fmt(head), ...rows.map(fmt)].join('\n');
}

/** trtexec's --exportProfile JSON: `[{count}, {name, timeMs, averageMs, medianMs, percentage, ...}]`. */
export function layerProfileJson(p: LayerProfile): [{ count: number }, ...LayerTime[]] {
  return [{ count: p.count }, ...p.layers];
}
