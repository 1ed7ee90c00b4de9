// The replayed run's lean path (ExecutionContext.run -> runner -> one kiln_run_replay call): a replay the size of a
// MobileNetV2 run still leaves the event loop free while it computes, concurrent runs stay apart, bad ids met in a
// replayed run still raise their layer's error (synchronous and worker-thread replays alike), and feeds that differ
// from the remembered ones in name, type or shape still get the full checks' errors.
import { describe, it, expect, afterEach, vi } from 'vitest';
import { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { Replay } from '../../../src/backends/cpu/replay.js';
import { InferenceSession } from '../../../src/runtime/session.js';
import { serializeOnnx } from '../../../src/onnx/writer.js';
import type { Model } from '../../../src/ir/graph.js';

const hasCompiler = !!findCompiler();

afterEach(() => vi.restoreAllMocks());

/** An MLP of `layers` [rows, 512] x [512, 512] MatMuls: 64 rows and 4 layers are 67 M multiply-adds, above the
 * runner's synchronous-call limit (so the replay runs on a worker thread). */
function mlp(rows: number, layers: number): Model {
  const b = new GraphBuilder(`mlp${rows}x${layers}`);
  const r = seededRandom(4);
  let h = b.input('x', 'float32', ['n', rows, 512]);
  for (let i = 0; i < layers; i++) h = b.op('MatMul', [h, b.initializer(`w${i}`, randomTensor(r, [512, 512], 0.04))], {}, `mm${i}`);
  b.output(h);
  return b.model(17);
}

/** An embedding (a native Gather of run-time ids) then a MatMul of `width`: the ids can be out of range. */
function embed(width: number): Model {
  const b = new GraphBuilder(`embed${width}`);
  const r = seededRandom(12);
  const ids = b.input('ids', 'int64', ['n', 64]);
  const emb = b.op('Gather', [b.initializer('table', randomTensor(r, [50, width], 1)), ids], {}, 'emb');
  b.output(b.op('MatMul', [emb, b.initializer('w', randomTensor(r, [width, width], 0.1))], {}, 'mm'));
  return b.model(17);
}

const xOf = (seed: number, rows = 64) => new Tensor('float32', randomTensor(seededRandom(seed), [1, rows, 512], 1).data as Float32Array, [1, rows, 512]);
const worst = (m: Model, feeds: Record<string, Tensor>, out: Record<string, unknown>) => {
  const ref = executeGraph(m.graph, new Map(Object.entries(feeds).map(([k, t]) => [k, new TensorData(t.type, t.dims, t.data as Float32Array)])), { opsets: m.opsets });
  const name = m.graph.outputs[0].name, want = ref.get(name) as TensorData, got = (out[name] as Tensor).data as Float32Array;
  let d = 0;
  for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i] - (want.data as Float32Array)[i]));
  return d;
};

