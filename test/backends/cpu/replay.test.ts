// Replayed runs (src/backends/cpu/replay.ts): once a run of fully native layers has been recorded, later runs with
// the same shapes replay its chain programs with the feeds' and outputs' addresses patched in. Each replayed run
// must read its own feeds (wherever they lie), write fresh outputs that later runs leave alone, and match the
// reference executor; other shapes, concurrent runs and models with JavaScript layers go through the executor.
import { describe, it, expect, afterEach, vi } from 'vitest';
import type { Model } from '../../../src/ir/graph.js';
import { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { modelFeeds, worstDiff } from './feeds.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { Replay } from '../../../src/backends/cpu/replay.js';
import { tinyCnn, mobilenetV2, MOBILENET_SMALL, bertBase, BERT_SMALL } from '../../../bench/models/zoo.js';

const hasCompiler = !!findCompiler();

/** Feeds of this batch from seed `seed`; `at`: where in a larger array the data starts (a view, not a copy). */
const feedsFor = (m: Model, batch: number, seed: number, at = 0) => modelFeeds(m, { batch, seq: 16, seed, at });

/** Counts the replayed runs (each binds the recorded program to its feeds once). */
const countReplays = () => vi.spyOn(Replay.prototype, 'bind');

afterEach(() => {
  vi.restoreAllMocks();
  delete process.env.KILN_REPLAY;
});

describe.skipIf(!hasCompiler)('replayed runs on the CPU', () => {
  it('replays from the third run of a shape; every run reads its own feeds, and outputs stay the caller\'s', async () => {
    // BERT: token ids through the native Gather, the mask's Unsqueeze (a view of a feed) and Cast
    for (const [name, m] of [['tiny CNN', tinyCnn()], ['mobilenet-v2 (small)', mobilenetV2(MOBILENET_SMALL)], ['bert (small)', bertBase(BERT_SMALL)]] as const) {
      const shapes = Object.fromEntries(Object.entries(feedsFor(m, 2, 0)).map(([k, t]) => [k, [...t.dims]]));
      const engine = await Engine.load(await build(m, { shapes }), { intraOpNumThreads: 2 });
      const ctx = engine.createContext();
      const binds = countReplays();
      const runs: [Record<string, Tensor>, Record<string, unknown>][] = [];
      for (let i = 0; i < 6; i++) {
        const feeds = feedsFor(m, 2, 100 + i, i * 3); // new data at a new place every run
        const out = await ctx.run(feeds);
        expect(worstDiff(m, feeds, out), `${name}, run ${i}`).toBeLessThan(1e-3);
        runs.push([feeds, out]);
      }
      // run 0 goes through the executor, run 1 is recorded (its shapes repeat run 0's), runs 2-5 are replays
      expect(binds, name).toHaveBeenCalledTimes(4);
      // the outputs each replay handed out are its own: later replays wrote elsewhere
      for (const [i, [feeds, out]] of runs.entries()) expect(worstDiff(m, feeds, out), `${name}, run ${i} afterwards`).toBeLessThan(1e-3);
      binds.mockRestore();
      engine.dispose();
    }
  }, 120_000);

  it('a new batch size goes through the executor; a shape seen twice in a row is recorded in place of the last', async () => {
    const m = tinyCnn();
    const engine = await Engine.load(await build(m), { intraOpNumThreads: 2 });
    const ctx = engine.createContext();
    const binds = countReplays();
    const batches = [1, 1, 1, 3, 1, 3, 3, 3];
    for (const [i, b] of batches.entries()) {
      const feeds = feedsFor(m, b, 7 + i);
      expect(worstDiff(m, feeds, await ctx.run(feeds)), `run ${i}, batch ${b}`).toBeLessThan(1e-3);
    }
    // replays: run 2 (batch 1), run 4 (batch 1's recording still stands), runs 6-7 (batch 3, recorded at run 5)
    expect(binds).toHaveBeenCalledTimes(4);
    engine.dispose();
  }, 60_000);

  it('concurrent runs of one context each get their own outputs', async () => {
    const m = tinyCnn();
    const engine = await Engine.load(await build(m), { intraOpNumThreads: 2 });
    const ctx = engine.createContext();
    for (let i = 0; i < 2; i++) await ctx.run(feedsFor(m, 2, i));
    const binds = countReplays();
    const feeds = [0, 1, 2, 3].map((i) => feedsFor(m, 2, 50 + i, i));
    const outs = await Promise.all(feeds.map((f) => ctx.run(f)));
    outs.forEach((o, i) => expect(worstDiff(m, feeds[i], o), `run ${i}`).toBeLessThan(1e-3));
    // a replay this small runs synchronously to its end before the next run starts, so each may replay (replays
    // that overlap, on a worker thread: replay-run.test.ts)
    expect(binds.mock.calls.length).toBeGreaterThanOrEqual(1);
    expect(binds.mock.calls.length).toBeLessThanOrEqual(4);
    engine.dispose();
  }, 60_000);

  it('a model with a layer in JavaScript, and KILN_REPLAY=0, run through the executor every time', async () => {
    const b = new GraphBuilder('js-in-the-middle');
    const r = seededRandom(5);
    const x = b.input('x', 'float32', ['n', 4, 9, 9]);
    const c1 = b.op('Conv', [x, b.initializer('w1', randomTensor(r, [8, 4, 3, 3], 0.3))], { pads: [1, 1, 1, 1] });
    const cs = b.op('CumSum', [c1, b.initializer('axis', new TensorData('int64', [], BigInt64Array.of(3n)))]);
    b.output(b.op('Conv', [cs, b.initializer('w2', randomTensor(r, [4, 8, 3, 3], 0.3))], { pads: [1, 1, 1, 1] }));
    const withJs = b.model(17);
    for (const [m, env] of [[withJs, undefined], [tinyCnn(), '0']] as const) {
      if (env) process.env.KILN_REPLAY = env;
      const engine = await Engine.load(await build(m), { intraOpNumThreads: 2 });
      const ctx = engine.createContext();
      const binds = countReplays();
      for (let i = 0; i < 4; i++) {
        const feeds = feedsFor(m, 2, 30 + i);
        expect(worstDiff(m, feeds, await ctx.run(feeds)), `${m.graph.name}, run ${i}`).toBeLessThan(1e-3);
      }
      expect(binds, m.graph.name).not.toHaveBeenCalled();
      binds.mockRestore();
      engine.dispose();
    }
  }, 60_000);
});
