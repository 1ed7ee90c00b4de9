// A chain's program is recorded once and reused by later runs whose calls read and write the same buffers (see
// programFor in runner.ts): runs of one engine that keep, overwrite or replace their input arrays, and that change
// batch size, must each compute their own inputs, and a run's outputs must stay as they were after later runs.
import { describe, it, expect } from 'vitest';
import { build } from '../../../src/build/builder.js';
import { Engine } from '../../../src/runtime/engine.js';
import { Tensor } from '../../../src/runtime/tensor.js';
import { seededRandom } from '../../../src/ir/builder.js';
import { findCompiler } from '../../../src/backends/cpu/compiler.js';
import { mobilenetV2, MOBILENET_SMALL } from '../../../bench/models/zoo.js';

const IMAGE = 64;
const image = (seed: number, batch = 1) => {
  const r = seededRandom(seed);
  return new Tensor('float32', Float32Array.from({ length: batch * 3 * IMAGE * IMAGE }, () => r() * 2 - 1), [batch, 3, IMAGE, IMAGE]);
};

function worst(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let w = 0;
  for (let j = 0; j < a.length; j++) w = Math.max(w, Math.abs(a[j] - b[j]) / (1e-5 + Math.abs(b[j])));
  return w;
}

describe.skipIf(!findCompiler())('chain programs reused across runs', () => {
  it('runs that keep, overwrite in place or replace their inputs, at changing batch sizes, match fresh engines', async () => {
    const m = mobilenetV2({ ...MOBILENET_SMALL, image: IMAGE });
    const name = m.graph.inputs[0].name;
    const plan = await build(m, { profiles: [{ [name]: { min: [1, 3, IMAGE, IMAGE], opt: [1, 3, IMAGE, IMAGE], max: [4, 3, IMAGE, IMAGE] } }] });
    // each input's outputs from an engine that runs it alone (no program recorded before)
    const alone = async (x: Tensor) => {
      const e = await Engine.load(plan, { intraOpNumThreads: 1 });
      const out = await e.createContext().run({ [name]: x });
      e.dispose();
      return Object.values(out)[0] as Tensor;
    };
    const engine = await Engine.load(plan, { intraOpNumThreads: 1 });
    const ctx = engine.createContext();
    const kept = image(1);
    const steps: { x: () => Tensor; seed: number; batch: number }[] = [
      { x: () => kept, seed: 1, batch: 1 },
      { x: () => kept, seed: 1, batch: 1 },
      // the same array with new contents: the program is reused as is and must read them
      { x: () => ((kept.data as Float32Array).set(image(2).data as Float32Array), kept), seed: 2, batch: 1 },
      { x: () => image(3), seed: 3, batch: 1 },
      { x: () => image(4, 3), seed: 4, batch: 3 },
      { x: () => image(5), seed: 5, batch: 1 },
      { x: () => image(6, 3), seed: 6, batch: 3 },
    ];
    const got: { out: Float32Array; copy: Float32Array; seed: number; batch: number }[] = [];
    for (const s of steps) {
      const out = (Object.values(await ctx.run({ [name]: s.x() }))[0] as Tensor).data as Float32Array;
      got.push({ out, copy: out.slice(), seed: s.seed, batch: s.batch });
    }
    engine.dispose();
    for (const [i, g] of got.entries()) {
      const want = (await alone(image(g.seed, g.batch))).data as Float32Array;
      expect(worst(g.out, want), `run ${i}`).toBeLessThan(1e-5);
      // outputs are the caller's: later runs did not write into them
      expect(worst(g.out, g.copy), `run ${i} after later runs`).toBe(0);
    }
  }, 120_000);
});
