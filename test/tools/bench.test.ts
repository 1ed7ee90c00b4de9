// `kiln bench`: the summary's fields and their relations, inputs, warnings, the per-layer profile, and the CLI's JSON
// outputs (--json, --export-times, --export-profile). Durations are kept short; nothing asserts a speed.
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import type { Tensor } from '../../src/runtime/tensor.js';
import { TensorData } from '../../src/ir/tensor.js';
import { encodeNpy } from '../../src/tools/npy.js';
import { bench, benchInputs, benchWarnings, engineInputs, stats, type BenchSummary, type IterationTimes, type Stats } from '../../src/tools/bench.js';
import { formatBenchSummary } from '../../src/tools/bench-format.js';
import { formatLayerProfile, layerProfileJson, profileLayers } from '../../src/tools/bench-layers.js';
import { tinyCnn } from '../../bench/models/zoo.js';
import { NativeLibrary } from '../../src/backends/cpu/native.js';
import { findCompiler } from '../../src/backends/cpu/compiler.js';

const exec = promisify(execFile);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const BATCH = 8;
let engine: Engine;
let feeds: Record<string, Tensor>;
beforeAll(async () => {
  engine = await Engine.load(await build(tinyCnn(), { shapes: { input: [BATCH, 3, 32, 32] } }));
  feeds = benchInputs(engineInputs(engine), { seed: 3 });
});
afterAll(() => engine?.dispose());

const SHORT = { warmUpMs: 30, durationS: 0.25, iterations: 5 };
const TIME_KEYS = ['startEnqMs', 'endEnqMs', 'startH2dMs', 'endH2dMs', 'startComputeMs', 'endComputeMs', 'startD2hMs', 'endD2hMs', 'h2dMs', 'computeMs', 'd2hMs', 'latencyMs'];

function expectOrdered(s: Stats, percentiles: string[]) {
  expect(s.min).toBeLessThanOrEqual(s.median);
  expect(s.min).toBeLessThanOrEqual(s.mean);
  expect(s.mean).toBeLessThanOrEqual(s.max);
  expect(Object.keys(s.percentiles)).toEqual(percentiles);
  let prev = s.min;
  for (const p of percentiles) {
    expect(s.percentiles[p]).toBeGreaterThanOrEqual(prev);
    prev = s.percentiles[p];
  }
  expect(s.median).toBeLessThanOrEqual(s.percentiles['99']);
  expect(prev).toBeLessThanOrEqual(s.max);
}

function expectTimesSchema(times: IterationTimes[]) {
  for (const t of times) {
    expect(Object.keys(t).sort()).toEqual([...TIME_KEYS].sort());
    for (const k of TIME_KEYS) expect(Number.isFinite((t as unknown as Record<string, number>)[k])).toBe(true);
    // one inference's phases follow each other
    expect(t.startEnqMs).toBeLessThanOrEqual(t.startH2dMs);
    expect(t.endH2dMs).toBeLessThanOrEqual(t.startComputeMs);
    expect(t.endComputeMs).toBeLessThanOrEqual(t.startD2hMs);
    expect(t.startH2dMs).toBeLessThanOrEqual(t.endH2dMs);
    expect(t.startD2hMs).toBeLessThanOrEqual(t.endD2hMs);
    expect(t.computeMs).toBeCloseTo(t.endComputeMs - t.startComputeMs, 6);
    expect(t.h2dMs).toBeCloseTo(t.endH2dMs - t.startH2dMs, 6);
    expect(t.d2hMs).toBeCloseTo(t.endD2hMs - t.startD2hMs, 6);
  }
}