describe.skipIf(!hasCompiler)('the replayed run path', () => {
  it('a replay of a MobileNetV2-size run leaves the event loop free while it computes', async () => {
    const m = mlp(128, 4);
    const engine = await Engine.load(await build(m), { intraOpNumThreads: 1 });
    const ctx = engine.createContext();
    for (let i = 0; i < 3; i++) await ctx.run({ x: xOf(i, 128) });
    const binds = vi.spyOn(Replay.prototype, 'bind');
    for (let i = 0; i < 3; i++) {
      let ticks = 0, done = false;
      const tick = () => {
        ticks++;
        if (!done) setImmediate(tick);
      };
      setImmediate(tick);
      const feeds = { x: xOf(10 + i, 128) };
      const out = await ctx.run(feeds);
      const seen = ticks;
      done = true;
      // a run that held the thread resolves (and this await resumes, a microtask) before the first tick: 0
      expect(seen, `run ${i}`).toBeGreaterThan(0);
      expect(worst(m, feeds, out)).toBeLessThan(1e-3);
    }
    expect(binds).toHaveBeenCalledTimes(3);
    engine.dispose();
  }, 60_000);

  it('runOnCallingThread: the same replay runs on the calling thread (done before ctx.run returns), with the same outputs', async () => {
    const m = mlp(128, 4);
    const plan = await build(m);
    const base = await Engine.load(plan, { intraOpNumThreads: 2 });
    const caller = await Engine.load(plan, { intraOpNumThreads: 2, runOnCallingThread: true });
    const [cb, cc] = [base.createContext(), caller.createContext()];
    for (let i = 0; i < 3; i++) {
      await cb.run({ x: xOf(i, 128) });
      await cc.run({ x: xOf(i, 128) });
    }
    const binds = vi.spyOn(Replay.prototype, 'bind');
    for (let i = 0; i < 3; i++) {
      const feeds = { x: xOf(30 + i, 128) };
      const state = (p: Promise<unknown>) => Promise.race([p.then(() => 'settled'), Promise.resolve().then(() => 'pending')]);
      // settled as ctx.run returns on the calling thread; the default engine's run is still on its worker thread
      const p = cc.run(feeds);
      expect(await state(p), `run ${i}`).toBe('settled');
      const q = cb.run(feeds);
      expect(await state(q), `run ${i}`).toBe('pending');
      const [a, b] = [await p, await q];
      expect((Object.values(a)[0] as Tensor).data).toEqual((Object.values(b)[0] as Tensor).data);
      expect(worst(m, feeds, a)).toBeLessThan(1e-3);
    }
    expect(binds).toHaveBeenCalledTimes(6);
    base.dispose();
    caller.dispose();
  }, 60_000);

  it('concurrent runs of a replay on a worker thread: one replays at a time, each gets its own outputs', async () => {
    const m = mlp(64, 4);
    const engine = await Engine.load(await build(m), { intraOpNumThreads: 2 });
    const ctx = engine.createContext();
    for (let i = 0; i < 3; i++) await ctx.run({ x: xOf(i) });
    const binds = vi.spyOn(Replay.prototype, 'bind');
    const feeds = [0, 1, 2, 3].map((i) => ({ x: xOf(20 + i) }));
    const outs = await Promise.all(feeds.map((f) => ctx.run(f)));
    outs.forEach((o, i) => expect(worst(m, feeds[i], o), `run ${i}`).toBeLessThan(1e-3));
    expect(binds).toHaveBeenCalledTimes(1);
    engine.dispose();
  }, 60_000);

  it('an id out of range met in a replayed run is its layer\'s error, synchronous or on a worker thread; the next run is right', async () => {
    // width 64: 0.3 M multiply-adds (a synchronous replay); 512: 16.8 M (a worker thread's)
    for (const width of [64, 512]) {
      const m = embed(width);
      const engine = await Engine.load(await build(m), { intraOpNumThreads: 2 });
      const ctx = engine.createContext();
      const idsOf = (seed: number, bad = false) => ({ ids: new Tensor('int64', BigInt64Array.from({ length: 64 }, (_, k) => BigInt(bad && k === 5 ? 50 : (k * 7 + seed) % 50)), [1, 64]) });
      for (let i = 0; i < 3; i++) await ctx.run(idsOf(i));
      const binds = vi.spyOn(Replay.prototype, 'bind');
      await expect(ctx.run(idsOf(3, true)), `width ${width}`).rejects.toThrow(/Gather 'emb': an index in 'ids' is out of range for axis 0 of \[50, \d+\] \(valid: -50 to 49\)/);
      const feeds = idsOf(4);
      const out = await ctx.run(feeds);
      expect(binds, `width ${width}: both runs replayed`).toHaveBeenCalledTimes(2);
      const ref = executeGraph(m.graph, new Map([['ids', new TensorData('int64', [1, 64], feeds.ids.data)]]), { opsets: m.opsets });
      const want = (ref.get(m.graph.outputs[0].name) as TensorData).data as Float32Array, got = (out[m.graph.outputs[0].name] as Tensor).data as Float32Array;
      let d = 0;
      for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]));
      expect(d, `width ${width}`).toBeLessThan(1e-3);
      binds.mockRestore();
      engine.dispose();
    }
  }, 60_000);

  it('feeds unlike the last checked ones get the full checks\' errors, and the remembered ones still run', async () => {
    const m = mlp(8, 1);
    const engine = await Engine.load(await build(m), { intraOpNumThreads: 1 });
    const ctx = engine.createContext();
    const x = new Tensor('float32', new Float32Array(8 * 512).fill(0.5), [1, 8, 512]);
    for (let i = 0; i < 3; i++) await ctx.run({ x });
    await expect(ctx.run({ y: x })).rejects.toThrow(/input 'y' is not an input of this plan/);
    await expect(ctx.run({})).rejects.toThrow(/input 'x' is missing/);
    await expect(ctx.run({ x, y: x })).rejects.toThrow(/input 'y' is not an input of this plan/);
    await expect(ctx.run({ x: new Tensor('int32', new Int32Array(8 * 512), [1, 8, 512]) })).rejects.toThrow(/input 'x' has type int32, but the plan expects float32/);
    await expect(ctx.run({ x: new Tensor('float32', new Float32Array(8 * 511), [1, 8, 511]) })).rejects.toThrow(/outside the plan's shape profile/);
    const out = await ctx.run({ x });
    expect(worst(m, { x }, out)).toBeLessThan(1e-3);
    engine.dispose();
    // the same through InferenceSession, whose own checks remember the last feeds too
    const session = await InferenceSession.create(serializeOnnx(m), { intraOpNumThreads: 1 });
    for (let i = 0; i < 3; i++) expect(worst(m, { x }, await session.run({ x }))).toBeLessThan(1e-3);
    await expect(session.run({ y: x })).rejects.toThrow(/input 'y' is not an input of this model/);
    await expect(session.run({ x: new Tensor('int32', new Int32Array(8 * 512), [1, 8, 512]) })).rejects.toThrow(/input 'x' has type int32, but the model expects float32/);
    await expect(session.run({ x: new Tensor('float32', new Float32Array(8 * 511), [1, 8, 511]) })).rejects.toThrow(/dimension 2 must be 512/);
    expect(worst(m, { x }, await session.run({ x }))).toBeLessThan(1e-3);
    await session.release();
    await expect(session.run({ x })).rejects.toThrow(/was released/);
  }, 60_000);
});
