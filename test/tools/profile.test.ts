// `kiln profile` and the profiler: Chrome-trace output (valid Trace Event Format, one device span per layer, the
// user's ranges, host phases), and profiler.range costing nothing outside a capture.
import { describe, it, expect, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { profiler } from '../../src/index.js';
import { benchInputs, engineInputs } from '../../src/tools/bench.js';
import { checkTrace, toChromeTrace, traceInference, type ChromeTrace, type TraceEvent } from '../../src/tools/profile.js';
import { tinyCnn } from '../../bench/models/zoo.js';

const exec = promisify(execFile);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-profile-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const threadNames = (t: ChromeTrace) => new Map(t.traceEvents.filter((e) => e.name === 'thread_name').map((e) => [e.tid, (e.args as { name: string }).name]));
const onTrack = (t: ChromeTrace, name: string): TraceEvent[] => {
  const tid = [...threadNames(t)].find(([, n]) => n === name)?.[0];
  return t.traceEvents.filter((e) => e.ph === 'X' && e.tid === tid);
};

describe('profiler', () => {
  it('range only calls fn when no trace is captured', () => {
    expect(profiler.capturing).toBe(false);
    expect(profiler.range('x', () => 42)).toBe(42);
    expect(profiler.stop()).toEqual([]);
  });

  it('records sync and async ranges, also when they throw', async () => {
    const { result, spans } = await profiler.capture(async () => {
      profiler.range('sync', () => 1);
      await profiler.range('async', () => new Promise((r) => setTimeout(r, 5)));
      expect(() => profiler.range('throws', () => { throw new Error('boom'); })).toThrow('boom');
      return 'done';
    });
    expect(result).toBe('done');
    expect(spans.map((s) => s.name)).toEqual(['sync', 'async', 'throws']);
    expect(spans.every((s) => s.track === 'user' && s.durMs >= 0)).toBe(true);
    expect(spans[1].durMs).toBeGreaterThanOrEqual(4);
    expect(profiler.capturing).toBe(false);
    profiler.start();
    expect(() => profiler.start()).toThrow(/already being captured/);
    profiler.stop();
  });

  it('writes valid Trace Event Format', () => {
    const t = toChromeTrace([{ name: 'a', track: 'device', startMs: 10, durMs: 0.5, args: { k: 1 } }], 9, 'p');
    expect(checkTrace(JSON.parse(JSON.stringify(t)))).toEqual([]);
    expect(t.traceEvents.at(-1)).toMatchObject({ name: 'a', ph: 'X', ts: 1000, dur: 500, pid: 1, args: { k: 1 } });
    expect(checkTrace({})).toEqual(['no traceEvents array']);
    expect(checkTrace({ traceEvents: [{ name: 'x', ph: 'X', pid: 1, tid: 9, ts: -1, dur: 1 }] }).join('\n')).toMatch(/ts must be[\s\S]*tid 9 has no thread_name/);
  });
});

describe('traceInference', () => {
  it('records one device span per layer, the user range and the host phases', async () => {
    const engine = await Engine.load(await build(tinyCnn(), { shapes: { input: [2, 3, 32, 32] } }));
    const meta = engineInputs(engine);
    const trace = await traceInference(engine, benchInputs(meta), {
      warmUpRuns: 1,
      prepare: () => profiler.range('preprocess', () => benchInputs(meta, { seed: 9 })),
    });
    const t = JSON.parse(JSON.stringify(trace)) as ChromeTrace;
    expect(checkTrace(t)).toEqual([]);
    expect([...threadNames(t).values()].sort()).toEqual(['device', 'host', 'user ranges']);

    const layers = onTrack(t, 'device');
    expect(layers.map((e) => e.name).sort()).toEqual(engine.header.layers.map((l) => l.name).sort());
    const conv = layers.find((e) => e.name === 'conv1')!;
    const info = engine.header.layers.find((l) => l.name === 'conv1')!;
    expect(conv.args).toMatchObject({ opType: 'FusedConv', ops: ['Conv', 'bias', 'Relu'], inputs: ['float32[2x3x32x32]'], outputs: ['float32[2x16x32x32]'], precision: 'fp32', tactic: info.tactic });

    const user = onTrack(t, 'user ranges');
    expect(user.map((e) => e.name)).toEqual(['preprocess']);

    const host = onTrack(t, 'host');
    const byName = new Map(host.map((e) => [e.name, e]));
    for (const n of ['inference', 'enqueue / run', 'input conversion (H2D)', 'synchronization', 'output conversion (D2H)']) expect(byName.has(n)).toBe(true);
    const inf = byName.get('inference')!;
    const end = (e: TraceEvent) => e.ts! + e.dur!;
    // the user range comes first; every layer runs inside the inference
    expect(end(user[0])).toBeLessThanOrEqual(inf.ts! + 1e-3);
    for (const l of layers) {
      expect(l.ts!).toBeGreaterThanOrEqual(inf.ts!);
      expect(end(l)).toBeLessThanOrEqual(end(inf) + 1e-3);
    }
    expect(t.otherData).toMatchObject({ backend: 'cpu' });
    engine.dispose();
  });

  it('kiln profile writes a trace file', async () => {
    const out = path.join(tmp, 'trace.json');
    const r = await exec(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'profile', '--onnx', 'examples/tiny-cnn.onnx', '--output', out, '--warm-up-runs', '1'],
      { env: { ...process.env, FORCE_COLOR: '0' } });
    expect(r.stdout).toMatch(/Traced one inference of examples\/tiny-cnn.onnx on cpu: 7 layers/);
    const t = JSON.parse(fs.readFileSync(out, 'utf8')) as ChromeTrace;
    expect(checkTrace(t)).toEqual([]);
    expect(onTrack(t, 'device')).toHaveLength(7);
    expect(onTrack(t, 'user ranges').map((e) => e.name)).toEqual(['random inputs']);
  });
});
