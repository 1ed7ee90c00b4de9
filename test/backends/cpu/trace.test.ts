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
    // every call evicted something (the packed weights, or the raw ones)
    for (const c of cold.mock.calls) expect((c[3] as unknown[]).length).toBeGreaterThan(0);
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
