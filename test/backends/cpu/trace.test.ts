// The library's run trace (kiln_trace: a clock stamp after every layer of a chain, for bench/cpu/trace.ts) and the
// builder's cold-weight timing (kiln_time_cold: a layer timed with its weights evicted from the caches, as a whole
// model's run meets them).
import { describe, it, expect, afterEach, vi } from 'vitest';
import { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { build } from '../../../src/build/builder.js';
import { parsePlan } from '../../../src/build/plan.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { KERNELS_BLOB, META_BLOB } from '../../../src/backends/cpu/build.js';
import { NativeLibrary } from '../../../src/backends/cpu/native.js';
import type { Model } from '../../../src/ir/graph.js';
import { profileLayers } from '../../../src/tools/bench-layers.js';

const hasCompiler = !!findCompiler();

afterEach(() => vi.restoreAllMocks());

/** Three MatMuls of [64, 256] x [256, 256] (then ReLU between): three layers of one chain. */
function mlp(): Model {
  const b = new GraphBuilder('mlp3');
  const r = seededRandom(9);
  let h = b.input('x', 'float32', ['n', 64, 256]);
  for (let i = 0; i < 3; i++) {
    h = b.op('MatMul', [h, b.initializer(`w${i}`, randomTensor(r, [256, 256], 0.06))], {}, `mm${i}`);
    if (i < 2) h = b.op('Relu', [h], {}, `relu${i}`);
  }
  b.output(h);
  return b.model(17);
}

const xOf = (seed: number) => new Tensor('float32', randomTensor(seededRandom(seed), [1, 64, 256], 1).data as Float32Array, [1, 64, 256]);

describe.skipIf(!hasCompiler)('tracing and cold-weight timing', () => {
  it('a traced replayed run stamps every layer once, in order, with a clock that only goes forward', async () => {
    const m = mlp();
    const plan = await build(m);
    const data = parsePlan(plan.bytes);
    const meta = JSON.parse(new TextDecoder().decode(data.blobs.get(META_BLOB)!)) as { layers: { node: string; fn: string }[] };
    for (const threads of [1, 2]) {
      const engine = await Engine.load(plan, { intraOpNumThreads: threads });
      const ctx = engine.createContext();
      for (let i = 0; i < 3; i++) await ctx.run({ x: xOf(i) });
      // the same file as the engine's: the same loaded library, so the same trace
      const lib = new NativeLibrary(data.blobs.get(KERNELS_BLOB)!);
      const buf = new BigInt64Array(256);
      lib.trace(buf);
      const h0 = process.hrtime.bigint();
      await ctx.run({ x: xOf(7) });
      const h1 = process.hrtime.bigint();
      const n = lib.trace(null);
      // pairs {function, clock}: the chain's start {0, t}, then one per layer; the pool's sleeps (-9 a worker, -8 the
      // caller) may come between
      const rec: [bigint, bigint][] = [];
      for (let i = 0; i < n; i += 2) if (buf[i] !== -9n && buf[i] !== -8n) rec.push([buf[i], buf[i + 1]]);
      expect(rec[0][0], `${threads} threads`).toBe(0n);
      expect(rec.slice(1).map(([f]) => f)).toEqual(meta.layers.map((l) => lib.symbol(l.fn)));
      expect(rec.length).toBe(meta.layers.length + 1);
      // the library's clock is the one process.hrtime reads
      expect(rec[0][1]).toBeGreaterThanOrEqual(h0);
      for (let i = 1; i < rec.length; i++) expect(rec[i][1]).toBeGreaterThanOrEqual(rec[i - 1][1]);
      expect(rec[rec.length - 1][1]).toBeLessThanOrEqual(h1);
      // tracing stopped: the next run writes nothing
      await ctx.run({ x: xOf(8) });
      expect(lib.trace(null)).toBe(0);
      engine.dispose();
    }
  }, 60_000);

  it('a profile of a replayed run: each call\'s time goes to its node, a pair\'s to its consumer, a Split\'s copies to the Split', async () => {
    // x [1, 30, 121, 120]: 3x3 depthwise + Clip -> 1x1 to 29 (a pair on AVX-512), Split in two along channels, a 1x1
    // on each half
    const r = seededRandom(5);
    const b = new GraphBuilder('dwpw-split');
    const X = [1, 30, 121, 120];
    const x = b.input('x', 'float32', X);
    const conv = (inp: string, cin: number, cout: number, name: string, k: number, group = 1) =>
      b.op('Conv', [inp, b.initializer(`${name}.w`, randomTensor(r, [cout, cin / group, k, k], 0.4)), b.initializer(`${name}.b`, randomTensor(r, [cout], 0.2))],
        { kernel_shape: [k, k], group, pads: [k >> 1, k >> 1, k >> 1, k >> 1] }, name);
    const lo = b.initializer('lo', new TensorData('float32', [], Float32Array.of(0)));
    const hi = b.initializer('hi', new TensorData('float32', [], Float32Array.of(6)));
    const d1 = b.op('Clip', [conv(x, 30, 30, 'd1', 3, 30), lo, hi], {}, 'c1');
    const p1 = conv(d1, 30, 29, 'p1', 1);
    const [s0, s1] = b.node('Split', [p1, b.initializer('sizes', new TensorData('int64', [2], BigInt64Array.of(15n, 14n)))], { axis: 1 }, { name: 'split', outputs: ['s0', 's1'] });
    b.output(conv(s0, 15, 8, 'q0', 1));
    b.output(conv(s1, 14, 8, 'q1', 1));
    const m = b.model(13);
    const engine = await Engine.load(await build(m, { shapes: { x: X } }), { intraOpNumThreads: 2 });
    const feeds = { x: new Tensor('float32', randomTensor(seededRandom(6), X, 1).data as Float32Array, X) };
    const traces = vi.spyOn(NativeLibrary.prototype, 'trace');
    const asked: string[] = [];
    const symbol = NativeLibrary.prototype.symbol;
    vi.spyOn(NativeLibrary.prototype, 'symbol').mockImplementation(function (this: NativeLibrary, name: string) {
      asked.push(name);
      return symbol.call(this, name);
    });
    const t0 = performance.now();
    const p = await profileLayers(engine, feeds, { iterations: 4 });
    const wall = performance.now() - t0;
    expect(traces).toHaveBeenCalledTimes(8);
    const ms = new Map(p.layers.map((l) => [l.name, l.timeMs]));
    // every plan layer is listed once
    expect([...ms.keys()].sort()).toEqual(engine.header.layers.map((l) => l.name).sort());
    for (const name of ['p1', 'q0', 'q1']) expect(ms.get(name), name).toBeGreaterThan(0);
    // where the two layers ran as one call (AVX-512, and the 1x1's tactic one the pair has), the depthwise layer is
    // the pair's producer and its time is in p1's; else it is a call of its own
    if (asked.some((a) => /_dwpw$/.test(a))) expect(ms.get('d1')).toBe(0);
    else expect(ms.get('d1')).toBeGreaterThan(0);
    expect(ms.get('split')).toBeGreaterThanOrEqual(0);
    expect(p.layers.reduce((a, l) => a + l.timeMs, 0)).toBeLessThan(wall);
    engine.dispose();
  }, 60_000);

  it('the builder times native layers with their weights evicted, which leaves the weights and results intact', async () => {
    const m = mlp();
    const before = [...m.graph.initializers].map(([k, v]) => [k, Float32Array.from(v.data as Float32Array)] as const);
    const cold = vi.spyOn(NativeLibrary.prototype, 'timeCold');
    const plan = await build(m);
    expect(cold).toHaveBeenCalled();
    for (const r of cold.mock.results) {
      const times = r.value as Float64Array;
      expect(times.length).toBeGreaterThan(0);
      for (const t of times) expect(t).toBeGreaterThan(0);
    }
    // at batch 1 the weights (256 KB a layer) are most of each call's traffic and are evicted (the packed copy and the
    // raw one); the same layers timed at the representative batch 16 stream 1 MB of activations and are timed warm
    const evicted = cold.mock.calls.map((c) => (c[3] as unknown[]).length);
    expect(evicted.filter((k) => k > 0).length).toBeGreaterThan(0);
    for (const c of cold.mock.calls) expect((c[3] as unknown[]).length, `batch ${c[2]}`).toBe(c[2] === 1 ? 2 : 0);
    for (const [k, v] of before) expect(m.graph.initializers.get(k)!.data).toEqual(v);
    const engine = await Engine.load(plan, { intraOpNumThreads: 1 });
    const x = xOf(3);
    const out = (await engine.createContext().run({ x }))[m.graph.outputs[0].name] as Tensor;
    const want = executeGraph(m.graph, new Map([['x', new TensorData('float32', x.dims, x.data as Float32Array)]]), { opsets: m.opsets }).get(m.graph.outputs[0].name) as TensorData;
    let d = 0;
    for (let i = 0; i < want.data.length; i++) d = Math.max(d, Math.abs((out.data as Float32Array)[i] - (want.data as Float32Array)[i]));
    expect(d).toBeLessThan(1e-3);
    engine.dispose();
  }, 60_000);
});