describe('bench', () => {
  it('summarizes a timed run: fields, orderings, walltime, throughput', async () => {
    const { summary: s, times } = await bench(engine, feeds, { ...SHORT, percentiles: [50, 90, 99] });
    expect(s.backend).toBe('cpu');
    expect(s.batch).toBe(BATCH);
    expect(s.queries).toBe(times.length);
    expect(s.queries).toBeGreaterThanOrEqual(SHORT.iterations);
    expect(s.warmUp.queries).toBeGreaterThan(0);
    expect(s.warmUp.ms).toBeGreaterThanOrEqual(SHORT.warmUpMs);
    expect(s.totalHostWalltimeS).toBeGreaterThanOrEqual(SHORT.durationS);
    for (const st of [s.latency, s.enqueue, s.h2d!, s.compute, s.d2h!]) expectOrdered(st, ['50', '90', '99']);
    for (const st of [s.latency, s.compute]) expect(st.percentiles['50']).toBeLessThanOrEqual(st.median);
    expect(s.throughput.qps * s.totalHostWalltimeS).toBeCloseTo(s.queries, 6);
    expect(s.throughput.itemsPerS).toBeCloseTo(s.throughput.qps * BATCH, 6);
    expect(s.totalComputeTimeS).toBeCloseTo(times.reduce((a, t) => a + t.computeMs, 0) / 1000, 9);
    // one stream: queries never overlap, so the queries in flight average at most 1 (Little's law)
    const inFlight = (s.throughput.qps * s.latency.mean) / 1000;
    expect(inFlight).toBeLessThanOrEqual(1.0001);
    expect(inFlight).toBeGreaterThan(0.5);
    // latency covers the three phases
    for (const t of times) expect(t.latencyMs).toBeGreaterThanOrEqual(t.h2dMs + t.computeMs + t.d2hMs - 1e-9);
    // where compute happens inside enqueue, the summary says so instead of warning about enqueue-bound throughput
    expect(s.synchronousEnqueue).toBe(times.every((t) => t.endEnqMs >= t.endComputeMs));
    expect(/Enqueue Time includes Device Compute Time/.test(s.notes.join('\n'))).toBe(s.synchronousEnqueue);
    if (s.synchronousEnqueue) expect(s.warnings.join('\n')).not.toMatch(/bound by Enqueue Time/);
    expectTimesSchema(times);
    expect(times[0].startEnqMs).toBeGreaterThanOrEqual(0);
    expect(times.at(-1)!.endD2hMs).toBeLessThanOrEqual(s.totalHostWalltimeS * 1000 + 1e-6);
  });

  it('runs several contexts of one engine: queries in flight stay within the number of streams', async () => {
    const streams = 3;
    const { summary: s, times } = await bench(engine, feeds, { ...SHORT, streams });
    expect(s.streams).toBe(streams);
    expect(s.queries).toBeGreaterThanOrEqual(SHORT.iterations);
    const inFlight = (s.throughput.qps * s.latency.mean) / 1000;
    expect(inFlight).toBeLessThanOrEqual(streams * 1.0001);
    expect(inFlight).toBeGreaterThan(0.5);
    // at no moment are more queries in flight than there are streams
    const edges = times.flatMap((t) => [[t.startEnqMs, 1], [t.endD2hMs, -1]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let open = 0, most = 0;
    for (const [, d] of edges) most = Math.max(most, (open += d));
    expect(most).toBeLessThanOrEqual(streams);
    expect(/3 streams share one thread/.test(s.warnings.join('\n'))).toBe(s.synchronousEnqueue);
  });

  it('--no-data-transfers leaves H2D/D2H out of the summary and the latency', async () => {
    const { summary: s, times } = await bench(engine, feeds, { ...SHORT, dataTransfers: false });
    expect(s.h2d).toBeUndefined();
    expect(s.d2h).toBeUndefined();
    for (const t of times) expect(t.latencyMs).toBeCloseTo(t.computeMs, 9);
    const text = formatBenchSummary(s);
    expect(text).not.toMatch(/H2D Latency|D2H Latency/);
    expect(text).toMatch(/no-data-transfers/);
  });

  it('prints trtexec\'s summary block', async () => {
    const { summary: s } = await bench(engine, feeds, SHORT);
    const text = formatBenchSummary(s);
    const lines = text.split('\n');
    const at = lines.indexOf('=== Performance summary ===');
    expect(at).toBeGreaterThan(0);
    expect(lines[at + 1]).toMatch(/^Throughput: [\d.e+-]+ qps \([\d.e+-]+ items\/s at batch 8\)$/);
    const labels = ['Latency', 'Enqueue Time', 'H2D Latency', 'Device Compute Time', 'D2H Latency'];
    labels.forEach((l, i) => expect(lines[at + 2 + i]).toMatch(new RegExp(`^${l}: min = [\\d.e+-]+ ms, max = [\\d.e+-]+ ms, mean = [\\d.e+-]+ ms, median = [\\d.e+-]+ ms, percentile\\(90%\\) = [\\d.e+-]+ ms, percentile\\(95%\\) = [\\d.e+-]+ ms, percentile\\(99%\\) = [\\d.e+-]+ ms$`)));
    expect(lines[at + 7]).toMatch(/^Total Host Walltime: [\d.e+-]+ s$/);
    expect(lines[at + 8]).toMatch(/^Total Device Compute Time: [\d.e+-]+ s$/);
    expect(text).toMatch(/Warmup completed \d+ queries over [\d.]+ ms/);
    expect(text).toMatch(/Timing trace has \d+ queries over [\d.]+ s/);
  });

  it('warns like trtexec: enqueue-bound, transfer-bound, unstable', () => {
    const st = (median: number, cov = 0): Stats => ({ min: median, max: median, mean: median, median, percentiles: {}, stdDev: cov * median, cov });
    const base: BenchSummary = {
      backend: 'cuda', device: 'test', batch: 1, streams: 1, queries: 10, warmUp: { queries: 1, ms: 1 },
      options: { warmUpMs: 1, durationS: 1, iterations: 1, dataTransfers: true, percentiles: [], spinWait: false },
      throughput: { qps: 1, itemsPerS: 1 }, latency: st(3), enqueue: st(0.1), h2d: st(0.1), compute: st(1), d2h: st(0.1),
      totalHostWalltimeS: 1, totalComputeTimeS: 1, synchronousEnqueue: false, warnings: [], notes: [],
    };
    expect(benchWarnings(base)).toEqual([]);
    expect(benchWarnings({ ...base, enqueue: st(0.9) }).join('\n')).toMatch(/bound by Enqueue Time rather than GPU Compute Time/);
    expect(benchWarnings({ ...base, enqueue: st(5), synchronousEnqueue: true })).toEqual([]);
    expect(benchWarnings({ ...base, h2d: st(2) }).join('\n')).toMatch(/host-to-device transfers[\s\S]*--no-data-transfers/);
    expect(benchWarnings({ ...base, d2h: st(1) }).join('\n')).toMatch(/device-to-host transfers/);
    expect(benchWarnings({ ...base, compute: st(1, 0.03) }).join('\n')).toMatch(/coefficient of variance = 3\.000%: results may be unstable[\s\S]*--use-spin-wait/);
    expect(benchWarnings({ ...base, compute: st(1, 0.02) })).toEqual([]);
  });

  it('computes statistics by nearest rank', () => {
    const s = stats([5, 1, 4, 2, 3, 6, 7, 8, 9, 10], [90, 95, 99, 100]);
    expect(s).toMatchObject({ min: 1, max: 10, mean: 5.5, median: 5.5, percentiles: { 90: 9, 95: 10, 99: 10, 100: 10 } });
    expect(s.cov).toBeCloseTo(Math.sqrt(8.25) / 5.5, 12);
    expect(() => stats([])).toThrow(/no measurements/);
  });

  it('makes inputs: seeded random, zeros, loaded with trtexec\'s name:file spelling', () => {
    const meta = engineInputs(engine);
    expect(meta[0]).toMatchObject({ name: 'input', type: 'float32', shape: [BATCH, 3, 32, 32] });
    const a = benchInputs(meta, { seed: 5 }), b = benchInputs(meta, { seed: 5 });
    expect(Array.from(a.input.data as Float32Array)).toEqual(Array.from(b.input.data as Float32Array));
    expect((a.input.data as Float32Array).some((x) => x !== 0)).toBe(true);
    expect((benchInputs(meta, { zeros: true }).input.data as Float32Array).every((x) => x === 0)).toBe(true);
    const file = path.join(tmp, 'x.npy');
    const data = Float32Array.from({ length: BATCH * 3 * 32 * 32 }, (_, i) => i % 7);
    fs.writeFileSync(file, encodeNpy(new TensorData('float32', [BATCH, 3, 32, 32], data)));
    const loaded = benchInputs(meta, { loadInputs: [`input:${file}`], zeros: true });
    expect(Array.from(loaded.input.data as Float32Array)).toEqual(Array.from(data));
  });

  // How close the profiled pass comes to the un-profiled latency is a speed figure: bench/cpu/profile-overhead.ts
  // measures it. Here: the profile's own arithmetic, and that its layer times lie inside the runs that took them.
  it('profiles layers in a separate pass: every layer once per run, totals from the layer times', async () => {
    const ctx = engine.createContext();
    const traces = vi.spyOn(NativeLibrary.prototype, 'trace');
    const t0 = performance.now();
    const one = await profileLayers(engine, feeds, { iterations: 3, warmUpRuns: 0, context: ctx });
    const wall = performance.now() - t0;
    expect(one.count).toBe(3);
    // the engine's runs are replayed by now: the profile is the library's trace of them (start and stop per run)
    if (findCompiler()) expect(traces).toHaveBeenCalledTimes(6);
    traces.mockRestore();
    const sum = one.layers.reduce((a, l) => a + l.timeMs, 0);
    expect(one.totalAverageMs).toBeCloseTo(sum / one.count, 9);
    for (const l of one.layers) {
      // a view (Flatten) has no work of its own in a traced run: zero
      if (l.opType === 'FusedConv' || l.opType === 'FusedMatMul') expect(l.timeMs, l.name).toBeGreaterThan(0);
      else expect(l.timeMs, l.name).toBeGreaterThanOrEqual(0);
      expect(l.medianMs).toBeLessThanOrEqual(l.timeMs);
    }
    expect(one.totalMedianMs).toBeGreaterThan(0);
    expect(sum).toBeLessThanOrEqual(wall);
    const prof = await profileLayers(engine, feeds, { iterations: 4 });
    expect(prof.count).toBe(4);
    const p = prof;
    expect(p.layers.map((l) => l.name).sort()).toEqual(engine.header.layers.map((l) => l.name).sort());
    for (let i = 1; i < p.layers.length; i++) expect(p.layers[i].timeMs).toBeLessThanOrEqual(p.layers[i - 1].timeMs);
    expect(p.layers.reduce((a, l) => a + l.percentage, 0)).toBeCloseTo(100, 6);
    const conv = p.layers.find((l) => l.name === 'conv1')!;
    const info = engine.header.layers.find((l) => l.name === 'conv1')!;
    expect(conv).toMatchObject({ fused: ['Conv', 'bias', 'Relu'], tactic: info.tactic, precision: 'fp32' });
    expect(conv.averageMs).toBeCloseTo(conv.timeMs / p.count, 9);
    const text = formatLayerProfile(p);
    expect(text).toMatch(/Time\(ms\)\s+Avg\.\(ms\)\s+Median\(ms\)\s+Time\(%\)\s+Layer\s+Ops\s+Tactic/);
    expect(text).toMatch(new RegExp(`conv1\\s+Conv\\+bias\\+Relu\\s+${info.tactic.replace(/[^\w]/g, '.')}`));
    expect(text.trimEnd().split('\n').at(-1)).toMatch(/100\.0\s+Total$/);
    const json = layerProfileJson(p);
    expect(json[0]).toEqual({ count: p.count });
  });

  it('kiln bench CLI: --json, --export-times, --export-profile, --dump-layer-info', async () => {
    const times = path.join(tmp, 'times.json'), prof = path.join(tmp, 'profile.json'), plan = path.join(tmp, 'tiny.plan');
    const r = await exec(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'bench', '--onnx', 'examples/tiny-cnn.onnx', '--shapes', 'input:2x3x32x32',
      '--warm-up', '20', '--duration', '0.2', '--iterations', '3', '--percentile', '50,99', '--json', '--export-times', times,
      '--export-profile', prof, '--dump-profile', '--dump-layer-info', '--save-engine', plan], { env: { ...process.env, FORCE_COLOR: '0' } });
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ model: 'examples/tiny-cnn.onnx', backend: 'cpu', batch: 2, streams: 1 });
    expect(Object.keys(j)).toEqual(expect.arrayContaining(['throughput', 'latency', 'enqueue', 'h2d', 'compute', 'd2h', 'totalHostWalltimeS', 'totalComputeTimeS', 'warnings', 'notes', 'profile', 'layerInfo']));
    expectOrdered(j.latency, ['50', '99']);
    expect(j.layerInfo).toHaveLength(7);
    const t = JSON.parse(fs.readFileSync(times, 'utf8'));
    expect(t).toHaveLength(j.queries);
    expectTimesSchema(t);
    const p = JSON.parse(fs.readFileSync(prof, 'utf8'));
    expect(p[0]).toEqual({ count: expect.any(Number) });
    expect(p).toHaveLength(8);
    for (const l of p.slice(1)) expect(Object.keys(l)).toEqual(expect.arrayContaining(['name', 'timeMs', 'averageMs', 'medianMs', 'percentage', 'fused', 'tactic']));
    expect(j.profile).toHaveLength(8);
    // the saved plan benchmarks too
    const r2 = await exec(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'bench', '--load-engine', plan, '--zeros', '--warm-up', '0', '--duration', '0', '--iterations', '2', '--no-data-transfers'],
      { env: { ...process.env, FORCE_COLOR: '0' } });
    expect(r2.stdout).toMatch(/=== Performance summary ===/);
    expect(r2.stdout).not.toMatch(/H2D Latency/);
  });
});
