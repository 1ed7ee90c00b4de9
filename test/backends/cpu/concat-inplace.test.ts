// Channel Concats written in place (schedule.ts concatsInPlace, runner.ts): the layers feeding a batch-1 Concat write
// straight into its output and the Concat copies nothing. Two SqueezeNet-like fire modules (a two-way and a three-way
// Concat, the second on a negative axis, odd sizes) match the reference at 1 and 2 threads, on the first runs and on
// replays; at batch 2 (a batch-generic plan) the Concats copy as before, and match too.
import { describe, it, expect, afterEach, vi } from 'vitest';
import { TensorData } from '../../../src/ir/tensor.js';
import { GraphBuilder, randomTensor, seededRandom } from '../../../src/ir/builder.js';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { executeGraph } from '../../../src/ops/execute.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { NativeLibrary } from '../../../src/backends/cpu/native.js';
import { concatsInPlace } from '../../../src/backends/cpu/schedule.js';
import { inferShapes } from '../../../src/passes/infer.js';
import type { Model } from '../../../src/ir/graph.js';

afterEach(() => vi.restoreAllMocks());

/** Squeeze (1x1) then expands (1x1, 3x3 pad 1, ...) concatenated over channels, twice, then a 1x1 over the result. */
function fires(batch: number | string = 'n'): Model {
  const r = seededRandom(21);
  const b = new GraphBuilder('fires');
  const conv = (x: string, ci: number, co: number, k: number, name: string) => b.op('Relu', [b.op('Conv', [x, b.initializer(`${name}.w`, randomTensor(r, [co, ci, k, k], 0.4)),
    b.initializer(`${name}.b`, randomTensor(r, [co], 0.2))], { pads: [k >> 1, k >> 1, k >> 1, k >> 1] }, name)]);
  const x = b.input('x', 'float32', [batch, 16, 13, 17]);
  const s1 = conv(x, 16, 8, 1, 'sq1');
  const cat1 = b.op('Concat', [conv(s1, 8, 12, 1, 'e1a'), conv(s1, 8, 20, 3, 'e1b')], { axis: 1 }, 'cat1');
  const s2 = conv(cat1, 32, 9, 1, 'sq2');
  const cat2 = b.op('Concat', [conv(s2, 9, 7, 1, 'e2a'), conv(s2, 9, 11, 3, 'e2b'), conv(s2, 9, 5, 1, 'e2c')], { axis: -3 }, 'cat2');
  b.output(b.op('Conv', [cat2, b.initializer('head.w', randomTensor(r, [6, 23, 1, 1], 0.3))], {}, 'head'));
  return b.model(17);
}

const feedsAt = (batch: number, seed: number) => ({ x: new Tensor('float32', randomTensor(seededRandom(seed), [batch, 16, 13, 17], 1).data as Float32Array, [batch, 16, 13, 17]) });

function worst(m: Model, feeds: { x: Tensor }, out: Record<string, unknown>): number {
  const ref = executeGraph(m.graph, new Map([['x', new TensorData('float32', feeds.x.dims, feeds.x.data as Float32Array)]]), { opsets: m.opsets });
  const name = m.graph.outputs[0].name, want = (ref.get(name) as TensorData).data as Float32Array, got = (out[name] as Tensor).data as Float32Array;
  expect(got.length).toBe(want.length);
  let d = 0;
  for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]) / (1e-3 + Math.abs(want[i])));
  return d;
}

describe.skipIf(!findCompiler())('Concats written in place by their producers', () => {
  it('both fire modules qualify: each input a block of the output, in input order; none at batch 2', () => {
    const partsAt = (batch: number) => {
      const m = fires(batch);
      inferShapes(m.graph, m.opsets);
      // one chain of every node, each "native" with its inferred output dims
      const meta = new Map(m.graph.nodes.map((n) => [n, { outDims: (m.graph.valueInfo.get(n.outputs[0]) as { shape: number[] }).shape }]));
      const parts = concatsInPlace(m.graph.nodes, new Map([[m.graph.nodes[0], m.graph.nodes]]), meta, new Set(m.graph.outputs.map((o) => o.name)));
      const cat = (name: string) => m.graph.nodes.find((n) => n.name === name)!;
      return (name: string) => cat(name).inputs.map((x) => {
        const p = parts.get(x);
        return p && [p.concat.name, p.offset, p.len, p.total];
      });
    };
    const one = partsAt(1), hw = 13 * 17;
    expect(one('cat1')).toEqual([['cat1', 0, 12 * hw, 32 * hw], ['cat1', 12 * hw, 20 * hw, 32 * hw]]);
    expect(one('cat2')).toEqual([['cat2', 0, 7 * hw, 23 * hw], ['cat2', 7 * hw, 11 * hw, 23 * hw], ['cat2', 18 * hw, 5 * hw, 23 * hw]]);
    // at batch 2 the dims before the axis are not all 1: each input is two blocks apart
    const two = partsAt(2);
    expect([...two('cat1'), ...two('cat2')]).toEqual([undefined, undefined, undefined, undefined, undefined]);
  });

  for (const threads of [1, 2]) {
    it(`${threads} thread(s): outputs match the reference, the Concats make no calls at batch 1 and copy at batch 2`, async () => {
      const m = fires();
      const plan = await build(m, { profiles: [{ x: { min: [1, 16, 13, 17], opt: [1, 16, 13, 17], max: [2, 16, 13, 17] } }] });
      const engine = await Engine.load(plan, { intraOpNumThreads: threads });
      const ctx = engine.createContext();
      // every chain program's record count, seen where the runner hands it over (runs and replays alike)
      let records = 0;
      const runChain = NativeLibrary.prototype.runChain;
      vi.spyOn(NativeLibrary.prototype, 'runChain').mockImplementation(function (this: NativeLibrary, prog, n, sync) {
        records += n;
        return runChain.call(this, prog, n, sync);
      });
      const counts = new Map<number, number[]>();
      // batch 1, 2, 1: the first runs are prepared layer by layer, the later ones replayed
      for (const [i, batch] of [1, 1, 1, 1, 2, 2, 2, 1, 1].entries()) {
        records = 0;
        const feeds = feedsAt(batch, 30 + i);
        expect(worst(m, feeds, await ctx.run(feeds)), `run ${i}, batch ${batch}`).toBeLessThan(1e-3);
        counts.set(batch, [...(counts.get(batch) ?? []), records]);
      }
      engine.dispose();
      const [one, two] = [counts.get(1)!, counts.get(2)!];
      expect(new Set(one).size, `records per batch-1 run: ${one}`).toBe(1);
      expect(new Set(two).size, `records per batch-2 run: ${two}`).toBe(1);
      // the two Concats' copies, at batch 2 only
      expect(two[0] - one[0]).toBe(2);
    }, 120_000);
  }
});
